"""Device profiles: every shipped profile loads and validates, and mistakes in a profile file fail at load
time with a message naming the file, the key and what is allowed."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from firmware.profiles import PROFILE_DIR, DeviceProfile, DeviceProfileError, list_profiles, load_profile

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

SHIPPED = {
    "rpi5-camera-module-3": "picamera2",
    "rpi4-usb-camera": "opencv",
    "jetson-orin-nano-usb": "opencv",
    "jetson-orin-nano-csi": "gstreamer",
    "replay": "replay",
}


def test_the_expected_profiles_are_shipped() -> None:
    assert set(SHIPPED) <= set(list_profiles())


@pytest.mark.parametrize("name", list_profiles())
def test_every_shipped_profile_loads(name: str) -> None:
    profile = load_profile(name)
    assert isinstance(profile, DeviceProfile)
    assert profile.name == name and profile.description and profile.hardware
    assert profile.vision.embedding in ("float32", "float16")
    assert profile.vision.threads >= 1
    if name in SHIPPED:
        assert profile.camera.backend == SHIPPED[name]
    spec = profile.camera_spec(source="/srv/demo" if profile.camera.source is None else None)
    assert spec["backend"] == profile.camera.backend
    assert spec["preview_size"] == list(profile.camera.preview_size)
    # By path works as well as by name, and gives the same profile.
    assert load_profile(PROFILE_DIR / f"{name}.toml") == profile


def test_only_the_slowest_board_makes_single_chip_templates() -> None:
    """Averaging chips costs ~4x the embedding per capture: the 2 GB Pi 4 turns it off, the rest keep it."""
    from appliance.config import build_config

    jitter = {name: build_config({"station": {"device_profile": name}}, "t.toml").vision.template_jitter
              for name in list_profiles()}
    assert jitter.pop("rpi4-usb-camera") is False and all(jitter.values())


def test_profiles_of_one_fleet_agree_on_the_embedding_model() -> None:
    """The gallery never compares templates of different models: the shipped fleet uses one."""
    assert {load_profile(name).vision.embedding for name in SHIPPED} == {"float32"}


def test_picamera2_profile_maps_to_libcamera_controls() -> None:
    profile = load_profile("rpi5-camera-module-3")
    controls = profile.camera.controls
    assert controls is not None
    assert (controls.autofocus, controls.exposure, controls.white_balance) == ("continuous", "auto", "auto")
    spec = profile.camera_spec()
    assert spec["camera"] == "0" and spec["still_size"] == [4608, 2592] and spec["preview_size"] == [640, 360]
    assert spec["controls"] == {"AfMode": 2, "FrameDurationLimits": [33333, 33333], "AeEnable": True,
                                "AwbEnable": True}


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_every_shipped_profile_builds_its_real_camera_backend(name: str) -> None:
    """The spec uses each backend's own option names: the real constructor accepts it (no device is opened)."""
    from appliance.camera.base import create_camera

    profile = load_profile(name)
    camera = create_camera(profile.camera_spec(source="/srv/demo" if profile.camera.source is None else None))
    assert camera.backend == profile.camera.backend and not camera.is_open


def test_jetson_csi_profile_is_an_nvargus_pipeline_into_appsink(tmp_path: Path) -> None:
    profile = load_profile("jetson-orin-nano-csi")
    source = profile.camera.source
    assert source is not None
    assert source.startswith("nvarguscamerasrc") and source.rsplit("!", 1)[-1].strip().startswith("appsink")
    assert profile.camera_spec() == {"backend": "gstreamer", "pipeline": source, "preview_size": [640, 480]}
    # The profile's resolution and the pipeline's caps cannot drift apart.
    text = (PROFILE_DIR / "jetson-orin-nano-csi.toml").read_text().replace("resolution = [1920, 1080]",
                                                                          "resolution = [1280, 720]")
    with pytest.raises(DeviceProfileError, match="caps must say width=1280, height=720"):
        _load(tmp_path, text)


def test_replay_profile_drives_the_real_replay_camera(shared_data: Path) -> None:
    from appliance.camera.base import create_camera

    profile = load_profile("replay")
    with pytest.raises(DeviceProfileError, match="names no camera source"):
        profile.camera_spec()
    camera = create_camera(profile.camera_spec(source=str(shared_data / "faces" / "deepface")), fps=0)
    with camera:
        frame = camera.read()
    width, height = frame.size
    assert width <= 640 and height <= 480  # fitted into the profile's preview box


def test_unknown_profile_name_lists_the_shipped_ones() -> None:
    with pytest.raises(DeviceProfileError) as caught:
        load_profile("rpi6")
    assert "no device profile named 'rpi6'" in str(caught.value)
    assert "rpi5-camera-module-3" in str(caught.value)


# --- mistakes in a profile file ----------------------------------------------------------------------

BASE = """
[profile]
description = "test"
hardware = "test bench"

[camera]
backend = "opencv"
source = "0"
resolution = [1280, 720]

[vision]
threads = 2
"""


def _load(tmp_path: Path, text: str) -> DeviceProfile:
    path = tmp_path / "custom.toml"
    path.write_text(text)
    return load_profile(path)


def test_a_custom_profile_by_path(tmp_path: Path) -> None:
    profile = _load(tmp_path, BASE)
    assert profile.name == "custom" and profile.camera.resolution == (1280, 720)
    assert profile.camera_spec() == {"backend": "opencv", "device": "0", "preview_size": [640, 480], "fps": 30.0,
                                     "width": 1280, "height": 720}


@pytest.mark.parametrize(("change", "message"), [
    (("threads = 2", "threads = 2\nthread = 4"), "unknown key(s) thread (known: embedding, threads, delegate"),
    (("[vision]", "[vison]"), "unknown table(s) vison"),
    (('source = "0"', 'source = "0"\nresolutoin = [1, 2]'), "unknown key(s) resolutoin"),
    (('backend = "opencv"', 'backend = "v4l2"'), "backend = 'v4l2' is not one of picamera2, opencv, gstreamer, replay"),
    (("threads = 2", "threads = 0"), "threads must be an integer from 1 to 64, got 0"),
    (("threads = 2", 'threads = "2"'), "threads must be an integer"),
    (("threads = 2", 'embedding = "int8"'), "embedding = 'int8' is not one of float32, float16"),
    (("resolution = [1280, 720]", "resolution = [1280]"), "resolution must be [width, height]"),
    (("resolution = [1280, 720]", "resolution = [320, 240]"), "preview_size [640, 480] is larger than resolution"),
    (('source = "0"\n', ""), "the opencv backend needs a source"),
    (('source = "0"', 'source = "0"\nloop = true'), "loop (true/false) is only for the replay backend"),
    (('source = "0"', 'source = "0"\n[camera.controls]\nexposure = "lock"'),
     "[camera.controls] is only for the picamera2 backend"),
    (("threads = 2", 'delegate = "libgpu.so"'), "delegate must be the absolute path"),
    (('hardware = "test bench"\n', ""), "missing key 'hardware'"),
])
def test_mistakes_are_reported_with_file_and_key(tmp_path: Path, change: tuple[str, str], message: str) -> None:
    old, new = change
    assert old in BASE
    with pytest.raises(DeviceProfileError) as caught:
        _load(tmp_path, BASE.replace(old, new, 1))
    assert message in str(caught.value)
    assert "custom.toml" in str(caught.value)


PICAM = BASE.replace('backend = "opencv"', 'backend = "picamera2"') + "\n[camera.controls]\n"


@pytest.mark.parametrize(("controls", "message"), [
    ('exposure = "locked"', "exposure = 'locked' needs exposure_time_us and analogue_gain"),
    ("exposure_time_us = 10000", "only used with exposure = 'locked'"),
    ('exposure = "locked"\nexposure_time_us = 50000\nanalogue_gain = 1.0', "longer than one frame at 30 fps"),
    ('exposure = "lock"', "exposure = 'lock' is not one of auto, locked"),
    ('white_balance = "locked"', "colour_gains is required with"),
    ('autofocus = "manual"', "autofocus = 'manual' needs lens_position"),
    ('autofocus = "macro"', "autofocus = 'macro' is not one of continuous, auto, manual"),
    ("colour_gains = [1.5]", "colour_gains must be [red, blue]"),
    ("shutter = 1", "unknown key(s) shutter"),
])
def test_picamera2_control_mistakes(tmp_path: Path, controls: str, message: str) -> None:
    with pytest.raises(DeviceProfileError, match=None) as caught:
        _load(tmp_path, PICAM.replace("[vision]\nthreads = 2\n", "") + controls + "\n[vision]\nthreads = 2\n")
    assert message in str(caught.value)


def test_manual_picamera2_controls_map_to_libcamera(tmp_path: Path) -> None:
    controls = ('autofocus = "manual"\nlens_position = 1.0\nexposure = "locked"\nexposure_time_us = 8000\n'
                'analogue_gain = 2.0\nwhite_balance = "locked"\ncolour_gains = [1.8, 1.4]\n')
    profile = _load(tmp_path, PICAM.replace("[vision]\nthreads = 2\n", "") + controls + "\n[vision]\nthreads = 2\n")
    spec = profile.camera_spec()
    assert spec["controls"] == {
        "AfMode": 0, "LensPosition": 1.0, "FrameDurationLimits": [33333, 33333], "AeEnable": False,
        "ExposureTime": 8000, "AnalogueGain": 2.0, "AwbEnable": False, "ColourGains": [1.8, 1.4]}
    from appliance.camera.picamera2 import validate_controls

    assert validate_controls(spec["controls"])["AeEnable"] is False  # the backend accepts what we produce


def test_shipped_files_are_plain_toml_with_only_known_tables() -> None:
    for path in PROFILE_DIR.glob("*.toml"):
        assert set(tomllib.loads(path.read_text())) <= {"profile", "camera", "vision"}, path
