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


def test_the_device_profile_is_the_layer_under_the_station_toml(tmp_path: Path) -> None:
    toml = tmp_path / "station.toml"
    toml.write_text('[station]\nprofile = "rpi5-camera-module-3"\n')
    config = load_config(toml)
    assert config.camera.source == "picamera2:0"  # the profile's camera, not the built-in "picamera2"
    assert config.camera.options["still_size"] == [4608, 2592] and config.camera.options["preview_size"] == [640, 360]
    assert config.vision.threads == 3

    toml.write_text('[station]\nprofile = "rpi5-camera-module-3"\n[vision]\ndelegate = "/usr/lib/x.so"\n'
                    '[camera]\noptions = { preview_size = [320, 180] }\n')
    config = load_config(toml)
    assert config.camera.source == "picamera2:0" and config.camera.options["preview_size"] == [320, 180]
    assert "controls" in config.camera.options and config.vision.threads == 3
    assert config.vision.delegate == "/usr/lib/x.so"

    toml.write_text('[station]\nprofile = "rpi5-camera-module-3"\n[camera]\nsource = "opencv:1"\n'
                    '[vision]\nthreads = 1\n')
    config = load_config(toml)
    assert config.camera.source == "opencv:1" and config.camera.options == {}, "options go with their source"
    assert config.vision.threads == 1

    assert load_config(_write(tmp_path, "")).camera.source == "picamera2", "no profile: the built-in default"


def _write(folder: Path, text: str) -> Path:
    path = folder / "plain.toml"
    path.write_text(text)
    return path


def test_an_unknown_device_profile_is_a_config_error(tmp_path: Path) -> None:
    toml = tmp_path / "station.toml"
    toml.write_text('[station]\nprofile = "no-such-board"\n')
    with pytest.raises(StationConfigError, match="no-such-board"):
        load_config(toml)
