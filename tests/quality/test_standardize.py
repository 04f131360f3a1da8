"""Standard crops: geometry achieved, eyes levelled, EXIF gone, refusals when the source cannot give it."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from appliance.imageio import decode_image
from appliance.quality import StandardizeError, load_profile, standardize
from tests.quality import synth


def _jpeg_segments(data: bytes) -> list[int]:
    """Marker bytes of the JPEG header segments up to the first scan."""
    markers, pos = [], 2
    while pos + 4 <= len(data) and data[pos] == 0xFF:
        marker = data[pos + 1]
        markers.append(marker)
        if marker == 0xDA:
            break
        pos += 2 + int.from_bytes(data[pos + 2:pos + 4], "big")
    return markers


@pytest.mark.parametrize("name,profile", [("meds-aa-S001-01.jpg", "nist-sap30"), ("img33.jpg", "nist-sap30"),
                                          ("img54.jpg", "nist-sap40"), ("img2.jpg", "icao")])
def test_geometry_is_achieved(name: str, profile: str, load, face_of) -> None:
    image = load(name)
    g = load_profile(profile).geometry
    out = standardize(image, face_of(image), g)
    assert out.image.shape == (g.height, g.width, 3)
    assert abs(out.eye_line_from_bottom - g.eye_line_from_bottom) <= g.eye_line_tolerance + 0.005
    assert abs(out.centre_offset) <= g.centre_tolerance + 0.005
    assert out.ied >= g.min_output_ied - 0.5
    assert out.scale <= g.max_upscale + 1e-9
    assert 0.40 <= out.head_width_ratio <= 0.65
    # The written JPEG decodes to the same geometry, and the face is found where the report says.
    decoded = decode_image(out.jpeg)
    assert decoded.shape == out.image.shape
    eyes = face_of(decoded).eyes
    assert abs(1 - eyes[:, 1].mean() / g.height - out.eye_line_from_bottom) < 0.01
    assert abs(np.linalg.norm(eyes[1] - eyes[0]) - out.ied) < 0.04 * out.ied


def test_jpeg_is_fresh_without_exif(load, face_of, faces_dir) -> None:
    source = faces_dir / "openmpf_meds" / "meds-aa-S001-01-exif-rotation.jpg"
    assert 0xE1 in _jpeg_segments(source.read_bytes()), "the test source must carry EXIF"
    image = load("meds-aa-S001-01-exif-rotation.jpg")
    out = standardize(image, face_of(image), load_profile("nist-sap30").geometry)
    markers = _jpeg_segments(out.jpeg)
    assert out.jpeg[:2] == b"\xff\xd8" and markers[0] == 0xE0  # JFIF APP0
    assert 0xE1 not in markers and not any(0xE2 <= m <= 0xEF for m in markers) and 0xFE not in markers


def test_tilted_source_comes_out_level(load, face_of) -> None:
    image = load("img54.jpg")
    face = face_of(image)
    (rx, ry), (lx, ly) = face.eyes
    before = -np.degrees(np.arctan2(ly - ry, lx - rx))
    tilted = synth.rotate(image, face, 12)
    out = standardize(tilted, face_of(tilted), load_profile("nist-sap30").geometry)
    assert out.rotation == pytest.approx(before + 12, abs=1.0)
    (rx, ry), (lx, ly) = face_of(out.image).eyes
    assert abs(np.degrees(np.arctan2(ly - ry, lx - rx))) < 1.0


def test_too_few_pixels_is_refused(load, face_of) -> None:
    image = load("img33.jpg")
    small = synth.downscale(image, face_of(image), 70)
    with pytest.raises(StandardizeError, match="too few pixels.*70 px between the eyes.*upscaling is limited to 5%"):
        standardize(small, face_of(small), load_profile("nist-sap30").geometry)


def test_head_at_the_edge_is_refused(load, face_of) -> None:
    image = load("img3.jpg")
    with pytest.raises(StandardizeError, match="too close to the edge.*top"):
        standardize(image, face_of(image), load_profile("nist-sap40").geometry)


def test_jpeg_quality_from_profile(load, face_of, tmp_path) -> None:
    (tmp_path / "nist-sap30.toml").write_text("[output]\njpeg_quality = 60\n")
    image = load("img33.jpg")
    face = face_of(image)
    low = standardize(image, face, load_profile("nist-sap30", tmp_path).geometry)
    high = standardize(image, face, load_profile("nist-sap30").geometry)
    assert low.jpeg_quality == 60 and len(low.jpeg) < len(high.jpeg)
    assert np.array_equal(low.image, high.image)
    ok = cv2.imdecode(np.frombuffer(low.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert ok is not None
