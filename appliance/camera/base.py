"""The camera interface every backend implements, the frame it yields, and the registry that picks a backend.

The rest of the appliance (live analysis, auto-capture, the UI) only ever sees `Camera` and `Frame`, so a
booking desk can move from a USB webcam to a Pi camera, or a demo can replay files, by changing one
config value. Backends are plug-ins: one module each, imported only when chosen, so `picamera2` (which
exists only on Raspberry Pi OS) is never imported on a Jetson, a server or CI.

A camera spec is either a string or a dict (a `[camera]` table from the station config):

    "replay:/srv/demo/faces"            folder of .jpg/.png (or a single image, or a video file)
    "opencv:0"                          USB/V4L2 camera by index
    "opencv:/dev/video2"                ... or by device path (a video file path also works)
    "gstreamer"                         Jetson CSI camera, built-in nvarguscamerasrc pipeline
    "gstreamer:<pipeline ! appsink>"    any GStreamer pipeline ending in appsink
    "picamera2" / "picamera2:1"         Raspberry Pi camera (libcamera), optional camera number

    {"backend": "opencv", "device": "/dev/video2", "width": 1280, "height": 720}
    {"source": "replay:/srv/demo", "fps": 5, "loop": False}    # a spec string plus options

Everything after the first ":" of a string is the backend's main argument, verbatim (pipelines and paths
may contain ":" themselves). Options a backend does not know are an error naming the known ones, so a
typo in a county's config fails at start-up instead of being silently ignored.
"""

from __future__ import annotations

import importlib
import inspect
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import cv2
import numpy as np

Clock = Callable[[], float]


class CameraError(RuntimeError):
    """The camera cannot deliver: the message says which camera and what to check. Fatal for this camera
    unless it is one of the subclasses below."""


class FrameUnreadable(CameraError):
    """One frame could not be decoded (e.g. a corrupt file in a replay folder). The camera is still usable:
    skip this frame and read the next one. A bad frame must never end a booking session."""


class CameraEnded(CameraError):
    """A finite source (replay without looping) has delivered its last frame."""


@dataclass(frozen=True, eq=False)
class Frame:
    """One image from a camera.

    `image` is RGB uint8 (H, W, 3), C-contiguous and read-only (backends never hand out a buffer they
    will overwrite, and no consumer may change what another one measured). `timestamp` is
    `time.monotonic()` seconds when the frame was delivered, so stability windows and pacing are immune to
    wall-clock jumps (NTP, DST). `sequence` counts the frames this camera has delivered since it was
    opened (0, 1, 2, ...); previews and stills share the counter.
    `source` names where the frame came from when that is useful (the file for replay), else "".
    """

    image: np.ndarray
    timestamp: float
    sequence: int
    source: str = ""

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return int(self.image.shape[1]), int(self.image.shape[0])


class Camera(ABC):
    """A camera backend. Use as a context manager, or call `open()` and `close()` yourself.

    Subclasses implement `_open`, `_grab` (and `_grab_still` if they have a separate still mode) and
    `_close`; this class does the bookkeeping every backend needs the same way: open/closed state,
    sequence numbers, timestamps, a lock (the live loop reads while the UI may ask for a still), and a
    check that what the backend produced really is an RGB uint8 image.
    """

    backend: ClassVar[str] = ""

    def __init__(self, *, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._sequence = 0
        self._is_open = False
        self._lock = threading.RLock()
        self._resolution: tuple[int, int] | None = None

    # --- what backends implement -------------------------------------------------------------------

    @property
    @abstractmethod
    def description(self) -> str:
        """Names this camera in messages, e.g. "camera /dev/video2"."""

    @abstractmethod
    def _open(self) -> None:
        """Acquire the device; raise CameraError with a clear message when it is missing or busy. Must set
        `self._resolution` to the size `read()` will deliver."""

    @abstractmethod
    def _grab(self) -> tuple[np.ndarray, str]:
        """Next preview image as RGB uint8, and a source label ("" if none)."""

    def _grab_still(self) -> tuple[np.ndarray, str]:
        """Full-resolution image; backends without a separate still mode return a preview frame."""
        return self._grab()

    @abstractmethod
    def _close(self) -> None:
        """Release the device. Called once, even after a failed read."""

    # --- the public interface ----------------------------------------------------------------------

    @property
    def is_open(self) -> bool:
        return self._is_open

    @property
    def resolution(self) -> tuple[int, int]:
        """(width, height) of the frames `read()` delivers, as the device actually delivers them (it may
        differ from what was requested: cameras round to the modes they support)."""
        if self._resolution is None:
            raise CameraError(f"{self.description} is not open: its resolution is not known yet")
        return self._resolution

    def open(self) -> None:
        with self._lock:
            if self._is_open:
                return
            self._sequence = 0
            self._open()
            self._is_open = True

    def read(self) -> Frame:
        """The next preview frame. Raises FrameUnreadable (skip it), CameraEnded, or CameraError."""
        with self._lock:
            self._require_open()
            image, source = self._grab()
            frame = self._frame(image, source)
            self._resolution = frame.size
            return frame

    def capture_still(self) -> Frame:
        """A full-resolution frame, from the backend's still mode where it has one."""
        with self._lock:
            self._require_open()
            image, source = self._grab_still()
            return self._frame(image, source)

    def close(self) -> None:
        with self._lock:
            if not self._is_open:
                return
            self._is_open = False
            self._close()

    def __enter__(self) -> Camera:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "open" if self._is_open else "closed"
        return f"<{type(self).__name__} {self.description} ({state})>"

    # --- helpers -----------------------------------------------------------------------------------

    def _require_open(self) -> None:
        if not self._is_open:
            raise CameraError(f"{self.description} is not open (open it, or use it in a `with` block)")

    def _frame(self, image: np.ndarray, source: str) -> Frame:
        if not (
            isinstance(image, np.ndarray)
            and image.dtype == np.uint8
            and image.ndim == 3
            and image.shape[2] == 3
            and image.size > 0
        ):
            got = f"{image.dtype} {image.shape}" if isinstance(image, np.ndarray) else type(image).__name__
            raise FrameUnreadable(f"{self.description} delivered a frame that is not an RGB image ({got})")
        image = np.ascontiguousarray(image)
        # Read-only: one frame is shared by the analysis, the UI and the auto-capture window, and the frame
        # that is finally saved must be exactly the one that was measured. Draw on a copy.
        image.flags.writeable = False
        frame = Frame(image, self._clock(), self._sequence, source)
        self._sequence += 1
        return frame


# --- small shared helpers ----------------------------------------------------------------------------


def bgr_to_rgb(image: np.ndarray) -> np.ndarray:
    """OpenCV decodes to BGR (or grey, or BGRA for some files and cameras); the appliance works in RGB."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def fit_within(image: np.ndarray, size: tuple[int, int] | None) -> np.ndarray:
    """Scale down to fit inside (width, height), keeping the aspect ratio; never scale up.

    The aspect ratio is kept because the quality measures (head size, crop margins, eye distance ratios)
    are geometric: a stretched preview would pass or fail faces for the wrong reason.
    """
    if size is None:
        return image
    h, w = image.shape[:2]
    scale = min(size[0] / w, size[1] / h)
    if scale >= 1.0:
        return image
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, new, interpolation=cv2.INTER_AREA)


def fitted_size(size: tuple[int, int], box: tuple[int, int] | None) -> tuple[int, int]:
    """The size `fit_within` gives an image of `size` (to report a resolution before the first frame)."""
    if box is None:
        return size
    scale = min(box[0] / size[0], box[1] / size[1])
    if scale >= 1.0:
        return size
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def parse_size(value: object, name: str) -> tuple[int, int] | None:
    """A (width, height) option from config: TOML gives a list, code may give a tuple; both positive ints."""
    if value is None:
        return None
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in value)
    ):
        return int(value[0]), int(value[1])
    raise CameraError(f"camera option {name} must be [width, height] in pixels, got {value!r}")


def parse_positive(value: object, name: str, *, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise CameraError(f"camera option {name} must be a number, got {value!r}")
    if value < 0 or (value == 0 and not allow_zero):
        raise CameraError(f"camera option {name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return float(value)


# --- the registry ------------------------------------------------------------------------------------

# name -> (module that implements it, option a spec string's argument fills). Adding a backend is one
# module that defines a Camera subclass in its BACKENDS dict, plus one line here. The module is imported
# only when its backend is chosen.
BACKENDS: dict[str, tuple[str, str]] = {
    "replay": ("appliance.camera.replay", "path"),
    "opencv": ("appliance.camera.opencv", "device"),
    "gstreamer": ("appliance.camera.opencv", "pipeline"),
    "picamera2": ("appliance.camera.picamera2", "camera"),
}

SpecType = str | Mapping[str, Any]


def parse_spec(spec: SpecType) -> tuple[str, dict[str, Any]]:
    """Split a camera spec into (backend name, options). See the module docstring for the forms."""
    if isinstance(spec, str):
        text = spec.strip()
        name, sep, argument = text.partition(":")
        name = name.strip().lower()
        _check_backend(name, spec)
        options: dict[str, Any] = {}
        if sep:
            if not argument.strip():
                raise CameraError(f"camera spec {spec!r}: nothing after '{name}:'")
            options[BACKENDS[name][1]] = argument.strip()
        return name, options
    if isinstance(spec, Mapping):
        options = dict(spec)
        has_backend, has_source = "backend" in options, "source" in options
        if has_backend == has_source:
            raise CameraError(
                "camera config needs exactly one of 'backend' (a name) or 'source' (a spec string such as "
                f"'opencv:0'), got keys: {', '.join(sorted(map(str, options))) or 'none'}"
            )
        if has_source:
            source = options.pop("source")
            if not isinstance(source, str):
                raise CameraError(f"camera 'source' must be a spec string such as 'opencv:0', got {source!r}")
            name, from_string = parse_spec(source)
            clash = set(from_string) & set(options)
            if clash:
                raise CameraError(f"camera option(s) {', '.join(sorted(clash))} given twice: in 'source' and as keys")
            return name, {**from_string, **options}
        name = options.pop("backend")
        if not isinstance(name, str):
            raise CameraError(f"camera 'backend' must be a name, got {name!r}")
        name = name.strip().lower()
        _check_backend(name, name)
        return name, options
    raise CameraError(f"camera spec must be a string or a table, got {type(spec).__name__}")


def _check_backend(name: str, spec: object) -> None:
    if name not in BACKENDS:
        raise CameraError(f"unknown camera backend in {spec!r} (known: {', '.join(sorted(BACKENDS))})")


def create_camera(spec: SpecType, **overrides: Any) -> Camera:
    """Build the camera a spec names, without opening it. `overrides` win over the spec's options."""
    name, options = parse_spec(spec)
    options.update(overrides)
    module_name = BACKENDS[name][0]
    module = importlib.import_module(module_name)
    cls: type[Camera] = module.BACKENDS[name]
    known = [p for p in inspect.signature(cls).parameters if p not in ("self", "clock", "sleep")]
    unknown = set(options) - set(inspect.signature(cls).parameters)
    if unknown:
        raise CameraError(
            f"unknown option(s) for camera backend '{name}': {', '.join(sorted(unknown))} (known: {', '.join(known)})"
        )
    return cls(**options)


def open_camera(spec: SpecType, **overrides: Any) -> Camera:
    """Build and open the camera a spec names. The result is open; use it in a `with` block to close it."""
    camera = create_camera(spec, **overrides)
    camera.open()
    return camera
