"""Raspberry Pi cameras through picamera2 (libcamera).

The live stream runs in a preview configuration at preview size, cheap enough for per-frame analysis; a
capture switches to a still configuration at full sensor resolution for one frame and back. Exposure and
white balance can be locked by the device profile: a booking desk has fixed lighting, and auto exposure
hunting between frames would change the very measures (luminance, exposure, natural colour) the officer
is being guided on. The locked controls go into both configurations, because picamera2 replaces its
control set with the configuration's on every mode switch: controls set only once would silently fall
back to auto on the first still.

`picamera2` is imported only when this camera opens: it exists only on Raspberry Pi OS.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from appliance.camera.base import Camera, CameraError, Clock, parse_size

INSTALL_HINT = (
    "picamera2 is only available on Raspberry Pi OS: apt install python3-picamera2 "
    "(a virtualenv must be created with --system-site-packages to see it)"
)

# libcamera names formats by the order of a little-endian 32-bit word, so numpy sees them reversed:
# "BGR888" arrays are [R, G, B] per pixel and "RGB888" arrays are [B, G, R] (picamera2 manual, 4.2).
# We ask for BGR888 so frames arrive in the RGB order the appliance uses, with no copy to reorder them.
RGB_ORDER_FORMATS = frozenset({"BGR888", "XBGR8888"})
BGR_ORDER_FORMATS = frozenset({"RGB888", "XRGB8888"})
FORMAT = "BGR888"

BOOL_CONTROLS = ("AeEnable", "AwbEnable")


def _bool_control(name: str, value: Any) -> Any:
    if not isinstance(value, bool):
        raise CameraError(f"camera control {name} must be true or false, got {value!r}")
    return value


def _exposure_time(name: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CameraError(f"camera control ExposureTime is in microseconds, a whole number > 0; got {value!r}")
    return value


def _analogue_gain(name: str, value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 1.0:
        raise CameraError(f"camera control AnalogueGain must be a number >= 1.0, got {value!r}")
    return float(value)


def _colour_gains(name: str, value: Any) -> Any:
    if not (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        raise CameraError(f"camera control ColourGains must be [red_gain, blue_gain] > 0, got {value!r}")
    return (float(value[0]), float(value[1]))


def _other_control(name: str, value: Any) -> Any:
    return tuple(value) if isinstance(value, list) else value


#: The controls checked by type and range (name -> check returning the value libcamera gets); any other
#: control passes through `_other_control`.
CONTROL_CHECKS: dict[str, Callable[[str, Any], Any]] = {
    **{name: _bool_control for name in BOOL_CONTROLS},
    "ExposureTime": _exposure_time,
    "AnalogueGain": _analogue_gain,
    "ColourGains": _colour_gains,
}
#: A fixed value and the automatic control it switches off.
LOCKS = (("ExposureTime", "AeEnable"), ("AnalogueGain", "AeEnable"), ("ColourGains", "AwbEnable"))


def validate_controls(controls: Mapping[str, Any] | None) -> dict[str, Any]:
    """Check the profile's libcamera controls and make locks explicit.

    The five exposure/white-balance controls are checked by type and range, because a wrong value there
    fails only on the device, at the first booking. A fixed ExposureTime/AnalogueGain without AeEnable
    turns auto exposure off (and ColourGains turns AWB off): that is what "locked" means, and saying
    AeEnable = true alongside a fixed exposure is a contradiction we reject. Other libcamera controls
    (e.g. AfMode, LensPosition, Sharpness) pass through; lists become tuples, as libcamera expects.
    """
    if controls is None:
        return {}
    if not isinstance(controls, Mapping):
        raise CameraError(f"camera controls must be a table of libcamera controls, got {controls!r}")
    out: dict[str, Any] = {}
    for name, value in controls.items():
        if not isinstance(name, str) or not re.fullmatch(r"[A-Z][A-Za-z0-9]*", name):
            raise CameraError(f"camera control name {name!r} is not a libcamera control name (e.g. ExposureTime)")
        out[name] = CONTROL_CHECKS.get(name, _other_control)(name, value)
    for fixed, switch in LOCKS:
        if fixed in out:
            if out.get(switch) is True:
                raise CameraError(
                    f"camera controls set {fixed} and {switch} = true: a fixed value needs {switch} = false"
                )
            out[switch] = False
    return out


class Picamera2Camera(Camera):
    """A camera on the Pi's CSI connector.

    camera: libcamera camera number (0 for the only or first camera).
    preview_size: [width, height] of the live stream (even numbers; libcamera scales the full field of
        view to it).
    still_size: [width, height] of stills; default the full sensor resolution.
    controls: libcamera controls from the device profile, e.g. {AeEnable = false, ExposureTime = 10000,
        AnalogueGain = 2.0, AwbEnable = false, ColourGains = [1.8, 1.5]}; see `validate_controls`.
    """

    backend = "picamera2"

    def __init__(
        self,
        camera: int | str = 0,
        *,
        preview_size: tuple[int, int] | list[int] | None = (640, 480),
        still_size: tuple[int, int] | list[int] | None = None,
        controls: Mapping[str, Any] | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        super().__init__(clock=clock)
        if isinstance(camera, str) and camera.strip().isdigit():
            camera = int(camera.strip())
        if isinstance(camera, bool) or not isinstance(camera, int) or camera < 0:
            raise CameraError(f"picamera2 camera must be a camera number (0, 1, ...), got {camera!r}")
        self.camera_number = camera
        self.preview_size = self._even(parse_size(preview_size, "preview_size") or (640, 480), "preview_size")
        size = parse_size(still_size, "still_size")
        self.still_size = None if size is None else self._even(size, "still_size")
        self.controls = validate_controls(controls)
        self._picam: Any = None
        self._still_config: Any = None
        self._model = ""

    @staticmethod
    def _even(size: tuple[int, int], name: str) -> tuple[int, int]:
        if size[0] % 2 or size[1] % 2:
            raise CameraError(f"camera option {name} must have even width and height for libcamera, got {list(size)}")
        return size

    @property
    def description(self) -> str:
        model = f" ({self._model})" if self._model else ""
        return f"picamera2 camera {self.camera_number}{model}"

    def _open(self) -> None:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise CameraError(f"cannot open {self.description}: picamera2 is not installed. {INSTALL_HINT}") from exc
        cameras = Picamera2.global_camera_info()
        if not cameras:
            raise CameraError(
                "no camera attached: libcamera finds no camera (check the ribbon cable and its orientation; "
                "`rpicam-hello --list-cameras` lists the cameras)"
            )
        if self.camera_number >= len(cameras):
            found = ", ".join(f"{i}: {info.get('Model', '?')}" for i, info in enumerate(cameras))
            raise CameraError(f"no picamera2 camera {self.camera_number}: libcamera finds {found}")
        self._model = str(cameras[self.camera_number].get("Model", ""))
        try:
            picam = Picamera2(self.camera_number)
        except (RuntimeError, OSError, IndexError) as exc:
            raise CameraError(
                f"{self.description} is missing or busy: {exc} (another program such as rpicam-hello may hold it)"
            ) from exc
        try:
            preview = picam.create_preview_configuration(
                main={"size": self.preview_size, "format": FORMAT}, controls=dict(self.controls)
            )
            still_main: dict[str, Any] = {"format": FORMAT}
            if self.still_size is not None:
                still_main["size"] = self.still_size
            self._still_config = picam.create_still_configuration(main=still_main, controls=dict(self.controls))
            picam.configure(preview)
            picam.start()
        except (RuntimeError, ValueError, OSError) as exc:
            picam.close()
            raise CameraError(f"{self.description} could not be configured: {exc}") from exc
        self._picam = picam
        self._resolution = self.preview_size

    def _to_rgb(self, array: np.ndarray, config_format: str) -> np.ndarray:
        if array.ndim != 3 or array.shape[2] not in (3, 4):
            raise CameraError(f"{self.description} delivered an array of shape {array.shape}, not an RGB image")
        if config_format in BGR_ORDER_FORMATS:
            return np.ascontiguousarray(array[:, :, 2::-1])
        return np.ascontiguousarray(array[:, :, :3])

    def _grab(self) -> tuple[np.ndarray, str]:
        try:
            array = self._picam.capture_array("main")
        except RuntimeError as exc:
            raise CameraError(f"{self.description} stopped delivering frames: {exc}") from exc
        return self._to_rgb(array, FORMAT), ""

    def _grab_still(self) -> tuple[np.ndarray, str]:
        try:
            array = self._picam.switch_mode_and_capture_array(self._still_config, "main")
        except RuntimeError as exc:
            raise CameraError(f"{self.description} could not take a still: {exc}") from exc
        return self._to_rgb(array, FORMAT), ""

    def _close(self) -> None:
        picam, self._picam = self._picam, None
        if picam is not None:
            try:
                picam.stop()
            finally:
                picam.close()


BACKENDS = {"picamera2": Picamera2Camera}
