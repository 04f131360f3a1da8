"""The station config: every section a provisioned station.toml carries loads; mistakes are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import StationConfigError, load_config

PROVISIONED = """
[station]
county = "king"
station = "desk-1"
profile = "replay"

[mqtt]
host = "broker.county.example"
port = 8883

[keys]
tls_key = "/var/lib/booking-station/keys/tls.key"
signing_key = "/var/lib/booking-station/keys/signing.key"

[sync]
max_in_flight = 8
protocol = "3.1.1"

[vision]
threads = 2

[quality]
profile = "nist-sap40"

[store]
floor_bytes = 1073741824

[ui]
port = 8081
"""


def test_a_provisioned_station_file_loads(tmp_path: Path) -> None:
    path = tmp_path / "station.toml"
    path.write_text(PROVISIONED)
    config = load_config(path)
    assert (config.station.county, config.station.station) == ("king", "desk-1")
    assert config.mqtt.port == 8883 and config.sync.max_in_flight == 8 and config.sync.protocol == "3.1.1"
    assert config.vision.threads == 2 and config.quality.profile == "nist-sap40"
    assert config.store.floor_bytes == 1 << 30 and config.ui.port == 8081
    assert config.source == path


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[visoin]\nthreads = 2\n", "unknown section [visoin]"),
        ("[vision]\nthread = 2\n", "unknown key(s) in [vision]: thread"),
        ('[sync]\nprotocol = "4"\n', "[sync]"),
        ("[sync]\nmax_in_flight = 0\n", "max_in_flight"),
        ("[vision\n", "cannot be read"),
    ],
)
def test_mistakes_are_named(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "station.toml"
    path.write_text(text)
    with pytest.raises(StationConfigError) as err:
        load_config(path)
    assert message in str(err.value) and str(path) in str(err.value)


def test_missing_named_file_is_an_error_and_no_default_file_means_defaults(tmp_path: Path) -> None:
    with pytest.raises(StationConfigError, match="not found"):
        load_config(tmp_path / "nope.toml")
    assert load_config(None).vision.threads >= 1


def test_data_dir_precedence_flag_env_file_default(tmp_path: Path) -> None:
    from appliance.config import DEFAULT_DATA_DIR, resolve_data_dir

    toml = tmp_path / "station.toml"
    toml.write_text('[station]\ndata_dir = "/srv/from-file"\n')
    configured = load_config(toml).station.data_dir
    env = {"BOOKING_STATION_DATA_DIR": "/srv/from-env"}
    assert resolve_data_dir("/srv/from-flag", configured, env) == Path("/srv/from-flag")
    assert resolve_data_dir(None, configured, env) == Path("/srv/from-env")
    assert resolve_data_dir(None, configured, {}) == Path("/srv/from-file")
    assert resolve_data_dir(None, "", {}) == DEFAULT_DATA_DIR == Path("/var/lib/booking-station")


def test_data_dir_must_be_a_string(tmp_path: Path) -> None:
    toml = tmp_path / "station.toml"
    toml.write_text("[station]\ndata_dir = 5\n")
    with pytest.raises(StationConfigError, match="data_dir"):
        load_config(toml)


def test_every_command_takes_data_dir_from_the_station_toml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from appliance.cli import main

    monkeypatch.delenv("BOOKING_STATION_DATA_DIR", raising=False)
    from_file, from_env, from_flag = tmp_path / "file", tmp_path / "env", tmp_path / "flag"
    for folder in (from_file, from_env, from_flag):
        folder.mkdir()
    toml = tmp_path / "station.toml"
    toml.write_text(f'[station]\ndata_dir = "{from_file}"\n')

    def named(args: list[str], env: dict[str, str] | None = None) -> str:
        result = CliRunner(env=env).invoke(main, ["--config", str(toml), *args])
        assert result.exit_code == 2, result.output  # no station in these folders: the error names the folder
        return result.output

    env = {"BOOKING_STATION_DATA_DIR": str(from_env)}
    for command in (["queue"], ["audit", "verify"], ["status"]):
        assert str(from_file / "station.db") in named(command)
        assert str(from_env / "station.db") in named(command, env)
        assert str(from_flag / "station.db") in named([*command, "--data-dir", str(from_flag)], env)
    for folder in (from_file, from_env, from_flag):
        assert list(folder.iterdir()) == [], "a reading command created nothing"
