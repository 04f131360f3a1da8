"""Station configuration: one typed model, built from layers, read the same way by every command.

Config files over flags: a station reads `/etc/booking-station/station.toml` (or `--config FILE`);
command-line flags only override what a single run needs. The layers, lowest first:

1. the defaults declared on the section models below (the only place a default or a type is written);
2. the device profile named by ``[station] device_profile`` (``firmware/profiles``): camera, threads,
   delegate and its options, embedding variant;
3. station.toml itself;
4. the settings the county changed remotely (a signed ``config`` command, kept by the sync agent);
5. command-line flags.

Every layer goes through the same pydantic models (:class:`StationConfig`, one sub-model per section,
``[sync]`` from ``sync.station.config``), so an unknown section or key and a value of the wrong type or
range are refused the same way wherever they come from, in one line naming the file, section and key:
a typo in a county's file is caught at start-up instead of being silently ignored.

Renamed keys are still read for one release: ``[station] profile`` (now ``device_profile``: the hardware
profile) and ``[quality] profile`` / ``profile_dir`` (now ``capture_standard`` / ``standards_dir``: the
nist-sap30, nist-sap40 or icao capture standard).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError

from appliance.config_section import ConfigSection, describe
from sync.protocol.record import OVERRIDE_REASON
from sync.station.config import SyncConfig

if TYPE_CHECKING:
    from appliance.vision.bundle import Bundle
    from appliance.vision.runtime import RuntimeOptions

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_CONFIG = Path("/etc/booking-station/station.toml")
DEFAULT_DATA_DIR = Path("/var/lib/booking-station")
ENV_DATA_DIR = "BOOKING_STATION_DATA_DIR"
DEFAULT_CAPTURE_STANDARD = "nist-sap30"


class StationConfigError(ValueError):
    """The configuration file is unreadable or has a wrong key or value; the message says which."""


def _renamed(new: str, old: str, default: Any) -> Any:
    """A key read under its new name and, for one release, its old one."""
    return Field(default, validation_alias=AliasChoices(new, old))


class StationIdentity(ConfigSection):
    """[station]: written by `booking-station provision`."""

    county: str = ""  # county slug (topic and certificate namespace)
    station: str = ""  # station slug = certificate CN = MQTT identity
    device_profile: str = _renamed("device_profile", "profile", "")  # firmware/profiles, e.g. rpi5-camera-module-3
    agency_ori: str = ""  # default agency ORI for bookings made at this desk
    enroll_url: str = ""  # the enrolment server's /enroll URL (provision records it; certificate rotation uses it)
    data_dir: str = ""  # station data directory (station.db, keys/, ...); "" = /var/lib/booking-station


class MqttConfig(ConfigSection):
    """[mqtt]: the county broker (mutual TLS)."""

    host: str = ""
    port: int = Field(8883, ge=1, le=65535)


class KeysConfig(ConfigSection):
    """[keys]: where provisioning put the station's identity (private keys never leave the device)."""

    tls_key: str = ""
    tls_cert: str = ""
    ca_cert: str = ""
    signing_key: str = ""
    county_command_key: str = ""


class VisionConfig(ConfigSection):
    """[vision]: the model bundle and how the interpreter runs it (the device profile sets the last four)."""

    bundle: str | None = None  # model bundle folder; default: <prefix>/share/booking-station/models
    threads: int = Field(1, ge=1, le=64)  # interpreter threads (XNNPACK)
    delegate: str | None = None  # external delegate library path (e.g. GPU delegate on Jetson)
    delegate_options: dict[str, str] = Field(default_factory=dict)  # passed to the delegate as it is
    # Which of the bundle's embedding models makes templates; None: the one the bundle's manifest names.
    embedding: Literal["float32", "float16"] | None = None
    detector_min_score_short: float = Field(0.5, ge=0, le=1)
    detector_min_score_full: float = Field(0.6, ge=0, le=1)
    # Largest picture (width x height) read from a file, refused from its header before decoding; the
    # device profile may lower it (appliance.imageio).
    max_pixels: int = Field(40_000_000, ge=1)
    # The template averages the chips of a few boxes around the face (nearer dlib's own template; about
    # 4x the embedding time per capture, never per preview frame). A slow device's profile may turn it off.
    template_jitter: bool = True

    def runtime_options(self) -> RuntimeOptions:
        """How every model of the bundle is run on this device (threads, delegate and its options)."""
        from appliance.vision.runtime import RuntimeOptions

        return RuntimeOptions(threads=self.threads, delegate=self.delegate,
                              delegate_options=dict(self.delegate_options) or None)

    def choose_embedding(self, bundle: Bundle) -> Bundle:
        """``bundle`` with this device's embedding variant (unchanged when ``embedding`` is not set)."""
        return bundle.with_embedding(self.embedding) if self.embedding else bundle

    def load_bundle(self) -> Bundle:
        """The verified model bundle (``bundle`` folder, else the installed one) with this device's embedding."""
        from appliance.vision.bundle import Bundle

        return self.choose_embedding(Bundle.load(self.bundle))


class CameraConfig(ConfigSection):
    """[camera]: which camera backend, and its options (the backend itself rejects unknown options)."""

    # Backend spec: picamera2 | opencv:0 | opencv:/dev/videoN | gstreamer[:pipeline] | replay:PATH
    source: str = "picamera2"
    # Backend options (preview_size, width, height, fps, loop, controls, ...).
    options: dict[str, Any] = Field(default_factory=dict)


class CaptureConfig(ConfigSection):
    """[capture]: auto-capture timing and the officer's override reason."""

    stable_seconds: float = Field(0.5, ge=0)  # all live gates must pass this long before auto-capture fires
    max_gap: float = Field(0.3, gt=0)  # a longer pause between frames restarts the stable window
    # A profile view is auto-captured only after the officer has asked the subject to turn and the turned
    # pose has held this long (the countdown the officer and subject see).
    profile_hold_seconds: float = Field(2.0, ge=0)
    # The officer's limit: a policy at most the record's (sync.protocol.record).
    override_reason_max: int = Field(200, ge=1, le=OVERRIDE_REASON.max_len)


class QualityConfig(ConfigSection):
    """[quality]: the capture standard (gates, thresholds, output geometry, SAP level)."""

    capture_standard: str = _renamed("capture_standard", "profile", DEFAULT_CAPTURE_STANDARD)
    # County folder of capture standards that override or add to the shipped ones.
    standards_dir: str | None = _renamed("standards_dir", "profile_dir", None)


class StoreConfig(ConfigSection):
    """[store]: disk floor, backlog limit and retention."""

    floor_bytes: int = Field(512 * 1024 * 1024, ge=0)  # below this much free disk, new bookings are refused
    max_pending: int | None = Field(None, ge=0)  # refuse new bookings when this many are undelivered (0: all)
    delivered_image_days: float = Field(30, ge=0)  # purge images of delivered records after this many days
    audit_keep_days: int = Field(400, ge=1)  # CJIS: at least 365 (the housekeeping settings refuse less)


UI_MAX_BODY_BYTES = 64 * 1024
"""The officer UI's default request body limit (``[ui] max_body_bytes``)."""


class UIConfig(ConfigSection):
    """[ui]: the officer interface (see appliance/ui/settings.py; CJIS limits can be tightened, never relaxed)."""

    host: str = "127.0.0.1"  # the kiosk browser runs on the device; bind wider only behind TLS
    port: int = Field(8080, ge=1, le=65535)
    idle_lock_minutes: float = Field(30.0, gt=0)  # at most 30
    agency_ori: str = ""  # default agency on the start form
    jms_token_file: str = ""  # file holding the jail management system's API token ("" = no JMS access)
    allowed_hosts: list[str] = Field(default_factory=list)  # extra Host names accepted (DNS-rebinding guard)
    cookie_secure: bool = False  # true when served over https behind a TLS terminator
    offline_after_minutes: float = Field(15.0, gt=0)
    queue_alarm_pending: int = Field(25, ge=1)
    queue_alarm_age_minutes: float = Field(60.0, gt=0)
    # Largest request body, answered 413 above it before it is read (appliance/ui/body_limit.py). The JSON
    # API's biggest real body is ~2 kB and nothing uploads files: 4 KiB keeps every route working, 1 MiB
    # is far more than any needs.
    max_body_bytes: int = Field(UI_MAX_BODY_BYTES, ge=4 * 1024, le=1024 * 1024)


SECTIONS: dict[str, type[ConfigSection]] = {
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

#: Which section each remotely changeable setting belongs to (the allow-list is in sync.station.remote).
REMOTE_SECTIONS = {"delivered_image_days": "store", "audit_keep_days": "store", "status_interval": "sync"}


class StationConfig(BaseModel):
    """The whole station configuration: one sub-model per station.toml section, plus the file it came from."""

    model_config = ConfigDict(extra="forbid", strict=True)

    station: StationIdentity = Field(default_factory=StationIdentity)
    mqtt: MqttConfig = Field(default_factory=MqttConfig)
    keys: KeysConfig = Field(default_factory=KeysConfig)
    vision: VisionConfig = Field(default_factory=VisionConfig)
    camera: CameraConfig = Field(default_factory=CameraConfig)
    capture: CaptureConfig = Field(default_factory=CaptureConfig)
    store: StoreConfig = Field(default_factory=StoreConfig)
    quality: QualityConfig = Field(default_factory=QualityConfig)
    ui: UIConfig = Field(default_factory=UIConfig)
    sync: SyncConfig = Field(default_factory=SyncConfig)  # [sync]: see sync/station/config.py
    source: Path | None = Field(None, strict=False)

    def tables(self) -> dict[str, dict[str, Any]]:
        """The sections as station.toml tables (new key names), e.g. to layer more settings on top."""
        return {name: getattr(self, name).model_dump() for name in SECTIONS}

    def layered(self, layer: Mapping[str, Mapping[str, Any]], where: str) -> StationConfig:
        """A copy with ``layer`` (station.toml-shaped tables: remote settings, command-line flags) on top,
        checked by the same models; ``where`` names the layer in an error (``--capture-standard``, ...)."""
        if not layer:
            return self
        merged = {name: dict(values) for name, values in self.tables().items()}
        for section, values in layer.items():
            if section not in SECTIONS:
                raise StationConfigError(f"{where}: unknown section [{section}] (known: {', '.join(SECTIONS)})")
            merged[section].update(values)
        try:
            config = StationConfig.model_validate(merged)
        except ValidationError as exc:
            raise StationConfigError(f"{where}: {describe(exc, sections=SECTIONS)}") from None
        config.source = self.source
        return config

    def with_remote(self, settings: Mapping[str, Any]) -> StationConfig:
        """The county's remote settings (``sync.station.remote.load_remote_settings``) as the layer above the
        file: each key goes to its section (:data:`REMOTE_SECTIONS`); keys this release does not know are
        ignored (the agent that stored them checked them against its own allow-list)."""
        layer: dict[str, dict[str, Any]] = {}
        for key, value in settings.items():
            section = REMOTE_SECTIONS.get(key)
            if section is not None:
                layer.setdefault(section, {})[key] = value
        return self.layered(layer, "remote settings from the county")


def read_document(path: Path | str) -> dict[str, Any]:
    """station.toml parsed, or StationConfigError naming the file (missing, unreadable, not TOML)."""
    path = Path(path)
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise StationConfigError(f"config file not found: {path}") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise StationConfigError(f"config file {path} cannot be read: {exc}") from exc


def load_config(path: Path | str | None = None) -> StationConfig:
    """Read the station config; a missing default file means all defaults, a missing named file is an error."""
    if path is None:
        if not DEFAULT_CONFIG.is_file():
            return StationConfig()
        path = DEFAULT_CONFIG
    return build_config(read_document(path), path)


def profile_layer(name: str) -> dict[str, dict]:
    """The device profile's settings as station.toml tables: the defaults the file's own keys override.

    ``[camera] source`` and ``options`` (the options go with their source: a file that names another source
    does not inherit them), ``[vision] threads``, ``delegate``, ``delegate_options`` and ``embedding``. A
    profile without a camera source (replay) leaves the camera to the file or the command line. Raises
    StationConfigError.
    """
    from firmware.profiles import BACKEND_SOURCE_OPTION, DeviceProfileError, load_profile

    try:
        profile = load_profile(name)
    except DeviceProfileError as exc:
        raise StationConfigError(f"[station] device_profile: {exc}") from exc
    vision: dict[str, Any] = {"threads": profile.vision.threads, "embedding": profile.vision.embedding}
    if profile.vision.max_pixels is not None:
        vision["max_pixels"] = profile.vision.max_pixels
    if profile.vision.template_jitter is not None:
        vision["template_jitter"] = profile.vision.template_jitter
    if profile.vision.delegate:
        vision["delegate"] = profile.vision.delegate
    if profile.vision.delegate_options:
        vision["delegate_options"] = {str(k): str(v) for k, v in profile.vision.delegate_options.items()}
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


def _device_profile_name(data: Mapping[str, Any]) -> str | None:
    station = data.get("station")
    if not isinstance(station, dict):
        return None
    name = station.get("device_profile", station.get("profile"))
    return name if isinstance(name, str) and name else None


def build_config(data: Mapping[str, Any], path: Path | str) -> StationConfig:
    """Built-in defaults < the ``[station] device_profile`` device profile < the file's tables (``data``)."""
    unknown = [name for name in data if name not in SECTIONS]
    if unknown:
        raise StationConfigError(f"{path}: unknown section [{unknown[0]}] (known: {', '.join(SECTIONS)})")
    for section, values in data.items():
        if not isinstance(values, dict):
            raise StationConfigError(f"{path}: [{section}] must be a table")
    name = _device_profile_name(data)
    try:
        layer = profile_layer(name) if name else {}
    except StationConfigError as exc:
        raise StationConfigError(f"{path}: {exc}") from exc
    tables = {section: _layered(section, dict(data.get(section, {})), layer)
              for section in SECTIONS if section in data or section in layer}
    try:
        config = StationConfig.model_validate(tables)
    except ValidationError as exc:
        raise StationConfigError(f"{path}: {describe(exc, sections=SECTIONS)}") from None
    config.source = Path(path)
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
