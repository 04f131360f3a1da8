"""Device profiles: what differs between a Pi 5 with a Camera Module 3, a Pi 4 with a USB webcam, a Jetson
with a USB or CSI camera, and the replay source used by the demo, the tests and CI.

A profile is one TOML file in this folder (or anywhere, by path) with three tables::

    [profile]            description, hardware            (what a person reads when choosing)
    [camera]             backend, source, resolution, preview_size, fps
    [camera.controls]    picamera2 only: autofocus, and exposure / white balance auto or locked
    [vision]             embedding (float32|float16), threads, delegate, delegate_options, max_pixels,
                         template_jitter

Profiles are data, so county IT can add one for new hardware without a code change, and a typo must
fail loudly: every unknown table or key is an error naming the known ones, and every value is checked
(type, range, allowed words) when the profile is loaded, not when the camera first opens at a booking
desk. :meth:`DeviceProfile.camera_spec` turns the camera table into the spec
``appliance.camera.create_camera`` takes; this module never imports the appliance (it is also read by
provisioning, which runs before any camera stack is installed).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROFILE_DIR = Path(__file__).resolve().parent
EMBEDDING_VARIANTS = ("float32", "float16")

#: Camera backend -> the option its spec string's argument fills (mirrors appliance.camera.base.BACKENDS).
BACKEND_SOURCE_OPTION = {"picamera2": "camera", "opencv": "device", "gstreamer": "pipeline", "replay": "path"}

SOURCE_HINT = {"picamera2": "camera number, e.g. \"0\"", "opencv": "device index or path, e.g. \"0\"",
               "gstreamer": "a pipeline ending in appsink", "replay": "a folder, image or video"}

AUTOFOCUS_MODES = ("continuous", "auto", "manual")
#: "auto": libcamera adjusts all the time. "locked": fixed values from the profile (AeEnable/AwbEnable off),
#: as the picamera2 backend applies them to preview and still modes alike, so brightness and colour cannot
#: drift between the frontal and profile shots of one booking or between the live gates and the still.
LOCK_POLICIES = ("auto", "locked")


class DeviceProfileError(ValueError):
    """A profile that cannot be found or is invalid; the message names the file, the key and the fix."""


@dataclass(frozen=True)
class CameraControls:
    """picamera2 (libcamera) controls. Only for the picamera2 backend."""

    autofocus: str = "continuous"
    lens_position: float | None = None  # dioptres (1 / distance in metres); manual focus only
    exposure: str = "auto"
    exposure_time_us: int | None = None  # locked exposure only
    analogue_gain: float | None = None  # locked exposure only
    white_balance: str = "auto"
    colour_gains: tuple[float, float] | None = None  # (red, blue); locked white balance only

    def libcamera_controls(self, fps: float | None = None) -> dict[str, Any]:
        """The libcamera controls for ``appliance.camera.picamera2`` (names as libcamera spells them)."""
        controls: dict[str, Any] = {"AfMode": {"manual": 0, "auto": 1, "continuous": 2}[self.autofocus]}
        if self.lens_position is not None:
            controls["LensPosition"] = self.lens_position
        if fps is not None:  # picamera2 sets the frame rate through the frame duration, in microseconds
            frame_us = round(1_000_000 / fps)
            controls["FrameDurationLimits"] = [frame_us, frame_us]
        if self.exposure == "locked":
            controls.update(AeEnable=False, ExposureTime=self.exposure_time_us, AnalogueGain=self.analogue_gain)
        else:
            controls["AeEnable"] = True
        if self.white_balance == "locked":
            controls.update(AwbEnable=False, ColourGains=list(self.colour_gains or ()))
        else:
            controls["AwbEnable"] = True
        return controls


@dataclass(frozen=True)
class CameraSettings:
    backend: str
    source: str | None = None  # the backend's main argument; None: given at run time (replay)
    resolution: tuple[int, int] | None = None  # capture (still) size; None: the source decides
    preview_size: tuple[int, int] = (640, 480)  # box the live-analysis frames are fitted into
    fps: float = 30.0
    loop: bool | None = None  # replay only
    controls: CameraControls | None = None


@dataclass(frozen=True)
class VisionSettings:
    embedding: str = "float32"
    threads: int = 1
    delegate: str | None = None  # path of an external TFLite delegate library
    delegate_options: Mapping[str, str] = field(default_factory=dict)
    max_pixels: int | None = None  # largest picture read from a file (None: the station default, 40 MP)
    template_jitter: bool | None = None  # average chips of boxes around the face (None: the station default, on)


@dataclass(frozen=True)
class DeviceProfile:
    name: str
    description: str
    hardware: str
    camera: CameraSettings
    vision: VisionSettings
    path: Path

    def camera_spec(self, source: str | None = None) -> dict[str, Any]:
        """The spec ``appliance.camera.create_camera`` takes, in each backend's own option names.

        ``source`` overrides the profile's (a replay folder, another /dev/video node). Resolution becomes
        width/height for OpenCV and still_size for picamera2; an explicit GStreamer pipeline carries its
        size and rate in its caps, so nothing is added to it.
        """
        cam = self.camera
        chosen = source if source is not None else cam.source
        if chosen is None:
            raise DeviceProfileError(f"profile {self.name!r} names no camera source; give one "
                                     f"(for replay: a folder of images, an image or a video file)")
        spec: dict[str, Any] = {"backend": cam.backend, BACKEND_SOURCE_OPTION[cam.backend]: chosen,
                                "preview_size": list(cam.preview_size)}
        if cam.backend == "opencv":
            if cam.resolution is not None:
                spec["width"], spec["height"] = cam.resolution
            spec["fps"] = cam.fps
        elif cam.backend == "picamera2":
            if cam.resolution is not None:
                spec["still_size"] = list(cam.resolution)
            spec["controls"] = (cam.controls or CameraControls()).libcamera_controls(cam.fps)
        elif cam.backend == "replay":
            spec["fps"] = cam.fps
            if cam.loop is not None:
                spec["loop"] = cam.loop
        return spec


# --- validation helpers -----------------------------------------------------------------------------


class _Table:
    """Reads one TOML table, checking every key once; `done()` rejects what was not read."""

    def __init__(self, where: str, data: object, required: bool = True) -> None:
        if data is None and not required:
            data = {}
        if not isinstance(data, dict):
            raise DeviceProfileError(f"{where} must be a table")
        self.where = where
        self.data = data
        self.known: list[str] = []

    def get(self, key: str, default: Any = None, *, required: bool = False) -> Any:
        self.known.append(key)
        if key not in self.data:
            if required:
                raise DeviceProfileError(f"{self.where}: missing key {key!r}")
            return default
        return self.data[key]

    def text(self, key: str, default: str | None = None, *, required: bool = False,
             choices: tuple[str, ...] | None = None) -> str | None:
        value = self.get(key, default, required=required)
        if value is None:
            return None
        if not isinstance(value, str) or not value.strip():
            raise DeviceProfileError(f"{self.where}: {key} must be a non-empty string, got {value!r}")
        if choices is not None and value not in choices:
            raise DeviceProfileError(f"{self.where}: {key} = {value!r} is not one of {', '.join(choices)}")
        return value

    def number(self, key: str, default: float | None, *, minimum: float, maximum: float,
               integer: bool = False) -> Any:
        value = self.get(key, default)
        if value is None:
            return None
        ok_type = isinstance(value, int) if integer else isinstance(value, (int, float))
        if isinstance(value, bool) or not ok_type or not (minimum <= value <= maximum):
            kind = "an integer" if integer else "a number"
            raise DeviceProfileError(
                f"{self.where}: {key} must be {kind} from {minimum:g} to {maximum:g}, got {value!r}")
        return value

    def size(self, key: str, default: tuple[int, int] | None) -> tuple[int, int] | None:
        value = self.get(key, default)
        if value is None:
            return None
        if (isinstance(value, (list, tuple)) and len(value) == 2
                and all(isinstance(v, int) and not isinstance(v, bool) and 16 <= v <= 16384 for v in value)):
            return int(value[0]), int(value[1])
        raise DeviceProfileError(f"{self.where}: {key} must be [width, height] in pixels (16-16384), got {value!r}")

    def done(self) -> None:
        unknown = sorted(set(self.data) - set(self.known))
        if unknown:
            raise DeviceProfileError(f"{self.where}: unknown key(s) {', '.join(unknown)} "
                                     f"(known: {', '.join(self.known)})")


def _controls(where: str, data: object) -> CameraControls:
    t = _Table(where, data)
    controls = CameraControls(
        autofocus=t.text("autofocus", "continuous", choices=AUTOFOCUS_MODES),  # type: ignore[arg-type]
        lens_position=t.number("lens_position", None, minimum=0.0, maximum=32.0),
        exposure=t.text("exposure", "auto", choices=LOCK_POLICIES),  # type: ignore[arg-type]
        exposure_time_us=t.number("exposure_time_us", None, minimum=100, maximum=1_000_000, integer=True),
        analogue_gain=t.number("analogue_gain", None, minimum=1.0, maximum=64.0),
        white_balance=t.text("white_balance", "auto", choices=LOCK_POLICIES),  # type: ignore[arg-type]
        colour_gains=_gains(where, t.get("colour_gains")),
    )
    t.done()
    if controls.autofocus == "manual" and controls.lens_position is None:
        raise DeviceProfileError(f"{where}: autofocus = 'manual' needs lens_position (dioptres)")
    if controls.autofocus != "manual" and controls.lens_position is not None:
        raise DeviceProfileError(f"{where}: lens_position is only used with autofocus = 'manual'")
    fixed_exposure = controls.exposure_time_us is not None or controls.analogue_gain is not None
    if controls.exposure == "locked" and (controls.exposure_time_us is None or controls.analogue_gain is None):
        raise DeviceProfileError(f"{where}: exposure = 'locked' needs exposure_time_us and analogue_gain")
    if controls.exposure != "locked" and fixed_exposure:
        raise DeviceProfileError(
            f"{where}: exposure_time_us and analogue_gain are only used with exposure = 'locked'")
    if (controls.white_balance == "locked") != (controls.colour_gains is not None):
        raise DeviceProfileError(
            f"{where}: colour_gains is required with, and only used with, white_balance = 'locked'")
    return controls


def _gains(where: str, value: object) -> tuple[float, float] | None:
    if value is None:
        return None
    if (isinstance(value, list) and len(value) == 2
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) and 0 < v <= 32 for v in value)):
        return float(value[0]), float(value[1])
    raise DeviceProfileError(f"{where}: colour_gains must be [red, blue] gains (0-32), got {value!r}")


def _camera(where: str, data: object) -> CameraSettings:
    t = _Table(where, data)
    backend = t.text("backend", required=True, choices=tuple(BACKEND_SOURCE_OPTION))
    assert backend is not None
    source = t.text("source")
    resolution = t.size("resolution", None)
    preview = t.size("preview_size", (640, 480))
    fps = t.number("fps", 30.0, minimum=1, maximum=240)
    loop = t.get("loop")
    controls_data = t.get("controls")
    t.done()
    if loop is not None and (backend != "replay" or not isinstance(loop, bool)):
        raise DeviceProfileError(f"{where}: loop (true/false) is only for the replay backend")
    if controls_data is not None and backend != "picamera2":
        raise DeviceProfileError(f"{where}: [camera.controls] is only for the picamera2 backend, not {backend}")
    if backend != "replay" and source is None:
        raise DeviceProfileError(f"{where}: the {backend} backend needs a source ({SOURCE_HINT[backend]})")
    if backend == "gstreamer" and source is not None and "appsink" not in source.rsplit("!", 1)[-1]:
        raise DeviceProfileError(f"{where}: a gstreamer source must be a pipeline ending in appsink")
    if resolution is not None and preview is not None and (preview[0] > resolution[0] or preview[1] > resolution[1]):
        raise DeviceProfileError(f"{where}: preview_size {list(preview)} is larger than resolution {list(resolution)}")
    controls = _controls(f"{where}.controls", controls_data) if controls_data is not None else None
    if backend == "picamera2" and controls is None:
        controls = CameraControls()
    if controls is not None and controls.exposure_time_us is not None and controls.exposure_time_us > 1e6 / fps:
        raise DeviceProfileError(f"{where}.controls: exposure_time_us {controls.exposure_time_us} is longer than one "
                                 f"frame at {fps:g} fps ({1e6 / fps:.0f} us)")
    if backend == "gstreamer" and source is not None and resolution is not None:
        caps = f"width={resolution[0]}, height={resolution[1]}"
        if caps not in " ".join(source.split()).replace(",width", ", width"):
            raise DeviceProfileError(f"{where}: the pipeline's caps must say {caps} (the profile's resolution)")
    return CameraSettings(backend, source, resolution, preview, float(fps), loop, controls)


def _vision(where: str, data: object) -> VisionSettings:
    t = _Table(where, data, required=False)
    embedding = t.text("embedding", "float32", choices=EMBEDDING_VARIANTS)
    threads = t.number("threads", 1, minimum=1, maximum=64, integer=True)
    delegate = t.get("delegate")
    options = t.get("delegate_options", {})
    max_pixels = t.number("max_pixels", None, minimum=1_000_000, maximum=1_000_000_000, integer=True)
    jitter = t.get("template_jitter")
    t.done()
    if jitter is not None and not isinstance(jitter, bool):
        raise DeviceProfileError(f"{where}: template_jitter must be true or false, got {jitter!r}")
    if delegate is not None and (not isinstance(delegate, str) or not delegate.startswith("/")):
        raise DeviceProfileError(f"{where}: delegate must be the absolute path of a delegate library, got {delegate!r}")
    if not isinstance(options, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in options.items()):
        raise DeviceProfileError(f"{where}: delegate_options must be a table of strings")
    if options and delegate is None:
        raise DeviceProfileError(f"{where}: delegate_options without a delegate")
    return VisionSettings(embedding, threads, delegate, dict(options), max_pixels, jitter)  # type: ignore[arg-type]


def parse_profile(name: str, data: Mapping[str, Any], path: Path) -> DeviceProfile:
    """A validated profile from parsed TOML (``path`` is used in messages)."""
    where = str(path)
    unknown = sorted(set(data) - {"profile", "camera", "vision"})
    if unknown:
        raise DeviceProfileError(f"{where}: unknown table(s) {', '.join(unknown)} (known: profile, camera, vision)")
    meta = _Table(f"{where} [profile]", data.get("profile"))
    description = meta.text("description", required=True)
    hardware = meta.text("hardware", required=True)
    meta.done()
    camera = _camera(f"{where} [camera]", data.get("camera"))
    vision = _vision(f"{where} [vision]", data.get("vision"))
    return DeviceProfile(name, description or "", hardware or "", camera, vision, path)


def list_profiles() -> list[str]:
    """Names of the profiles shipped in this folder, sorted."""
    return sorted(p.stem for p in PROFILE_DIR.glob("*.toml"))


def load_profile(name_or_path: str | Path) -> DeviceProfile:
    """A shipped profile by name (``rpi5-camera-module-3``), or any profile file by path."""
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or "/" in text or text.endswith(".toml"):
        path = Path(text).expanduser()
        name = path.stem
    else:
        path = PROFILE_DIR / f"{text}.toml"
        name = text
        if not path.is_file():
            raise DeviceProfileError(f"no device profile named {text!r}; shipped profiles: "
                                     f"{', '.join(list_profiles())} (or give the path of a .toml file)")
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise DeviceProfileError(f"device profile file not found: {path}") from exc
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise DeviceProfileError(f"device profile {path} cannot be read: {exc}") from exc
    return parse_profile(name, data, path)
