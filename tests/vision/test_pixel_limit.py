"""Bounded inputs: a picture larger than `[vision] max_pixels` is refused from its header, before a pixel
is decoded, with one line naming the file and both sizes; the device profile may lower the limit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from appliance.config import load_config
from appliance.imageio import DEFAULT_MAX_PIXELS, ImageError, decode_image, header_size, read_image

MEDS = Path("openmpf_meds") / "meds-aa-S001-01.jpg"


def lying_jpeg(data: bytes, width: int, height: int) -> bytes:
    """The same JPEG with its frame header (first SOF) claiming another size: a decoder would allocate
    for the claimed size, so only a header check keeps it away from the decoder."""
    i = 2
    while True:
        marker, length = data[i + 1], int.from_bytes(data[i + 2:i + 4], "big")
        if 0xC0 <= marker <= 0xC3:
            return data[:i + 5] + height.to_bytes(2, "big") + width.to_bytes(2, "big") + data[i + 9:]
        i += 2 + length


@pytest.fixture(scope="module")
def meds_bytes(faces_dir: Path) -> bytes:
    return (faces_dir / MEDS).read_bytes()


def test_header_sizes_match_the_decoded_pictures(meds_bytes: bytes) -> None:
    image = decode_image(meds_bytes)
    assert header_size(meds_bytes) == (image.shape[1], image.shape[0]) == (480, 600)
    for ext in (".png", ".bmp"):
        ok, encoded = cv2.imencode(ext, image[:, :333])
        assert ok
        assert header_size(encoded.tobytes()) == (333, 600), ext


def test_a_20000_by_20000_jpeg_is_refused_from_its_header(meds_bytes: bytes, tmp_path: Path) -> None:
    huge = tmp_path / "huge.jpg"
    huge.write_bytes(lying_jpeg(meds_bytes, 20000, 20000))
    assert header_size(huge.read_bytes()) == (20000, 20000)
    with pytest.raises(ImageError) as err:
        read_image(huge)
    message = str(err.value)
    assert "20000x20000" in message and "400.0 megapixels" in message and "40.0 megapixels" in message
    assert str(huge) in message and "\n" not in message


def test_the_limit_is_inclusive_and_applies_to_png(meds_bytes: bytes) -> None:
    image = decode_image(meds_bytes)
    assert decode_image(meds_bytes, limit=480 * 600).shape == (600, 480, 3)
    with pytest.raises(ImageError, match="480x600"):
        decode_image(meds_bytes, limit=480 * 600 - 1)
    ok, png = cv2.imencode(".png", image)
    with pytest.raises(ImageError, match="more than this station accepts"):
        decode_image(png.tobytes(), "x.png", limit=100_000)


def test_other_formats_are_checked_after_decoding(meds_bytes: bytes) -> None:
    ok, tiff = cv2.imencode(".tiff", decode_image(meds_bytes))
    assert header_size(tiff.tobytes()) is None
    with pytest.raises(ImageError, match="480x600"):
        decode_image(tiff.tobytes(), "x.tiff", limit=100_000)


def _write_config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "station.toml"
    path.write_text(text)
    return path


def test_default_device_profile_and_station_toml(tmp_path: Path) -> None:
    assert load_config(_write_config(tmp_path, "")).vision.max_pixels == DEFAULT_MAX_PIXELS == 40_000_000
    pi4 = '[station]\nprofile = "rpi4-usb-camera"\n'
    assert load_config(_write_config(tmp_path, pi4)).vision.max_pixels == 24_000_000
    own = pi4 + "[vision]\nmax_pixels = 12_000_000\n"
    assert load_config(_write_config(tmp_path, own)).vision.max_pixels == 12_000_000


def test_analyze_refuses_in_one_line_and_keeps_going(meds_bytes: bytes, faces_dir: Path, tmp_path: Path) -> None:
    huge = tmp_path / "huge.jpg"
    huge.write_bytes(lying_jpeg(meds_bytes, 20000, 20000))
    config = _write_config(tmp_path, "[vision]\nmax_pixels = 2_000_000\n")
    proc = subprocess.run([sys.executable, "-m", "appliance.cli", "--config", str(config), "analyze", str(huge),
                           str(faces_dir / MEDS)], capture_output=True, text=True, timeout=120, env=dict(os.environ))
    assert proc.returncode == 2
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "20000x20000" in errors[0] and "2.0 megapixels" in errors[0]
    assert "Traceback" not in proc.stderr
    assert "meds-aa-S001-01.jpg: 1 face(s)" in proc.stdout  # the image within the limit is still analysed


def test_replay_camera_refuses_an_oversized_still(meds_bytes: bytes, tmp_path: Path) -> None:
    from appliance.camera import CameraError, create_camera

    huge = tmp_path / "huge.jpg"
    huge.write_bytes(lying_jpeg(meds_bytes, 20000, 20000))
    camera = create_camera(f"replay:{huge}")
    with pytest.raises(CameraError, match="20000x20000"):
        camera.open()
