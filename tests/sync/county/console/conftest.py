"""Console fixtures: a gallery of real imported faces, a station record with a quality report and an
override, console accounts made with the CLI, and the real server (``booking-gallery serve``) on a free port.

The gallery (one per test session, read-only for the tests except for the audit log):

* one legacy photo per identity, imported with ``booking-gallery import`` from a CSV that names the shared
  photos in place (``LEG-<identity>``); the probe photos are other photos of the same people, never imported;
* one station record (``factory``: a real face, a failed-check quality report and the officer's override)
  so the record page has something to say about quality.
"""

from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyotp
import pytest
from click.testing import CliRunner

from sync.county.cli import main
from sync.county.enroll.ca import CountyCA
from sync.county.gallery.store import SQLiteStore
from sync.protocol import wire
from tests.conftest import read_labels, shared_data_dir
from tests.sync import factory

IDENTITIES = 6
PIN = "24681357"
STATION = "st-07"
STATION_BOOKING = "2026-000777"
OVERRIDE = "prisoner refused to face the camera"


@dataclass
class User:
    """A console account; ``code()`` gives a TOTP code of a step the server has not accepted yet."""

    user_id: str
    secret: str
    pin: str = PIN
    used: set[int] = field(default_factory=set)

    def code(self) -> str:
        totp = pyotp.TOTP(self.secret)
        step = max(int(time.time()) // 30, *(s + 1 for s in self.used), 0)
        if step > int(time.time()) // 30 + 1:  # both steps the server accepts now were used: wait for the next
            time.sleep(30 - time.time() % 30 + 0.1)
            step = int(time.time()) // 30 + 1
        self.used.add(step)
        return totp.generate_otp(step)


@dataclass
class Gallery:
    dir: Path
    config: Path
    db: Path
    accounts: Path
    booked: dict[str, tuple[str, str]]  # identity -> (booking number, record id)
    probes: dict[str, Path]  # identity -> another photo of that person (not in the gallery)
    station_record: str


def cli(config: Path, *args: object, stdin: str | None = None) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, ["--config", str(config), *map(str, args)], input=stdin,
                                catch_exceptions=False)
    return result.exit_code, result.stdout, result.stderr


def _station_record(db: Path) -> str:
    """A station booking with a real face, a quality report that failed one check, and an override."""
    key = factory.key(7)
    from cryptography.hazmat.primitives import serialization

    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    jpeg, width, height = factory.face_jpeg("img36.jpg")
    quality = {"pose": "frontal", "gated": True, "profile": "nist-sap30", "report": {
        "profile": "nist-sap30", "sap": 30, "passed": False, "faces": 1,
        "measures": {"eye_distance": {"raw": 61.0, "score": 40, "passed": False}},
        "guidance": [{"code": "too_far", "message": "Move the camera closer: the face is too small."}]}}
    front = wire.WireCapture.build("frontal", jpeg, width, height, quality=quality, template=factory.template(seed=9),
                                   override_reason=OVERRIDE)
    rec = factory.record(station=STATION, captures=(front,), booking=wire.WireBooking(
        ori="WA0170000", booking_number=STATION_BOOKING, operator="ofc-5150", captured_at=factory.T0))
    payload = wire.encode_record(rec, key)
    with SQLiteStore(db) as store:
        store.register_device(STATION, "king", raw)
        store.insert_record(wire.verify_record(payload, lambda kid: key.public_key()), payload)
        store.put_station_status(STATION, "king", {
            "v": 1, "state": "online", "county": "king", "station": STATION, "software": "booking-station 0.9.1",
            "at": "2026-03-01T14:31:00+00:00", "queue": {"pending": 2, "delivered": 40, "rejected": 0},
            "in_flight": 1, "oldest_pending_age_s": 12.5, "last_ack_at": None, "alarms": ["disk_low"],
            "disk": {"free_bytes": 300 * 2**20, "floor_bytes": 512 * 2**20}})
    return rec.record_id


@pytest.fixture(scope="session")
def gallery(tmp_path_factory: pytest.TempPathFactory, shared_data: Path) -> Gallery:
    folder = tmp_path_factory.mktemp("console")
    by_identity: dict[str, list[Path]] = {}
    for row in read_labels(shared_data_dir(), "single"):
        by_identity.setdefault(row["identity"], []).append(row["path"])
    chosen = sorted(i for i, paths in by_identity.items() if len(paths) >= 2)[:IDENTITIES]
    assert len(chosen) == IDENTITIES, f"the shared data has too few people with two photos: {chosen}"
    db, accounts = folder / "gallery.db", folder / "console-accounts.db"
    config = folder / "county.toml"
    config.write_text(f'[gallery]\ndb = "{db}"\n[search]\nengine = "faiss"\nfolder = "idx"\n'
                      f'[console]\ncounty = "Test County"\naccounts = "{accounts.name}"\nmax_upload_mb = 1\n',
                      encoding="utf-8")
    ca = CountyCA.init(folder / "ca", "king")
    manifest = folder / "legacy.csv"
    with manifest.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "booking_number", "ori", "captured_at", "pose"])
        writer.writeheader()
        for n, identity in enumerate(chosen):
            writer.writerow({"image": os.path.relpath(by_identity[identity][0], folder),
                             "booking_number": f"LEG-{identity}", "ori": "WA0170000",
                             "captured_at": f"2019-05-{n + 1:02d}T10:00:00Z", "pose": "F"})
    code, out, err = cli(config, "import", manifest, "--ca-dir", ca.directory, "--json")
    assert code == 0, out + err
    assert json.loads(out)["imported"] == IDENTITIES
    station_record = _station_record(db)
    with SQLiteStore(db) as store:
        booked = {i: (f"LEG-{i}", store.find_records(booking_number=f"LEG-{i}")[0].record_id) for i in chosen}
    return Gallery(folder, config, db, accounts, booked, {i: by_identity[i][1] for i in chosen}, station_record)


def add_user(gallery: Gallery, user_id: str) -> User:
    code, out, err = cli(gallery.config, "users", "add", user_id, "--pin-stdin", "--json", stdin=PIN + "\n")
    assert code == 0, out + err
    doc = json.loads(out)
    assert doc["totp_uri"].startswith("otpauth://totp/") and "Test%20County" in doc["totp_uri"]
    return User(user_id, doc["totp_secret"])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Server:
    url: str
    log: Path


@pytest.fixture(scope="session")
def server(gallery: Gallery) -> Iterator[Server]:
    port = free_port()
    log = gallery.dir / "serve.log"
    env = {**os.environ, "BOOKING_GALLERY_CONFIG": str(gallery.config)}
    with log.open("wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "sync.county.cli", "serve", "--port", str(port)],
                                stdout=fh, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            urllib.request.urlopen(url + "/signin", timeout=2).read()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"the console did not start: {log.read_text(errors='replace')}")
            time.sleep(0.1)
    yield Server(url, log)
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()

