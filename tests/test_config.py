"""The station config: every section a provisioned station.toml carries loads; mistakes are named."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.config import StationConfigError, load_config

PROVISIONED = """
[station]
county = "king"
station = "desk-1"
device_profile = "replay"

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
capture_standard = "nist-sap40"

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
    assert config.vision.threads == 2 and config.quality.capture_standard == "nist-sap40"
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


def test_the_old_key_names_are_still_read(tmp_path: Path) -> None:
    """[station] profile and [quality] profile / profile_dir are the old names of device_profile,
    capture_standard and standards_dir; they are read for one release, and naming both is refused."""
    old = load_config(_write(tmp_path, '[station]\nprofile = "replay"\n'
                                       '[quality]\nprofile = "icao"\nprofile_dir = "/srv/standards"\n'))
    new = load_config(_write(tmp_path, '[station]\ndevice_profile = "replay"\n'
                                       '[quality]\ncapture_standard = "icao"\nstandards_dir = "/srv/standards"\n'))
    assert old.tables() == new.tables()
    assert (new.station.device_profile, new.quality.capture_standard, new.quality.standards_dir) == (
        "replay", "icao", "/srv/standards")
    assert load_config(_write(tmp_path, "")).quality.capture_standard == "nist-sap30"
    with pytest.raises(StationConfigError, match=r"unknown key\(s\) in \[station\]: profile"):
        load_config(_write(tmp_path, '[station]\nprofile = "replay"\ndevice_profile = "replay"\n'))


@pytest.mark.parametrize(
    ("text", "line"),
    [
        ('[vision]\nthreads = "2"\n', "[vision] threads = '2': must be a whole number"),
        ("[vision]\nthreads = 0\n", "[vision] threads = 0: must be at least 1"),
        ('[vision]\nembedding = "int8"\n', "[vision] embedding = 'int8': must be 'float32' or 'float16'"),
        ("[mqtt]\nport = true\n", "[mqtt] port = True: must be a whole number"),
        ("[ui]\ncookie_secure = 1\n", "[ui] cookie_secure = 1: must be true or false"),
        ('[ui]\nallowed_hosts = "desk-1"\n', "[ui] allowed_hosts = 'desk-1': must be a list"),
        ("[store]\ndelivered_image_days = -1\n", "[store] delivered_image_days = -1: must be at least 0"),
        ("[capture]\noverride_reason_max = 100000\n", "[capture] override_reason_max = 100000: must be at most"),
        ("[ui]\nmax_body_bytes = 1024\n", "[ui] max_body_bytes = 1024: must be at least 4096"),
        ("[ui]\nmax_body_bytes = 2000000\n", "[ui] max_body_bytes = 2000000: must be at most 1048576"),
        ("camera = 3\n", "[camera] must be a table"),
    ],
)
def test_a_wrong_value_is_one_line_naming_file_section_and_key(tmp_path: Path, text: str, line: str) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(StationConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert message.startswith(f"{path}: ") and line in message and "\n" not in message


def test_the_device_profile_gives_the_embedding_variant_and_delegate_options(tmp_path: Path) -> None:
    from firmware.profiles import PROFILE_DIR

    board = tmp_path / "board-with-npu.toml"
    board.write_text((PROFILE_DIR / "replay.toml").read_text().replace(
        'embedding = "float32"', 'embedding = "float16"\ndelegate = "/usr/lib/libnpu.so"\n'
                                 'delegate_options = { cache_dir = "/var/cache/npu" }'))
    config = load_config(_write(tmp_path, f'[station]\ndevice_profile = "{board}"\n'))
    assert config.vision.embedding == "float16" and config.vision.delegate == "/usr/lib/libnpu.so"
    assert config.vision.delegate_options == {"cache_dir": "/var/cache/npu"}
    options = config.vision.runtime_options()
    assert (options.delegate, options.delegate_options) == ("/usr/lib/libnpu.so", {"cache_dir": "/var/cache/npu"})

    config = load_config(_write(tmp_path, f'[station]\ndevice_profile = "{board}"\n[vision]\nembedding = "float32"\n'))
    assert config.vision.embedding == "float32", "station.toml over the device profile"
    assert load_config(_write(tmp_path, "")).vision.embedding is None, "no profile: the bundle's own choice"


def test_the_embedding_key_chooses_the_bundles_model(bundle) -> None:
    from appliance.config import VisionConfig

    chosen = VisionConfig(embedding="float16").choose_embedding(bundle)
    assert chosen.embedding_entry.role == "embedding_float16" and chosen.embedding_path.is_file()
    assert VisionConfig().choose_embedding(bundle) is bundle
    assert VisionConfig(embedding="float32").choose_embedding(bundle).embedding_entry.role == "embedding_float32"


def test_remote_settings_are_the_layer_over_the_file(tmp_path: Path) -> None:
    config = load_config(_write(tmp_path, "[store]\ndelivered_image_days = 30\naudit_keep_days = 400\n"
                                          "[sync]\nstatus_interval = 60\n"))
    layered = config.with_remote({"delivered_image_days": 7.5, "audit_keep_days": 730, "status_interval": 20.0,
                                  "from_a_newer_release": 1})
    assert (layered.store.delivered_image_days, layered.store.audit_keep_days, layered.sync.status_interval) == (
        7.5, 730, 20.0)
    assert layered.source == config.source and config.store.audit_keep_days == 400, "the file layer is unchanged"
    with pytest.raises(StationConfigError, match=r"remote settings from the county: \[store\] audit_keep_days"):
        config.with_remote({"audit_keep_days": "many"})
    flags = config.layered({"quality": {"capture_standard": "icao"}}, "--capture-standard")
    assert flags.quality.capture_standard == "icao" and flags.store.delivered_image_days == 30
    with pytest.raises(StationConfigError, match=r"--threads: \[vision\] threads = 0"):
        config.layered({"vision": {"threads": 0}}, "--threads")


def test_the_sync_agent_reads_the_file_through_the_same_model(tmp_path: Path) -> None:
    """A station.toml the other commands refuse, the agent refuses too, with the same line."""
    from sync.station.config import SyncConfigError, load_sync_config

    path = _write(tmp_path, '[station]\ncounty = "king"\nstation = "st-01"\n[mqtt]\nhost = "h"\n'
                            '[vision]\nthread = 2\n')
    with pytest.raises(StationConfigError) as station_err:
        load_config(path)
    with pytest.raises(SyncConfigError) as sync_err:
        load_sync_config(path, tmp_path)
    assert str(sync_err.value) == str(station_err.value)


def test_every_remotely_changeable_setting_has_its_section() -> None:
    from appliance.config import REMOTE_SECTIONS, SECTIONS
    from sync.station.remote import ALLOWED_SETTINGS

    assert set(REMOTE_SECTIONS) == set(ALLOWED_SETTINGS)
    for key, section in REMOTE_SECTIONS.items():
        assert key in SECTIONS[section].model_fields, f"{key} is not a key of [{section}]"


def test_command_line_flags_are_the_top_layer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from appliance.cli_support import quality_flags, with_flags

    config = load_config(_write(tmp_path, '[quality]\ncapture_standard = "icao"\nstandards_dir = "/srv/county"\n'))
    assert with_flags(config, quality_flags(None, None)) is config, "no flag given: the file's values"
    flagged = with_flags(config, quality_flags("nist-sap40", None))
    assert (flagged.quality.capture_standard, flagged.quality.standards_dir) == ("nist-sap40", "/srv/county")
    assert with_flags(config, quality_flags(None, tmp_path)).quality.standards_dir == str(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        with_flags(config, {"vision": {"threads": 0}})
    assert exit_.value.code == 2
    assert "command line: [vision] threads = 0: must be at least 1" in capsys.readouterr().err


def test_the_readme_example_is_a_valid_station_toml(tmp_path: Path) -> None:
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Configuration", 1)[1]
    example = section.split("```toml\n", 1)[1].split("```", 1)[0]
    config = load_config(_write(tmp_path, example))
    assert config.station.device_profile == "rpi5-camera-module-3" and config.quality.capture_standard == "nist-sap30"
