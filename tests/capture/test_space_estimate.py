"""The free space the early check asks for before a booking (`appliance.capture.space`): derived from the
capture standard and the camera, or from what recent bookings took, through the save's own rule."""

from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.capture.images import JPEG_QUALITY
from appliance.capture.space import (
    booking_bytes_needed,
    camera_frame_pixels,
    configured_image_bytes,
    jpeg_bytes_bound,
)
from appliance.quality.profile import load_profile
from appliance.store import Booking, Capture, DiskFullError, Store
from appliance.store.space import booking_write_bytes, human_bytes
from sync.protocol.record import MAX_TEMPLATE_DIM

GEOMETRY = load_profile("nist-sap30").geometry


def test_the_jpeg_bound_holds_for_real_face_photos_at_every_quality(faces_dir: Path) -> None:
    photos = sorted(p for p in faces_dir.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[:40]
    assert len(photos) >= 10, f"too few face photos under {faces_dir}"
    checked = 0
    for path in photos:
        image = cv2.imread(str(path))
        if image is None:
            continue
        pixels = image.shape[0] * image.shape[1]
        for quality in (60, 90, JPEG_QUALITY, GEOMETRY.jpeg_quality, 98, 100):
            ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
            assert ok and len(buf) <= jpeg_bytes_bound(pixels, quality), (path.name, quality, len(buf))
        checked += 1
    assert checked >= 10
    assert jpeg_bytes_bound(1_000_000, 100) > jpeg_bytes_bound(1_000_000, 95) > jpeg_bytes_bound(1_000_000, 80)


@pytest.mark.parametrize(("options", "expected"), [
    ({"width": 1920, "height": 1080}, 1920 * 1080),
    ({"still_size": [4056, 3040]}, 4056 * 3040),
    ({"still_size": [20000, 20000]}, 40_000_000),  # never above what the station reads at all
    ({}, 40_000_000),  # the sensor's full size is not known: the largest picture the station accepts
    ({"width": 1920}, 40_000_000),
    ({"still_size": "big"}, 40_000_000),
])
def test_a_camera_frame_is_what_the_options_say_else_max_pixels(options: dict, expected: int) -> None:
    assert camera_frame_pixels(options, 40_000_000) == expected


def test_the_need_follows_the_standard_the_camera_and_recent_bookings() -> None:
    frame = 1920 * 1080
    base = booking_bytes_needed(GEOMETRY, frame)
    images = jpeg_bytes_bound(GEOMETRY.width * GEOMETRY.height, GEOMETRY.jpeg_quality) + \
        2 * jpeg_bytes_bound(frame, JPEG_QUALITY)
    assert configured_image_bytes(GEOMETRY, frame) == images
    assert base == booking_write_bytes(images, 3 * MAX_TEMPLATE_DIM)  # the save's own rule, in one place
    bigger = dataclasses.replace(GEOMETRY, width=GEOMETRY.width * 2, height=GEOMETRY.height * 2)
    assert booking_bytes_needed(bigger, frame) > base
    finer = dataclasses.replace(GEOMETRY, jpeg_quality=100)
    assert booking_bytes_needed(finer, frame) > base
    assert booking_bytes_needed(GEOMETRY, 4 * frame) > base
    # A desk whose bookings carry scar/mark/tattoo photos: the measured size wins when it is larger.
    assert booking_bytes_needed(GEOMETRY, frame, [1000, 5 * images, 2000]) == \
        booking_write_bytes(5 * images, 3 * MAX_TEMPLATE_DIM)
    assert booking_bytes_needed(GEOMETRY, frame, [1000]) == base


def _jpeg(width: int, height: int) -> bytes:
    rng = np.random.default_rng(width)
    ok, buf = cv2.imencode(".jpg", rng.integers(0, 256, (height, width, 3), dtype=np.uint8))
    assert ok
    return buf.tobytes()


def test_the_store_reports_what_recent_bookings_took_newest_first(tmp_path: Path) -> None:
    sizes = []
    with Store.open_data_dir(tmp_path, floor_bytes=0) as store:
        assert store.recent_booking_image_bytes() == []
        for i, width in enumerate((64, 128, 96)):
            jpegs = [_jpeg(width, width), _jpeg(width + 1, width)]
            captures = [Capture.from_jpeg("frontal", jpegs[0], width, width, "ofc-1"),
                        Capture.from_jpeg("smt", jpegs[1], width + 1, width, "ofc-1", smt_description="tattoo")]
            booking = Booking(agency_ori="WA0170000", booking_number=f"2026-00{i}", operator_id="ofc-1",
                              captured_at=datetime(2026, 3, 1, 12, i, tzinfo=timezone.utc), station_id="st-01")
            store.save_booking(booking, captures)
            sizes.append(sum(len(j) for j in jpegs))
        assert store.recent_booking_image_bytes() == sizes[::-1]
        assert store.recent_booking_image_bytes(limit=2) == sizes[:0:-1]


def test_the_station_asks_for_the_derived_need_before_a_booking(bundle, tmp_path: Path) -> None:
    """`CaptureStation.from_config` wires the estimate in: the refusal names the size it asked for."""
    from appliance.capture.session.station import CaptureStation
    from appliance.config import StationConfig

    config = StationConfig()
    config.vision.bundle = str(bundle.root)
    config.camera.options = {"width": 1280, "height": 720}
    station = CaptureStation.from_config(config, data_dir=tmp_path, station_id="st-01", bundle=bundle,
                                         store_options={"floor_bytes": 1 << 60})
    expected = booking_bytes_needed(station.processor.profile.geometry, 1280 * 720)
    with pytest.raises(DiskFullError, match="Booking NOT started") as info:
        station.start_booking("WA0170000", "2026-000001", "ofc-1")
    assert f"a booking needs about {human_bytes(expected)}" in str(info.value)
    assert not (tmp_path / "station.db").exists()  # measuring recent bookings created no store
