"""Builders for valid records, so each test changes only what it is about."""

from __future__ import annotations

import datetime as dt
import functools
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import tomli_w
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from sync.protocol import wire
from sync.protocol.jpeg import jpeg_dimensions
from tests.conftest import shared_data_dir

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

FACES = shared_data_dir() / "faces" / "deepface"
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
    dims = jpeg_dimensions(data)
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


def too_deep_quality() -> dict:
    """A quality report nested one level deeper than the wire format accepts."""
    value: object = 1
    for level in range(wire.MAX_QUALITY_DEPTH + 1):
        value = {f"level{level}": value}
    return value  # type: ignore[return-value]


def key(seed: int) -> Ed25519PrivateKey:
    """Deterministic station keys keep failures reproducible."""
    return Ed25519PrivateKey.from_private_bytes(bytes([seed]) * 32)


# ----------------------------------------------------------------------------------------------
# Device side: a provisioned station's data directory and config, bookings in its real store, and
# the sync agent run in a thread. Shared by the agent, end-to-end and fault tests and the benchmark.
COUNTY_COMMAND_KEY_SEED = 77


@functools.lru_cache(maxsize=32)
def small_face(name: str = "img1.jpg", width: int = 96) -> tuple[bytes, int, int]:
    """A real face photo from ../shared/data/faces scaled down to ``width`` pixels (a few kB), so
    tests with hundreds of records stay fast while the bytes are still a real portrait."""
    img = cv2.imread(str(FACES / name))
    assert img is not None, f"cannot read {FACES / name}"
    height = round(img.shape[0] * width / img.shape[1])
    ok, buf = cv2.imencode(".jpg", cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA),
                           [cv2.IMWRITE_JPEG_QUALITY, 85])
    assert ok
    return buf.tobytes(), width, height


def store_booking(store: object, n: int, *, station: str = "st-01", face: tuple[bytes, int, int] | None = None,
                  profiles: bool = False, record_id: str | None = None) -> str:
    """Save booking ``n`` through the real store (one transaction, encrypted) and return its record id."""
    from appliance.store import Booking, Capture

    jpeg, width, height = face or small_face()
    vec = template(128, seed=n).floats()
    captures = [Capture.from_jpeg("frontal", jpeg, width, height, "ofc-1187",
                                  quality={"0x41": {"raw": 0.8, "score": 80}, "passed": True},
                                  template=list(vec), template_model="dlib-resnet-v1@1")]
    if profiles:
        captures.append(Capture.from_jpeg("left_profile", jpeg, width, height, "ofc-1187", quality={"yaw": 88.0}))
    booking = Booking("WA0170000", f"2026-{n:06d}", "ofc-1187", T0 + dt.timedelta(minutes=n), station)
    return store.save_booking(booking, captures, record_id=record_id)  # type: ignore[attr-defined]


@dataclass
class Station:
    """A provisioned station: DATA_DIR with keys/ as provisioning leaves it, and station.toml."""

    name: str
    data_dir: Path
    config_path: Path
    signing_key: Ed25519PrivateKey
    county_key: Ed25519PrivateKey

    def config(self) -> object:
        from sync.station.config import load_sync_config

        return load_sync_config(self.config_path, self.data_dir)

    def open_store(self) -> object:
        from appliance.store import Store

        return Store.open_data_dir(self.data_dir, floor_bytes=0)

    def rewrite(self, **sync: object) -> None:
        """Change [sync] keys (e.g. the broker port after a restart elsewhere)."""
        doc = tomllib.loads(self.config_path.read_text())
        doc.setdefault("sync", {}).update(sync)
        self.config_path.write_text(tomli_w.dumps(doc))


def make_station(directory: Path, pki: object, host: str, port: int, *, name: str = "st-01", county: str = "king",
                 signing_key: Ed25519PrivateKey | None = None, **sync: object) -> Station:
    """Lay out DATA_DIR/keys (tls.key, tls.crt, ca.crt, signing.key 0600, county-command.pub) and a
    station.toml with [station], [mqtt], [keys] as provisioning writes them, plus ``sync`` as [sync]."""
    from sync.county.gallery.devices import public_key_pem

    data_dir = directory / "data"
    keys = data_dir / "keys"
    keys.mkdir(parents=True, exist_ok=True)
    keys.chmod(0o700)
    cert, tls_key = pki.client(name)  # type: ignore[attr-defined]
    shutil.copy(cert, keys / "tls.crt")
    shutil.copy(tls_key, keys / "tls.key")
    shutil.copy(pki.ca_cert, keys / "ca.crt")  # type: ignore[attr-defined]
    signing = signing_key or key(1)
    (keys / "signing.key").write_bytes(signing.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    (keys / "signing.key").chmod(0o600)
    county_key = key(COUNTY_COMMAND_KEY_SEED)
    (keys / "county-command.pub").write_bytes(public_key_pem(county_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)))
    doc = {
        "station": {"county": county, "station": name},
        "mqtt": {"host": host, "port": port},
        "keys": {"tls_key": str(keys / "tls.key"), "tls_cert": str(keys / "tls.crt"), "ca_cert": str(keys / "ca.crt"),
                 "signing_key": str(keys / "signing.key"), "county_command_key": str(keys / "county-command.pub")},
        "sync": dict(sync),
    }
    config_path = directory / "station.toml"
    config_path.write_text(tomli_w.dumps(doc))
    return Station(name, data_dir, config_path, signing, county_key)


#: Fast retries for tests: a record without an ack is retried within about a second.
FAST = {"ack_timeout": 2.0, "retry_base": 0.2, "retry_cap": 1.0, "reconnect_min": 0.2, "reconnect_max": 1.0,
        "status_interval": 10.0}


class AgentThread:
    """The real SyncAgent run in a thread of the test process (as `booking-station sync` runs it)."""

    def __init__(self, station: Station) -> None:
        from sync.station.agent import SyncAgent

        self.agent = SyncAgent(station.config(), station.data_dir)  # type: ignore[arg-type]
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name="agent", daemon=True)

    def _run(self) -> None:
        try:
            self.agent.run(self.stop)
        except BaseException as exc:  # reported by close()
            self.error = exc

    def start(self, ready_timeout: float | None = 15.0) -> AgentThread:
        self.thread.start()
        if ready_timeout is not None:
            assert self.agent.ready.wait(ready_timeout), f"agent did not subscribe: {self.agent.last_error}"
        return self

    def close(self) -> None:
        self.stop.set()
        self.thread.join(30)
        assert not self.thread.is_alive(), "agent did not stop"
        if self.error is not None:
            raise self.error


def wait_for(predicate: Callable[[], object], timeout: float = 20.0, interval: float = 0.05,
             message: str = "condition") -> None:
    """Poll ``predicate`` until it is true; fail with ``message`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {message}")
        time.sleep(interval)


def spawn_agent(station: Station, log_path: Path) -> subprocess.Popen[bytes]:
    """``booking-station sync`` as its own process (``python -m sync.station.cli sync``), for tests
    that kill it; its log is appended to ``log_path``."""
    with log_path.open("ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "sync.station.cli", "sync", "--config", str(station.config_path),
             "--data-dir", str(station.data_dir)],
            stdout=log, stderr=subprocess.STDOUT, cwd=Path(__file__).resolve().parents[2],
        )
