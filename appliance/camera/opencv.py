"""OpenCV cameras: USB/V4L2 webcams by index or device path, and GStreamer pipelines (Jetson CSI cameras).

A booking desk runs for hours; the failures that matter are a camera that is not plugged in, one that
another program holds, and one that is unplugged or whose cable fails mid-session. Each gets its own
clear message naming the device, and a camera that stops delivering raises instead of returning stale
or black frames. A video file path goes through exactly the same code as a device, which is how the
tests exercise the failure paths without hardware.
"""

from __future__ import annotations

import functools
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from appliance.camera.base import (
    Camera,
    CameraError,
    Clock,
    bgr_to_rgb,
    fit_within,
    fitted_size,
    parse_positive,
    parse_size,
)

log = logging.getLogger(__name__)


@functools.lru_cache(maxsize=1)
def gstreamer_available() -> bool:
    """Whether this OpenCV build can run GStreamer pipelines. The opencv-python wheels from PyPI cannot;
    JetPack's system OpenCV (python3-opencv) can."""
    match = re.search(r"^\s*GStreamer:\s*(\S+)", cv2.getBuildInformation(), re.MULTILINE)
    return bool(match and match.group(1).upper().startswith("YES"))


def jetson_csi_pipeline(sensor_id: int = 0, width: int = 1920, height: int = 1080, fps: int = 30) -> str:
    """The usual pipeline for a Jetson CSI camera: Argus ISP -> NVMM -> BGR for appsink.

    `drop=true max-buffers=1` makes appsink keep only the newest frame, so a slow consumer sees the scene
    as it is now rather than a growing backlog (the live guidance must match what the officer sees).
    """
    return (
        f"nvarguscamerasrc sensor-id={sensor_id} ! "
        f"video/x-raw(memory:NVMM), width={width}, height={height}, framerate={fps}/1 ! "
        "nvvidconv ! video/x-raw, format=BGRx ! videoconvert ! video/x-raw, format=BGR ! "
        "appsink drop=true max-buffers=1"
    )


def _positive_int(value: object, name: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise CameraError(f"camera option {name} must be a positive whole number, got {value!r}")
    return value


def _opened(source: int | str, api: int, refusal: str) -> cv2.VideoCapture:
    """A started ``cv2.VideoCapture``, or `CameraError` with ``refusal``: OpenCV reports a device it could not
    open only as a capture that is not opened, which must still be released (it may hold a half-open handle)."""
    capture = cv2.VideoCapture(source, api)
    if not capture.isOpened():
        capture.release()
        raise CameraError(refusal)
    return capture


class OpenCVCamera(Camera):
    """A V4L2/USB camera through cv2.VideoCapture.

    device: index (0, "0") or path ("/dev/video2", or a video file for tests and demos).
    width, height, fps: requested capture mode; the camera may round it, `resolution` reports what it
        actually delivers. Set them to the largest mode the standard needs (e.g. 1280x720): USB cameras
        have no separate still mode, so `capture_still()` is a full-size frame of the same stream.
    fourcc: pixel format to request, e.g. "MJPG" (most USB cameras reach HD frame rates only in MJPG).
    preview_size: [width, height] box that `read()` frames are scaled down to fit (aspect kept), so the
        per-frame analysis stays cheap while stills keep full resolution.
    max_failures: failed reads in a row after which the camera counts as gone (unplugged, cable fault).
    retry_delay: seconds between those retries.
    """

    backend = "opencv"

    def __init__(
        self,
        device: int | str = 0,
        *,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        fourcc: str | None = None,
        preview_size: tuple[int, int] | list[int] | None = None,
        max_failures: int = 5,
        retry_delay: float = 0.05,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(clock=clock)
        self.device = self._parse_device(device)
        self.width = _positive_int(width, "width")
        self.height = _positive_int(height, "height")
        self.fps = None if fps is None else parse_positive(fps, "fps")
        if fourcc is not None and (not isinstance(fourcc, str) or len(fourcc) != 4):
            raise CameraError(f"camera option fourcc must be four characters such as 'MJPG', got {fourcc!r}")
        self.fourcc = fourcc
        self.preview_size = parse_size(preview_size, "preview_size")
        self.max_failures = _positive_int(max_failures, "max_failures") or 1
        self.retry_delay = parse_positive(retry_delay, "retry_delay", allow_zero=True)
        self._sleep = sleep
        self._capture: cv2.VideoCapture | None = None
        self._pending: np.ndarray | None = None
        self._stopped = False
        self.full_resolution: tuple[int, int] | None = None

    @staticmethod
    def _parse_device(device: object) -> int | str:
        if isinstance(device, bool):
            raise CameraError(f"camera device must be an index or a path, got {device!r}")
        if isinstance(device, int):
            if device < 0:
                raise CameraError(f"camera index must be 0 or more, got {device}")
            return device
        if isinstance(device, Path):
            device = str(device)
        if isinstance(device, str) and device.strip():
            text = device.strip()
            return int(text) if text.isdigit() else text
        raise CameraError(f"camera device must be an index or a path, got {device!r}")

    @property
    def description(self) -> str:
        return f"camera {self.device}"

    # --- opening -------------------------------------------------------------------------------------

    def _make_capture(self) -> cv2.VideoCapture:
        if isinstance(self.device, str) and not Path(self.device).exists():
            raise CameraError(
                f"camera {self.device} is missing: no such device (is it plugged in? "
                "`v4l2-ctl --list-devices` lists the cameras)"
            )
        return _opened(self.device, cv2.CAP_ANY,
                       f"camera {self.device} is missing or busy: it could not be opened (not connected, or "
                       "another program is using it)")

    def _configure(self, capture: cv2.VideoCapture) -> None:
        """Ask for the mode from the config. Order matters on V4L2: the pixel format decides which sizes
        and rates exist."""
        if self.fourcc:
            capture.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc))
        if self.width:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        if self.height:
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        if self.fps:
            capture.set(cv2.CAP_PROP_FPS, self.fps)

    def _open(self) -> None:
        self._stopped = False
        capture = self._make_capture()
        try:
            self._configure(capture)
            ok, first = capture.read()
        except cv2.error as exc:
            capture.release()
            raise CameraError(f"{self.description} is missing or busy: {exc}") from exc
        if not ok or first is None or first.size == 0:
            capture.release()
            raise CameraError(
                f"{self.description} is missing or busy: it opened but delivered no frame (another program may "
                "be using it, or the requested mode is not supported)"
            )
        self._capture = capture
        # The first frame proves the camera works; keep it as the first frame `read()` returns.
        self._pending = first
        self.full_resolution = (int(first.shape[1]), int(first.shape[0]))
        self._resolution = fitted_size(self.full_resolution, self.preview_size)
        requested = (self.width or self.full_resolution[0], self.height or self.full_resolution[1])
        if requested != self.full_resolution:
            log.warning(
                "%s delivers %dx%d, not the requested %dx%d", self.description, *self.full_resolution, *requested
            )

    # --- reading -------------------------------------------------------------------------------------

    def _next_bgr(self) -> np.ndarray:
        if self._pending is not None:
            image, self._pending = self._pending, None
            return image
        if self._stopped or self._capture is None:
            raise CameraError(f"{self.description} stopped delivering frames; reopen it after fixing the cause")
        for attempt in range(self.max_failures):
            ok, image = self._capture.read()
            if ok and image is not None and image.size > 0:
                return image
            if attempt + 1 < self.max_failures and self.retry_delay:
                self._sleep(self.retry_delay)
        # Remember it: each further read on a dead V4L2 device would block for its timeout again.
        self._stopped = True
        raise CameraError(
            f"{self.description} stopped delivering frames ({self.max_failures} failed reads in a row): "
            "unplugged, cable fault or driver error"
        )

    def _grab(self) -> tuple[np.ndarray, str]:
        return fit_within(bgr_to_rgb(self._next_bgr()), self.preview_size), ""

    def _grab_still(self) -> tuple[np.ndarray, str]:
        return bgr_to_rgb(self._next_bgr()), ""

    def _close(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None
        self._pending = None


class GStreamerCamera(OpenCVCamera):
    """A GStreamer pipeline through OpenCV, for Jetson CSI cameras (nvarguscamerasrc).

    pipeline: a full pipeline ending in `appsink`, delivering BGR. Without one, the built-in CSI
        pipeline (`jetson_csi_pipeline`) is used with sensor_id, width, height and fps.
    """

    backend = "gstreamer"

    def __init__(
        self,
        pipeline: str | None = None,
        *,
        sensor_id: int = 0,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        preview_size: tuple[int, int] | list[int] | None = None,
        max_failures: int = 5,
        retry_delay: float = 0.05,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(
            0, preview_size=preview_size, max_failures=max_failures, retry_delay=retry_delay, clock=clock, sleep=sleep
        )
        if pipeline is None:
            if isinstance(sensor_id, bool) or not isinstance(sensor_id, int) or sensor_id < 0:
                raise CameraError(f"camera option sensor_id must be 0 or more, got {sensor_id!r}")
            fps_value = 30 if fps is None else parse_positive(fps, "fps")
            pipeline = jetson_csi_pipeline(
                sensor_id,
                _positive_int(width, "width") or 1920,
                _positive_int(height, "height") or 1080,
                max(1, round(fps_value)),
            )
        elif width is not None or height is not None or fps is not None:
            raise CameraError(
                "camera options width/height/fps apply to the built-in CSI pipeline only; with your own "
                "pipeline set them in its caps (video/x-raw, width=..., height=..., framerate=.../1)"
            )
        if not isinstance(pipeline, str) or not pipeline.strip():
            raise CameraError(f"gstreamer needs a pipeline string, got {pipeline!r}")
        self.pipeline = " ".join(pipeline.split())
        if not re.search(r"\bappsink\b", self.pipeline):
            raise CameraError(f"gstreamer pipeline must end in appsink for OpenCV to read it: {self.pipeline}")

    @property
    def description(self) -> str:
        return f"camera (GStreamer: {self.pipeline})"

    def _make_capture(self) -> cv2.VideoCapture:
        if not gstreamer_available():
            raise CameraError(
                "this OpenCV build has no GStreamer support, so it cannot open "
                f"{self.pipeline!r}: the opencv-python wheels from PyPI are built without it; on a Jetson use "
                "JetPack's OpenCV (apt install python3-opencv; a virtualenv needs --system-site-packages)"
            )
        return _opened(self.pipeline, cv2.CAP_GSTREAMER,
                       f"{self.description} is missing or busy: the pipeline did not start (is the camera "
                       "connected and nvargus-daemon running? `gst-launch-1.0` with the same pipeline shows the "
                       "GStreamer error)")

    def _configure(self, capture: cv2.VideoCapture) -> None:
        """The pipeline's caps set the mode; V4L2 properties do not apply."""


BACKENDS = {"opencv": OpenCVCamera, "gstreamer": GStreamerCamera}
