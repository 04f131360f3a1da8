"""The live preview picture: the latest camera frame as a small JPEG for the page to fetch.

The booking session analyses frames but does not hand them out, so the UI taps the camera itself: the
station is built with a camera factory that wraps each camera it opens in `TeeCamera`, which passes
every `read()` through unchanged and leaves a reference to the frame in a `PreviewHub`. Nothing is
copied per frame; a JPEG is encoded only when the page asks, at most once per frame, and scaled down to
`PREVIEW_MAX_WIDTH` (the officer needs to see the framing, not every pore, and a Pi should not spend its
CPU on encoding full stills ten times a second).

Why a periodic JPEG fetch rather than MJPEG: it needs no long-lived streaming response (which holds a
server thread per viewer and outlives a locked session), the page's session check applies to every
picture, and the page can match each picture with the face box and guidance it polls alongside.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np

from appliance.camera import Camera, Frame, create_camera

PREVIEW_MAX_WIDTH = 800
PREVIEW_JPEG_QUALITY = 80


class PreviewHub:
    """Holds the latest frame and its encoded preview."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frame: Frame | None = None
        self._generation = 0
        self._cached: tuple[int, int, bytes] | None = None  # (generation, sequence, jpeg)

    def put(self, frame: Frame) -> None:
        with self._lock:
            self._frame = frame

    def clear(self) -> None:
        """Forget the picture (booking closed, camera switched): no stale face is served afterwards."""
        with self._lock:
            self._frame = None
            self._cached = None
            self._generation += 1

    def jpeg(self) -> tuple[bytes, int] | None:
        """(JPEG bytes, frame sequence) of the latest frame, or None before the first one."""
        with self._lock:
            frame, generation, cached = self._frame, self._generation, self._cached
        if frame is None:
            return None
        if cached is not None and cached[0] == generation and cached[1] == frame.sequence:
            return cached[2], frame.sequence
        jpeg = encode_preview(frame.image)
        with self._lock:
            if self._generation == generation:
                self._cached = (generation, frame.sequence, jpeg)
        return jpeg, frame.sequence

    def factory(self, inner: Callable[..., Camera] = create_camera) -> Callable[..., Any]:
        """A camera factory for `CaptureStation(camera_factory=...)` whose cameras feed this hub."""

        def make(spec: Any, **options: Any) -> TeeCamera:
            self.clear()
            return TeeCamera(inner(spec, **options), self)

        return make


class TeeCamera:
    """A camera that leaves each preview frame it delivers in a `PreviewHub`; everything else (open,
    close, description, still capture, backend options such as `preview_size`) is the wrapped camera's."""

    def __init__(self, inner: Camera, hub: PreviewHub) -> None:
        self._inner = inner
        self._hub = hub

    def read(self) -> Frame:
        frame = self._inner.read()
        self._hub.put(frame)
        return frame

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def encode_preview(image: np.ndarray) -> bytes:
    """RGB frame -> preview JPEG, at most `PREVIEW_MAX_WIDTH` wide."""
    h, w = image.shape[:2]
    if w > PREVIEW_MAX_WIDTH:
        scale = PREVIEW_MAX_WIDTH / w
        image = cv2.resize(image, (PREVIEW_MAX_WIDTH, max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
    bgr = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2BGR)
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, PREVIEW_JPEG_QUALITY])
    if not ok:
        raise ValueError("the preview frame could not be encoded")
    return buf.tobytes()
