"""picamera2 backend through the thinnest stand-in for the `picamera2` module (libcamera cannot exist on CI).

The stand-in implements only what the backend calls, serves a real face image as the "sensor", and
mimics two documented picamera2 behaviours the backend depends on: a configuration's "controls" replace
the active controls on every configure (so locks must be in both configurations), and "BGR888" arrays
are [R, G, B] per pixel while "RGB888" arrays are [B, G, R].
"""

from __future__ import annotations

import sys
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.camera import CameraError, open_camera
from appliance.camera.picamera2 import Picamera2Camera, validate_controls

LOCKS = {"AeEnable": False, "ExposureTime": 8000, "AnalogueGain": 2, "AwbEnable": False, "ColourGains": [1.9, 1.4]}


class FakePicamera2:
    cameras: list[dict] = [{"Model": "imx708", "Id": "/base/axi/pcie@120000/rp1/i2c@88000/imx708@1a"}]
    sensor_rgb: np.ndarray
    fail_open: Exception | None = None
    instances: list[FakePicamera2] = []

    def __init__(self, camera_num: int = 0) -> None:
        if self.fail_open is not None:
            raise self.fail_open
        self.camera_num = camera_num
        self.configured: list[dict] = []
        self.config: dict | None = None
        self.active_controls: dict = {}
        self.still_controls: dict | None = None
        self.started = self.stopped = self.closed = False
        FakePicamera2.instances.append(self)

    @staticmethod
    def global_camera_info() -> list[dict]:
        return list(FakePicamera2.cameras)

    def create_preview_configuration(self, main: dict, controls: dict) -> dict:
        return {"use_case": "preview", "main": {"format": "XBGR8888", "size": (640, 480)} | main, "controls": controls}

    def create_still_configuration(self, main: dict, controls: dict) -> dict:
        h, w = self.sensor_rgb.shape[:2]
        return {"use_case": "still", "main": {"format": "BGR888", "size": (w, h)} | main, "controls": controls}

    def configure(self, config: dict) -> None:
        size = config["main"]["size"]
        assert type(size) is tuple and size[0] % 2 == 0 and size[1] % 2 == 0, "picamera2 wants an even tuple"
        self.config = config
        self.configured.append(config)
        self.active_controls = dict(config["controls"])

    def start(self) -> None:
        self.started = True

    def _render(self) -> np.ndarray:
        assert self.started and self.config is not None
        rgb = cv2.resize(self.sensor_rgb, self.config["main"]["size"], interpolation=cv2.INTER_AREA)
        fmt = self.config["main"]["format"]
        return {"BGR888": rgb, "RGB888": rgb[:, :, ::-1]}[fmt].copy()

    def capture_array(self, name: str = "main") -> np.ndarray:
        assert name == "main"
        return self._render()

    def switch_mode_and_capture_array(self, config: dict, name: str = "main") -> np.ndarray:
        previous = self.config
        self.configure(config)
        self.still_controls = dict(self.active_controls)
        array = self.capture_array(name)
        self.configure(previous)
        return array

    def stop(self) -> None:
        self.stopped = True

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def sensor_rgb(deepface_dir: Path) -> np.ndarray:
    bgr = cv2.imread(str(deepface_dir / "img1.jpg"), cv2.IMREAD_COLOR)
    h, w = bgr.shape[:2]
    bgr = bgr[: h - h % 2, : w - w % 2]
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))


@pytest.fixture
def fake(monkeypatch: pytest.MonkeyPatch, sensor_rgb: np.ndarray) -> type[FakePicamera2]:
    module = types.ModuleType("picamera2")
    module.Picamera2 = FakePicamera2
    monkeypatch.setitem(sys.modules, "picamera2", module)
    monkeypatch.setattr(FakePicamera2, "cameras", list(FakePicamera2.cameras))
    monkeypatch.setattr(FakePicamera2, "sensor_rgb", sensor_rgb, raising=False)
    monkeypatch.setattr(FakePicamera2, "fail_open", None)
    monkeypatch.setattr(FakePicamera2, "instances", [])
    return FakePicamera2


def test_locked_controls_reach_preview_and_still_and_frames_come_back_rgb(fake, sensor_rgb: np.ndarray) -> None:
    camera = open_camera({"backend": "picamera2", "preview_size": [640, 480], "controls": LOCKS})
    (picam,) = fake.instances
    locked = {
        "AeEnable": False,
        "ExposureTime": 8000,
        "AnalogueGain": 2.0,
        "AwbEnable": False,
        "ColourGains": (1.9, 1.4),
    }
    with camera:
        assert picam.started
        assert picam.config["main"] == {"format": "BGR888", "size": (640, 480)}
        assert picam.active_controls == locked
        assert camera.resolution == (640, 480)

        frame = camera.read()
        expected = cv2.resize(sensor_rgb, (640, 480), interpolation=cv2.INTER_AREA)
        assert np.array_equal(frame.image, expected)  # RGB, not channel-swapped
        assert frame.sequence == 0

        still = camera.capture_still()
        assert still.size == (sensor_rgb.shape[1], sensor_rgb.shape[0])  # full sensor resolution
        assert np.array_equal(still.image, sensor_rgb)
        assert picam.still_controls == locked  # the still mode did not fall back to auto exposure/AWB
        assert picam.config["use_case"] == "preview"  # and the stream went back to preview
        assert picam.active_controls == locked
        assert camera.read().sequence == 2
    assert picam.stopped and picam.closed
    assert [c["use_case"] for c in picam.configured] == ["preview", "still", "preview"]


def test_still_size_and_camera_number_from_the_spec(fake) -> None:
    fake.cameras = fake.cameras + [{"Model": "imx477", "Id": "second"}]
    with open_camera("picamera2:1", still_size=[1200, 900]) as camera:
        (picam,) = fake.instances
        assert picam.camera_num == 1
        assert "imx477" in camera.description
        assert camera.capture_still().size == (1200, 900)
        assert picam.active_controls == {}  # no profile locks: libcamera's automatic modes


def test_not_installed_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "picamera2", None)  # makes `import picamera2` fail, even on a Pi
    hint = "picamera2 is only available on Raspberry Pi OS: apt install python3-picamera2"
    with pytest.raises(CameraError, match=hint):
        open_camera("picamera2")


def test_no_camera_attached(fake) -> None:
    fake.cameras = []
    with pytest.raises(CameraError, match="no camera attached"):
        open_camera("picamera2")
    assert fake.instances == []


def test_camera_number_not_present_lists_what_is(fake) -> None:
    with pytest.raises(CameraError, match=r"no picamera2 camera 2: libcamera finds 0: imx708"):
        open_camera("picamera2:2")


def test_busy_camera(fake) -> None:
    fake.fail_open = RuntimeError("Camera __init__ sequence did not complete.")
    with pytest.raises(CameraError, match="missing or busy"):
        open_camera("picamera2")


def test_capture_failure_mid_session_is_a_camera_error(fake) -> None:
    with open_camera("picamera2") as camera:
        (picam,) = fake.instances

        def broken(name: str = "main") -> np.ndarray:
            raise RuntimeError("Device timeout")

        picam.capture_array = broken
        with pytest.raises(CameraError, match="stopped delivering frames: Device timeout"):
            camera.read()
    assert picam.closed


def test_fixed_exposure_turns_auto_exposure_off() -> None:
    assert validate_controls({"ExposureTime": 10000}) == {"ExposureTime": 10000, "AeEnable": False}
    assert validate_controls({"ColourGains": (2, 1.5)}) == {"ColourGains": (2.0, 1.5), "AwbEnable": False}
    assert validate_controls({"AfMode": 0, "FrameDurationLimits": [33333, 33333]}) == {
        "AfMode": 0,
        "FrameDurationLimits": (33333, 33333),
    }


@pytest.mark.parametrize(
    ("controls", "message"),
    [
        ({"AeEnable": True, "ExposureTime": 10000}, "AeEnable = false"),
        ({"ExposureTime": 1.5}, "microseconds"),
        ({"AnalogueGain": 0.5}, ">= 1.0"),
        ({"AwbEnable": "no"}, "true or false"),
        ({"ColourGains": [1.0]}, "red_gain, blue_gain"),
        ({"exposure_time": 100}, "not a libcamera control name"),
    ],
)
def test_bad_controls_fail_before_the_camera_is_touched(controls: dict, message: str) -> None:
    with pytest.raises(CameraError, match=message):
        Picamera2Camera(controls=controls)


def test_odd_preview_size_is_refused() -> None:
    with pytest.raises(CameraError, match="even"):
        Picamera2Camera(preview_size=[641, 480])
