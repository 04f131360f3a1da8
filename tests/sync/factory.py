"""Builders for valid records, so each test changes only what it is about."""

from __future__ import annotations

import datetime as dt
import functools
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync import wire

FACES = Path(__file__).resolve().parents[3] / "shared" / "data" / "faces" / "deepface"
T0 = dt.datetime(2026, 3, 1, 14, 30, 5, 123456, tzinfo=dt.timezone.utc)


@functools.lru_cache(maxsize=16)
def jpeg(width: int = 48, height: int = 60, seed: int = 0) -> bytes:
    """A real (small) JPEG of the given size."""
    rng = np.random.default_rng(seed)
    img = rng.integers(0, 255, size=(height, width, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 80])
    assert ok
    return buf.tobytes()


def face_jpeg(name: str = "img1.jpg") -> tuple[bytes, int, int]:
    """A real face photo from ../shared/data/faces (never copied into the repo)."""
    data = (FACES / name).read_bytes()
    dims = wire.jpeg_dimensions(data)
    assert dims is not None
    return data, dims[0], dims[1]


def template(dim: int = 128, seed: int = 1) -> wire.WireTemplate:
    rng = np.random.default_rng(seed)
    vec = rng.standard_normal(dim).astype("<f4")
    vec /= np.linalg.norm(vec)
    return wire.WireTemplate(model="dlib-resnet-v1@1", dim=dim, values=vec.tobytes())


def capture(pose: str = "frontal", **changes: object) -> wire.WireCapture:
    base = wire.WireCapture.build(
        pose,
        jpeg(),
        48,
        60,
        quality={"0x41": {"raw": 0.83, "score": 83}, "yaw": -1.5, "passed": True, "failed": []},
        template=template() if pose == "frontal" else None,
        description="tattoo, left forearm, eagle" if pose == "smt" else None,
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def record(station: str = "st-01", county: str = "king", **changes: object) -> wire.WireRecord:
    base = wire.WireRecord(
        record_id=wire.uuid7(),
        station=station,
        county=county,
        booking=wire.WireBooking(ori="WA0170000", booking_number="2026-000123", operator="ofc-1187", captured_at=T0),
        captures=(capture("frontal"), capture("left_profile"), capture("smt")),
        created_at=T0 + dt.timedelta(seconds=2),
    )
    return replace(base, **changes)  # type: ignore[arg-type]


def key(seed: int) -> Ed25519PrivateKey:
    """Deterministic station keys keep failures reproducible."""
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)
