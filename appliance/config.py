"""Station configuration: one TOML file, with defaults for everything.

Config files over flags: a station reads `/etc/booking-station/station.toml` (or `--config FILE`);
command-line flags only override what a single run needs. Unknown keys are an error, so a typo in
a county's file is caught at start-up instead of being silently ignored.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path

from sync.protocol.record import OVERRIDE_REASON
from sync.station.config import SyncConfig

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_CONFIG = Path("/etc/booking-station/station.toml")
DEFAULT_DATA_DIR = Path("/var/lib/booking-station")
ENV_DATA_DIR = "BOOKING_STATION_DATA_DIR"


class StationConfigError(ValueError):
    """The configuration file is unreadable or has a wrong key or value; the message says which."""


@dataclass
class StationIdentity:
    """[station]: written by `booking-station provision`."""

    county: str = ""  # county slug (topic and certificate namespace)
    station: str = ""  # station slug = certificate CN = MQTT identity
    profile: str = ""  # device profile (firmware/profiles), e.g. rpi5-camera-module-3
    agency_ori: str = ""  # default agency ORI for bookings made at this desk
    enroll_url: str = ""  # the enrolment server's /enroll URL (provision records it; certificate rotation uses it)
    data_dir: str = ""  # station data directory (station.db, keys/, ...); "" = /var/lib/booking-station

    def __post_init__(self) -> None:
        if not isinstance(self.data_dir, str):
            raise ValueError(f"data_dir = {self.data_dir!r} must be a string (a folder path)")


@dataclass
class MqttConfig:
    """[mqtt]: the county broker (mutual TLS)."""

    host: str = ""
    port: int = 8883


@dataclass
class KeysConfig:
    """[keys]: where provisioning put the station's identity (private keys never leave the device)."""

    tls_key: str = ""
    tls_cert: str = ""
    ca_cert: str = ""
    signing_key: str = ""
    county_command_key: str = ""


@dataclass
class VisionConfig:
    bundle: str | None = None  # model bundle folder; default: <prefix>/share/booking-station/models
    threads: int = 1  # interpreter threads (XNNPACK)
    delegate: str | None = None  # external delegate library path (e.g. GPU delegate on Jetson)
    detector_min_score_short: float = 0.5
    detector_min_score_full: float = 0.6
    # Largest picture (width x height) read from a file, refused from its header before decoding; the
    # device profile may lower it (appliance.imageio).
    max_pixels: int = 40_000_000

    def __post_init__(self) -> None:
        if type(self.max_pixels) is not int or self.max_pixels < 1:
            raise ValueError(f"max_pixels = {self.max_pixels!r} must be a positive whole number of pixels")


@dataclass
class CameraConfig:
    # Backend spec: picamera2 | opencv:0 | opencv:/dev/videoN | gstreamer[:pipeline] | replay:PATH
    source: str = "picamera2"
    # Backend options (preview_size, width, height, fps, loop, controls, ...); the backend rejects unknown keys.
    options: dict = field(default_factory=dict)


@dataclass
class CaptureConfig:
    stable_seconds: float = 0.5  # all live gates must pass this long before auto-capture fires
    # A profile view is auto-captured only after the officer has asked the subject to turn and the turned
    # pose has held this long (the countdown the officer and subject see).
    profile_hold_seconds: float = 2.0
    max_gap: float = 0.3  # a longer pause between frames restarts the stable window
    override_reason_max: int = 200  # the officer's limit: a policy at most the record's (sync.protocol.record)

    def __post_init__(self) -> None:
        limit = self.override_reason_max
        if type(limit) is not int or not 0 < limit <= OVERRIDE_REASON.max_len:
            raise ValueError(f"override_reason_max = {limit!r} must be 1..{OVERRIDE_REASON.max_len}, the record's "
                             f"limit for an override reason")


@dataclass
class QualityConfig:
    profile: str = "nist-sap30"  # capture profile: gates, thresholds, output geometry, SAP level
    profile_dir: str | None = None  # county folder of profiles that override or add to the shipped ones


@dataclass
class StoreConfig:
    floor_bytes: int = 512 * 1024 * 1024  # below this much free disk, new bookings are refused (alarm raised)
    max_pending: int | None = None  # refuse new bookings when this many are undelivered (None: no limit)
    delivered_image_days: float = 30  # purge images of delivered records after this many days
    audit_keep_days: int = 400  # CJIS: at least 365


@dataclass
class UIConfig:
    """[ui]: the officer interface (see appliance/ui/settings.py; CJIS limits can be tightened, never relaxed)."""

    host: str = "127.0.0.1"  # the kiosk browser runs on the device; bind wider only behind TLS
    port: int = 8080
    idle_lock_minutes: float = 30.0  # at most 30
    agency_ori: str = ""  # default agency on the start form
    jms_token_file: str = ""  # file holding the jail management system's API token ("" = no JMS access)
    allowed_hosts: list = field(default_factory=list)  # extra Host names accepted (DNS-rebinding guard)
    cookie_secure: bool = False  # true when served over https behind a TLS terminator
    offline_after_minutes: float = 15.0
    queue_alarm_pending: int = 25
    queue_alarm_age_minutes: float = 60.0


@dataclass
class StationConfig:
    station: StationIdentity = field(default_factory=StationIdentity)
    mqtt: MqttConfig = field(default_factory=MqttConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    vision: VisionConfig = field(default_factory=VisionConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    capture: CaptureConfig = field(default_factory=CaptureConfig)
    store: StoreConfig = field(default_factory=StoreConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    ui: UIConfig = field(default_factory=UIConfig)
    sync: SyncConfig = field(default_factory=SyncConfig)  # [sync]: see sync/station/config.py
    source: Path | None = None


SECTIONS = {
    "station": StationIdentity,
    "mqtt": MqttConfig,
    "keys": KeysConfig,
    "vision": VisionConfig,
    "camera": CameraConfig,
    "capture": CaptureConfig,
    "quality": QualityConfig,
    "store": StoreConfig,
    "ui": UIConfig,
    "sync": SyncConfig,
}


def load_config(path: Path | str | None = None) -> StationConfig:
    """Read the station config; a missing default file means all defaults, a missing named file is an error."""
    if path is None:
        if not DEFAULT_CONFIG.is_file():
            return StationConfig()
        path = DEFAULT_CONFIG
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise StationConfigError(f"config file not found: {path}") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise StationConfigError(f"config file {path} cannot be read: {exc}") from exc
    return build_config(data, path)


def profile_layer(name: str) -> dict[str, dict]:
    """The device profile's settings as station.toml tables: the defaults the file's own keys override.

    ``[camera] source`` and ``options`` (the options go with their source: a file that names another source
    does not inherit them), ``[vision] threads`` and ``delegate``. A profile without a camera source
    (replay) leaves the camera to the file or the command line. Raises StationConfigError.
    """
    from firmware.profiles import BACKEND_SOURCE_OPTION, DeviceProfileError, load_profile

    try:
        profile = load_profile(name)
    except DeviceProfileError as exc:
        raise StationConfigError(f"[station] profile: {exc}") from exc
    vision: dict = {"threads": profile.vision.threads}
    if profile.vision.max_pixels is not None:
        vision["max_pixels"] = profile.vision.max_pixels
    if profile.vision.delegate:
        vision["delegate"] = profile.vision.delegate
    layer: dict[str, dict] = {"vision": vision}
    if profile.camera.source is not None:
        options = profile.camera_spec()
        backend = options.pop("backend")
        layer["camera"] = {"source": f"{backend}:{options.pop(BACKEND_SOURCE_OPTION[backend])}", "options": options}
    return layer


def _layered(section: str, values: dict, layer: dict[str, dict]) -> dict:
    below = dict(layer.get(section, {}))
    if section == "camera" and "source" in values and values["source"] != below.get("source"):
        below.pop("options", None)  # options belong to the profile's source
    if section == "camera" and isinstance(values.get("options"), dict) and isinstance(below.get("options"), dict):
        values = {**values, "options": {**below["options"], **values["options"]}}
    return {**below, **values}


def build_config(data: dict, path: Path | str, *, skip: frozenset[str] = frozenset()) -> StationConfig:
    """Built-in defaults < the ``[station] profile`` device profile < the file's tables (``data``)."""
    station = data.get("station")
    name = station.get("profile") if isinstance(station, dict) else None
    try:
        layer = profile_layer(name) if isinstance(name, str) and name else {}
    except StationConfigError as exc:
        raise StationConfigError(f"{path}: {exc}") from exc
    config = StationConfig(source=Path(path))
    for section, cls in SECTIONS.items():
        if section in layer and section not in data:
            setattr(config, section, cls(**layer[section]))
    for section, values in data.items():
        if section in skip and section not in SECTIONS:
            continue
        cls = SECTIONS.get(section)
        if cls is None:
            raise StationConfigError(f"{path}: unknown section [{section}] (known: {', '.join(SECTIONS)})")
        if not isinstance(values, dict):
            raise StationConfigError(f"{path}: [{section}] must be a table")
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise StationConfigError(f"{path}: unknown key(s) in [{section}]: {', '.join(sorted(unknown))}")
        try:
            setattr(config, section, cls(**_layered(section, values, layer)))
        except (TypeError, ValueError) as exc:  # wrong types, out-of-range values (checked by the section)
            raise StationConfigError(f"{path}: [{section}] {exc}") from exc
    return config

def resolve_data_dir(flag: Path | str | None = None, configured: Path | str | None = None,
                     environ: Mapping[str, str] | None = None) -> Path:
    """The station data directory, the same way for every command.

    ``--data-dir`` flag > ``$BOOKING_STATION_DATA_DIR`` > station.toml ``[station] data_dir`` > the default
    (/var/lib/booking-station). ``configured`` is the station.toml value (``config.station.data_dir``).
    """
    if flag is not None and str(flag) != "":
        return Path(flag)
    env = (os.environ if environ is None else environ).get(ENV_DATA_DIR)
    if env:
        return Path(env)
    return Path(configured) if configured else DEFAULT_DATA_DIR
