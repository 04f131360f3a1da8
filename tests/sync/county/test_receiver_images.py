"""The gallery decodes each capture and refuses a record whose JPEG header (and so its width and height
fields) disagrees with the picture, or whose JPEG does not decode; nothing of such a record is stored."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from sync.county.gallery.receiver import GalleryReceiver, ReceiverConfig
from sync.county.gallery.store import SQLiteStore
from sync.protocol import wire
from sync.protocol.jpeg import jpeg_info
from tests.sync import factory

KEY = factory.key(1)
TOPIC = "booking/v1/king/st-01/records"
MEDS = Path("faces") / "openmpf_meds"


@pytest.fixture
def receiver(tmp_path: Path) -> Any:
    store = SQLiteStore(tmp_path / "g.db")
    store.register_device("st-01", "king", KEY.public_key().public_bytes(serialization.Encoding.Raw,
                                                                         serialization.PublicFormat.Raw))
    config = ReceiverConfig(county="king", ca_file="ca", cert_file="c", key_file="k", max_record_bytes=400_000)
    r = GalleryReceiver(config, store, clock=lambda: dt.datetime(2026, 3, 1, 15, tzinfo=dt.timezone.utc))
    yield r
    store.close()


def _send(receiver: GalleryReceiver, jpeg: bytes) -> wire.Ack:
    info = jpeg_info(jpeg)
    assert info is not None
    capture = factory.capture(jpeg=jpeg, width=info.width, height=info.height)
    capture = wire.WireCapture.build("frontal", jpeg, info.width, info.height, quality=capture.quality,
                                     template=capture.template)
    out = receiver.handle(TOPIC, wire.encode_record(factory.record(captures=(capture,)), KEY))
    assert out.ack is not None
    return out.ack


def test_upright_mug_shot_is_stored(receiver: GalleryReceiver, shared_data: Path) -> None:
    ack = _send(receiver, (shared_data / MEDS / "meds-aa-S001-01.jpg").read_bytes())
    assert ack.status == "stored"
    assert receiver.store.count_records() == 1


def test_sideways_jpeg_with_orientation_tag_is_refused(receiver: GalleryReceiver, shared_data: Path) -> None:
    """The header says 600x480 (the pixels are stored sideways); every viewer shows it 480x600."""
    ack = _send(receiver, (shared_data / MEDS / "meds-aa-S001-01-exif-rotation.jpg").read_bytes())
    assert ack.status == "rejected" and ack.reason == "jpeg_size_mismatch"
    [logged] = receiver.store.list_rejections()
    assert "header says 600x480" in logged.detail and "decodes to 480x600" in logged.detail
    assert receiver.store.count_records() == 0


def test_jpeg_that_does_not_decode_is_refused(receiver: GalleryReceiver, shared_data: Path) -> None:
    data = bytearray((shared_data / MEDS / "meds-aa-S001-01.jpg").read_bytes())
    i = 2
    while not 0xC0 <= data[i + 1] <= 0xC2:  # to the frame header
        i += 2 + int.from_bytes(data[i + 2:i + 4], "big")
    data[i + 4] = 7  # a sample precision no decoder supports; the size fields still read 480x600
    ack = _send(receiver, bytes(data))
    assert ack.status == "rejected" and ack.reason == "bad_jpeg"
    assert receiver.store.count_records() == 0


def _with_orientation(jpeg: bytes, orientation: int) -> bytes:
    """``jpeg`` with an EXIF APP1 segment holding only an orientation tag, right after SOI."""
    entry = b"\x12\x01\x03\x00\x01\x00\x00\x00" + orientation.to_bytes(2, "little") + b"\x00\x00"  # 0x0112, SHORT
    ifd = b"\x01\x00" + entry + b"\x00" * 4
    body = b"Exif\x00\x00" + b"II*\x00\x08\x00\x00\x00" + ifd
    return jpeg[:2] + b"\xff\xe1" + (len(body) + 2).to_bytes(2, "big") + body + jpeg[2:]


def test_nearly_square_sideways_jpeg_is_refused(receiver: GalleryReceiver, shared_data: Path) -> None:
    """647x641 stored sideways: both sides round to the same eighth, so the 1/8-scale check cannot tell
    it from an upright picture and the full decode decides."""
    import cv2

    img = cv2.resize(cv2.imread(str(shared_data / MEDS / "meds-aa-S001-01.jpg")), (647, 641))
    ok, buf = cv2.imencode(".jpg", img)
    assert ok
    assert _send(receiver, buf.tobytes()).status == "stored"
    ack = _send(receiver, _with_orientation(buf.tobytes(), 6))
    assert ack.status == "rejected" and ack.reason == "jpeg_size_mismatch"
    assert "decodes to 641x647" in receiver.store.list_rejections()[0].detail
    assert receiver.store.count_records() == 1
