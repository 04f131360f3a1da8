"""Replay: a folder of images, a single image, or a video file played as if it were a camera.

It exists for the demo (a booking desk without a camera), for training officers, and for tests: the whole
capture pipeline runs on it unchanged. It behaves like a camera where that matters to the pipeline:
frames arrive at a set rate (paced on the monotonic clock, so a slow consumer does not get a burst of
stale frames afterwards), `read()` gives preview-sized frames while `capture_still()` gives the full
image, and a corrupt file costs one frame (FrameUnreadable naming the file), never the session.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

from appliance.camera.base import (
    Camera,
    CameraEnded,
    CameraError,
    Clock,
    FrameUnreadable,
    bgr_to_rgb,
    fit_within,
    fitted_size,
    parse_positive,
    parse_size,
)
from appliance.imageio import ImageError, check_file

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png"})


def natural_key(path: Path) -> list[object]:
    """Sort img2 before img10: people number files without leading zeros."""
    parts: list[object] = []
    for i, part in enumerate(re.split(r"(\d+)", path.name.lower())):
        parts.append(int(part) if i % 2 else part)
    return [parts, path.name]


def image_files(folder: Path) -> list[Path]:
    """The images a folder replays, in natural order; other files (licences, CSVs) are ignored."""
    return sorted(
        (p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
        key=natural_key,
    )


class ReplayCamera(Camera):
    """Frames from image files or a video.

    path: a folder (its .jpg/.jpeg/.png files in natural order), one image file, or a video file.
    fps: frames per second to pace `read()` at; 0 delivers as fast as the caller reads (tests).
    loop: start again after the last frame; without it `read()` raises CameraEnded at the end.
    preview_size: [width, height] box that `read()` frames are scaled down to fit (aspect kept);
        `capture_still()` returns the full-size version of the latest frame, like a camera's still mode.
    """

    backend = "replay"

    def __init__(
        self,
        path: str | Path,
        *,
        fps: float = 15.0,
        loop: bool = True,
        preview_size: tuple[int, int] | list[int] | None = None,
        clock: Clock = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        super().__init__(clock=clock)
        if not isinstance(path, (str, Path)) or not str(path).strip():
            raise CameraError(f"replay needs a path to a folder, an image or a video, got {path!r}")
        if not isinstance(loop, bool):
            raise CameraError(f"camera option loop must be true or false, got {loop!r}")
        self.path = Path(path).expanduser()
        self.fps = parse_positive(fps, "fps", allow_zero=True)
        self.loop = loop
        self.preview_size = parse_size(preview_size, "preview_size")
        self._sleep = sleep
        self._files: list[Path] = []
        self._index = 0
        self._video: cv2.VideoCapture | None = None
        self._video_frames_this_pass = 0
        self._due: float | None = None
        self._last_full: np.ndarray | None = None
        self._last_source = ""

    @property
    def description(self) -> str:
        return f"replay of {self.path}"

    @property
    def is_video(self) -> bool:
        return self.path.is_file() and self.path.suffix.lower() not in IMAGE_SUFFIXES

    def _open(self) -> None:
        if not self.path.exists():
            raise CameraError(f"replay source {self.path} does not exist")
        self._index = 0
        self._due = None
        self._last_full = None
        if self.path.is_dir():
            self._files = image_files(self.path)
            if not self._files:
                raise CameraError(f"replay folder {self.path} has no images ({', '.join(sorted(IMAGE_SUFFIXES))})")
            self._resolution = fitted_size(self._first_readable_size(), self.preview_size)
        elif not self.is_video:
            self._files = [self.path]
            self._resolution = fitted_size(self._first_readable_size(), self.preview_size)
        else:
            self._video = self._open_video()
            size = (
                int(self._video.get(cv2.CAP_PROP_FRAME_WIDTH)),
                int(self._video.get(cv2.CAP_PROP_FRAME_HEIGHT)),
            )
            if min(size) <= 0:
                self._video.release()
                self._video = None
                raise CameraError(f"replay video {self.path} reports no frame size: not a video OpenCV can decode")
            self._resolution = fitted_size(size, self.preview_size)

    def _first_readable_size(self) -> tuple[int, int]:
        """Size of the first image that decodes: the resolution to report before the first frame."""
        refused = None
        for file in self._files:
            try:
                check_file(file)
            except ImageError as exc:
                refused = exc
                continue
            image = cv2.imread(str(file), cv2.IMREAD_COLOR)
            if image is not None:
                return int(image.shape[1]), int(image.shape[0])
        if refused is not None and len(self._files) == 1:
            raise CameraError(f"replay source: {refused}")
        raise CameraError(f"replay source {self.path}: none of its {len(self._files)} image(s) can be decoded")

    def _open_video(self) -> cv2.VideoCapture:
        video = cv2.VideoCapture(str(self.path))
        if not video.isOpened():
            video.release()
            raise CameraError(f"replay video {self.path} cannot be opened: not a video OpenCV can decode")
        self._video_frames_this_pass = 0
        return video

    def _next_image(self) -> tuple[np.ndarray, str]:
        """Decode the next frame (BGR) without pacing."""
        if self._video is not None:
            ok, image = self._video.read()
            if ok and image is not None:
                self._video_frames_this_pass += 1
                return image, f"{self.path.name}#{self._video_frames_this_pass - 1}"
            if self._video_frames_this_pass == 0:
                raise CameraError(f"replay video {self.path} has no decodable frames")
            if not self.loop:
                raise CameraEnded(f"replay of {self.path} ended after {self._video_frames_this_pass} frames")
            self._video.release()
            self._video = self._open_video()
            return self._next_image()
        if self._index >= len(self._files):
            if not self.loop:
                raise CameraEnded(f"replay of {self.path} ended after {len(self._files)} images")
            self._index = 0
        file = self._files[self._index]
        self._index += 1
        try:
            check_file(file)  # the header's size, before OpenCV decodes a picture too large for the device
        except ImageError as exc:
            raise FrameUnreadable(f"replay: {exc}; frame skipped") from None
        image = cv2.imread(str(file), cv2.IMREAD_COLOR)
        if image is None:
            raise FrameUnreadable(f"replay: image {file} cannot be read or decoded (corrupt?); frame skipped")
        return image, file.name

    def _wait_until_due(self) -> None:
        """Hold the frame until its slot. When the caller is late, deliver now and schedule from now: a
        real camera drops frames rather than catching up with a burst, and so does replay."""
        if self.fps <= 0:
            return
        now = self._clock()
        if self._due is None:
            self._due = now
        if now < self._due:
            self._sleep(self._due - now)
        self._due = max(self._due, now) + 1.0 / self.fps

    def _grab(self) -> tuple[np.ndarray, str]:
        bgr, source = self._next_image()
        rgb = bgr_to_rgb(bgr)
        self._last_full, self._last_source = rgb, source
        preview = fit_within(rgb, self.preview_size)
        self._wait_until_due()  # last, so the frame is stamped as close to its slot as possible
        return preview, source

    def _grab_still(self) -> tuple[np.ndarray, str]:
        """The latest frame at full size (the scene the preview just showed), or the next one at first."""
        if self._last_full is None:
            bgr, source = self._next_image()
            self._last_full, self._last_source = bgr_to_rgb(bgr), source
        return self._last_full.copy(), self._last_source

    def _close(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None
        self._last_full = None


BACKENDS = {"replay": ReplayCamera}
