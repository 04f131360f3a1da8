"""Camera specs: the string and table forms, clear errors for typos, and lazy backend imports."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from appliance.camera import CameraError, create_camera, parse_spec
from appliance.camera.opencv import GStreamerCamera, OpenCVCamera
from appliance.camera.picamera2 import Picamera2Camera
from appliance.camera.replay import ReplayCamera

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("spec", "backend", "options"),
    [
        ("replay:/srv/demo faces", "replay", {"path": "/srv/demo faces"}),
        ("opencv:0", "opencv", {"device": "0"}),
        ("OpenCV:/dev/video2", "opencv", {"device": "/dev/video2"}),
        ("gstreamer", "gstreamer", {}),
        (
            "gstreamer:nvarguscamerasrc ! video/x-raw(memory:NVMM), framerate=30/1 ! appsink",
            "gstreamer",
            {"pipeline": "nvarguscamerasrc ! video/x-raw(memory:NVMM), framerate=30/1 ! appsink"},
        ),
        ("picamera2", "picamera2", {}),
        ("picamera2:1", "picamera2", {"camera": "1"}),
        ({"backend": "opencv", "device": 2, "width": 1280}, "opencv", {"device": 2, "width": 1280}),
        ({"source": "replay:C:/x", "fps": 5}, "replay", {"path": "C:/x", "fps": 5}),
    ],
)
def test_spec_forms(spec, backend: str, options: dict) -> None:
    assert parse_spec(spec) == (backend, options)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("webcam:0", r"unknown camera backend .* \(known: gstreamer, opencv, picamera2, replay\)"),
        ("opencv:", "nothing after"),
        ({"device": 0}, "exactly one of 'backend'"),
        ({"backend": "opencv", "source": "opencv:0"}, "exactly one of 'backend'"),
        ({"source": "opencv:0", "device": 1}, "given twice"),
        ({"source": 0}, "spec string"),
        (42, "string or a table"),
    ],
)
def test_bad_specs_say_what_is_wrong(spec, message: str) -> None:
    with pytest.raises(CameraError, match=message):
        parse_spec(spec)


def test_create_picks_the_backend_class_without_opening() -> None:
    assert type(create_camera("replay:/nonexistent")) is ReplayCamera
    opencv = create_camera("opencv:0")
    assert type(opencv) is OpenCVCamera and opencv.device == 0
    assert type(create_camera("gstreamer")) is GStreamerCamera
    picam = create_camera("picamera2:1")
    assert type(picam) is Picamera2Camera and picam.camera_number == 1
    assert not picam.is_open


def test_unknown_option_lists_the_known_ones() -> None:
    message = r"unknown option\(s\) for camera backend 'replay': fsp \(known: path, fps, loop"
    with pytest.raises(CameraError, match=message):
        create_camera("replay:/srv/demo", fsp=10)


def test_overrides_win_over_the_spec() -> None:
    camera = create_camera({"source": "replay:/srv/demo", "fps": 5}, fps=0)
    assert camera.fps == 0


def test_backends_are_imported_only_when_chosen(deepface_dir: Path) -> None:
    """picamera2 exists only on Raspberry Pi OS: using another backend must not import its module."""
    code = (
        "import sys\n"
        "from appliance.camera import open_camera\n"
        f"with open_camera({('replay:' + str(deepface_dir / 'img10.jpg'))!r}, fps=0) as camera:\n"
        "    camera.read()\n"
        "names = ('picamera2', 'appliance.camera.picamera2', 'appliance.camera.opencv')\n"
        "loaded = [m for m in names if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "assert 'appliance.camera.replay' in sys.modules\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
