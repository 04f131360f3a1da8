"""read_image: upright RGB from any photo we are given, a clear error naming the file for anything else."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.imageio import ImageError, _truncation, decode_image, read_image

MEDS = ("openmpf_meds", "meds-aa-S001-01")


@pytest.fixture(scope="module")
def meds_jpg(faces_dir: Path) -> Path:
    return faces_dir / MEDS[0] / f"{MEDS[1]}.jpg"


def test_reads_rgb_uint8(meds_jpg: Path) -> None:
    img = read_image(meds_jpg)
    assert img.dtype == np.uint8 and img.shape == (600, 480, 3)
    bgr = cv2.imread(str(meds_jpg), cv2.IMREAD_COLOR)
    assert np.array_equal(img, bgr[:, :, ::-1]), "channels come back in RGB order"


def test_exif_orientation_is_applied(faces_dir: Path, meds_jpg: Path) -> None:
    rotated = faces_dir / MEDS[0] / f"{MEDS[1]}-exif-rotation.jpg"
    raw = cv2.imread(str(rotated), cv2.IMREAD_COLOR | cv2.IMREAD_IGNORE_ORIENTATION)
    assert raw.shape[:2] == (480, 600), "the file stores its pixels sideways"
    upright, reference = read_image(rotated), read_image(meds_jpg)
    assert upright.shape == reference.shape
    assert np.abs(upright.astype(int) - reference).mean() < 2  # same photo, re-encoded


def test_tiff_and_png(faces_dir: Path, meds_jpg: Path) -> None:
    tif = read_image(faces_dir / MEDS[0] / f"{MEDS[1]}.tif")
    assert tif.shape == (600, 480, 3) and np.abs(tif.astype(int) - read_image(meds_jpg)).mean() < 2
    png = read_image(faces_dir / MEDS[0] / "person_cropped_2.png")  # RGBA on disk
    assert png.ndim == 3 and png.shape[2] == 3 and png.dtype == np.uint8


def test_grey_and_16_bit_images_become_8_bit_rgb(tmp_path: Path) -> None:
    grey = tmp_path / "grey.png"
    cv2.imwrite(str(grey), np.full((40, 30), 77, np.uint8))
    assert read_image(grey).shape == (40, 30, 3)
    deep = tmp_path / "deep.tif"
    cv2.imwrite(str(deep), np.full((20, 10, 3), 65535, np.uint16))
    out = read_image(deep)
    assert out.dtype == np.uint8 and out.shape == (20, 10, 3) and out.max() == 255


def _assert_error(path: Path, *words: str) -> None:
    with pytest.raises(ImageError) as info:
        read_image(path)
    message = str(info.value)
    assert str(path) in message, message
    for word in words:
        assert word in message, message


def test_missing_file(tmp_path: Path) -> None:
    _assert_error(tmp_path / "nowhere.jpg", "not found")


def test_directory(tmp_path: Path) -> None:
    _assert_error(tmp_path, "directory")


def test_empty_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    _assert_error(empty, "empty")


def test_not_an_image(tmp_path: Path) -> None:
    text = tmp_path / "notes.jpg"
    text.write_text("booking notes, not a photo\n" * 20)
    _assert_error(text, "not an image")


@pytest.mark.parametrize("keep", [0.999, 0.9, 0.5, 0.05])
def test_truncated_jpeg(tmp_path: Path, meds_jpg: Path, keep: float) -> None:
    data = meds_jpg.read_bytes()
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(data[: int(len(data) * keep)])
    _assert_error(cut, "truncated")


def test_jpeg_missing_only_its_end_marker(tmp_path: Path, meds_jpg: Path) -> None:
    cut = tmp_path / "cut.jpg"
    cut.write_bytes(meds_jpg.read_bytes()[:-2])
    _assert_error(cut, "truncated")


def test_jpeg_header_only(tmp_path: Path) -> None:
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    _assert_error(broken, "truncated")


def test_jpeg_end_check_sees_past_embedded_thumbnails(tmp_path: Path, faces_dir: Path) -> None:
    """img1.jpg carries EXIF/maker thumbnails, each with its own end marker, before the main image.

    The structural check is tested on its own as well because OpenCV 4 (the tflite-runtime setup)
    decodes a cut JPEG into a half-grey picture instead of failing.
    """
    data = (faces_dir / "deepface" / "img1.jpg").read_bytes()
    assert data.count(b"\xff\xd9") > 1
    assert _truncation(data) is None
    cut = data[: int(len(data) * 0.8)]
    assert b"\xff\xd9" in cut, "an embedded end marker survives the cut"
    assert _truncation(cut) is not None
    path = tmp_path / "cut-thumb.jpg"
    path.write_bytes(cut)
    _assert_error(path, "truncated")


def test_every_shared_jpeg_passes_the_end_check(faces_dir: Path) -> None:
    for jpg in sorted(faces_dir.glob("*/*.jpg")):
        assert _truncation(jpg.read_bytes()) is None, jpg


@pytest.mark.parametrize("name", ["person_cropped_2.png", "meds-aa-S001-01.tif"])
def test_truncated_png_and_tiff(tmp_path: Path, faces_dir: Path, name: str) -> None:
    data = (faces_dir / MEDS[0] / name).read_bytes()
    cut = tmp_path / f"cut-{name}"
    cut.write_bytes(data[: len(data) // 2])
    _assert_error(cut, "truncated")


def test_decode_image_names_its_source() -> None:
    with pytest.raises(ImageError, match="upload-7"):
        decode_image(b"\x89PNG\r\n\x1a\n garbage", name="upload-7")
