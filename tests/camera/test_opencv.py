"""OpenCV backend for real: a video file through cv2.VideoCapture (the same code path a V4L2 device takes for
reads and read failures), and devices that do not exist."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.camera import CameraEnded, CameraError, FrameUnreadable, open_camera
from appliance.camera.opencv import GStreamerCamera, OpenCVCamera, gstreamer_available, jetson_csi_pipeline


def decoded_frames(video: Path) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(video))
    frames = []
    while True:
        ok, bgr = capture.read()
        if not ok:
            break
        frames.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    capture.release()
    return frames


def test_reads_every_frame_in_rgb_then_reports_the_camera_stopped(meds_video: Path) -> None:
    expected = decoded_frames(meds_video)
    camera = open_camera(f"opencv:{meds_video}", max_failures=3, retry_delay=0)
    with camera:
        assert camera.resolution == (expected[0].shape[1], expected[0].shape[0])
        frames = [camera.read() for _ in expected]
        with pytest.raises(CameraError, match="stopped delivering frames") as excinfo:
            camera.read()
        # Fatal, not a skippable frame or a normal end: the session must stop and tell the officer.
        assert not isinstance(excinfo.value, (FrameUnreadable, CameraEnded))
        assert str(meds_video) in str(excinfo.value)
        with pytest.raises(CameraError, match="stopped delivering frames"):
            camera.read()
    assert all(np.array_equal(f.image, e) for f, e in zip(frames, expected, strict=True))
    assert [f.sequence for f in frames] == list(range(len(expected)))
    assert (np.diff([f.timestamp for f in frames]) >= 0).all()
    assert not camera.is_open


def test_failed_reads_are_retried_before_giving_up(meds_video: Path) -> None:
    sleeps: list[float] = []
    expected = len(decoded_frames(meds_video))
    with OpenCVCamera(str(meds_video), max_failures=4, retry_delay=0.2, sleep=sleeps.append) as camera:
        for _ in range(expected):
            camera.read()
        assert sleeps == []  # no retries while frames come
        with pytest.raises(CameraError, match="4 failed reads in a row"):
            camera.read()
    assert sleeps == [0.2, 0.2, 0.2]  # 4 attempts, a pause between each


def test_preview_size_scales_reads_while_stills_keep_full_resolution(meds_video: Path) -> None:
    expected = decoded_frames(meds_video)
    with OpenCVCamera(meds_video, preview_size=(320, 320), retry_delay=0) as camera:
        assert camera.full_resolution == (640, 480)
        assert camera.resolution == (320, 240)
        preview = camera.read()
        still = camera.capture_still()
    assert preview.size == (320, 240)
    assert still.size == (640, 480)
    assert np.array_equal(still.image, expected[1])


def test_missing_device_path_is_named() -> None:
    with pytest.raises(CameraError, match="missing") as excinfo:
        open_camera("opencv:/dev/video99")
    assert "/dev/video99" in str(excinfo.value)


def test_unopenable_index_says_missing_or_busy() -> None:
    with pytest.raises(CameraError, match="missing or busy") as excinfo:
        open_camera({"backend": "opencv", "device": 99})
    assert "camera 99" in str(excinfo.value)


def test_a_path_that_is_no_camera_says_missing_or_busy(tmp_path: Path) -> None:
    not_a_camera = tmp_path / "video0"
    not_a_camera.write_text("not a device")
    with pytest.raises(CameraError, match="missing or busy") as excinfo:
        open_camera(f"opencv:{not_a_camera}")
    assert str(not_a_camera) in str(excinfo.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"device": -1}, "0 or more"),
        ({"device": True}, "index or a path"),
        ({"width": 0}, "width"),
        ({"fourcc": "MJPEG"}, "fourcc"),
        ({"fps": "fast"}, "fps"),
        ({"max_failures": 0}, "max_failures"),
    ],
)
def test_bad_options_are_refused(options: dict, message: str) -> None:
    with pytest.raises(CameraError, match=message):
        OpenCVCamera(**options)


@pytest.mark.skipif(gstreamer_available(), reason="this OpenCV build has GStreamer; the message is for builds without")
def test_gstreamer_without_support_in_opencv_says_so() -> None:
    pipeline = "videotestsrc ! videoconvert ! video/x-raw, format=BGR ! appsink"
    with pytest.raises(CameraError, match="no GStreamer support") as excinfo:
        open_camera(f"gstreamer:{pipeline}")
    assert "python3-opencv" in str(excinfo.value)


def test_gstreamer_pipeline_must_end_in_appsink() -> None:
    with pytest.raises(CameraError, match="appsink"):
        open_camera("gstreamer:videotestsrc ! autovideosink")


def test_gstreamer_builds_the_jetson_csi_pipeline_when_none_is_given() -> None:
    camera = GStreamerCamera(sensor_id=1, width=1280, height=720, fps=60)
    assert camera.pipeline == jetson_csi_pipeline(1, 1280, 720, 60)
    assert camera.pipeline.startswith("nvarguscamerasrc sensor-id=1 ")
    assert "width=1280, height=720, framerate=60/1" in camera.pipeline
    assert camera.pipeline.endswith("appsink drop=true max-buffers=1")
    with pytest.raises(CameraError, match="built-in CSI pipeline only"):
        GStreamerCamera("videotestsrc ! appsink", width=640)
