"""`booking-gallery import`: legacy mug shots from a CSV manifest or ANSI/NIST-ITL files, on real faces with
the installed model bundle, into a real SQLite gallery, signed by a real county CA's key.

Photos are named by path relative to the manifest (the shared data stays where it is; nothing is copied).
"""

from __future__ import annotations

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from click.testing import CliRunner

from sync.county.cli import main
from sync.county.enroll.ca import CountyCA
from sync.county.enroll.tokens import TokenStore
from sync.county.gallery.export import load_record
from sync.county.gallery.nist import export_record
from sync.county.gallery.store import SQLiteStore
from sync.county.intake import IMPORT_STATION
from sync.protocol import wire
from tests.sync import factory
from tests.sync.conftest import COUNTY

GOOD = ("img1.jpg", "img3.jpg", "img13.jpg")  # three people, one face each


def _manifest(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=["image", "booking_number", "ori", "captured_at", "pose"])
        writer.writeheader()
        writer.writerows(rows)
    return path


def _row(name: str, booking: str, *, ori: str = "WA0170000", when: str = "2019-05-01T10:00:00Z", pose: str = "F",
         folder: Path) -> dict[str, str]:
    return {"image": os.path.relpath(factory.FACES / name, folder), "booking_number": booking, "ori": ori,
            "captured_at": when, "pose": pose}


def _import(*args: object) -> Any:
    return CliRunner().invoke(main, ["import", *map(str, args)], catch_exceptions=False)


@pytest.fixture
def ca(tmp_path: Path) -> CountyCA:
    return CountyCA.init(tmp_path / "ca", COUNTY)


def test_import_twice_stores_once_and_a_bad_row_is_named(tmp_path: Path, ca: CountyCA, bundle: Any) -> None:
    rows = [_row(name, f"L-{n}", folder=tmp_path) for n, name in enumerate(GOOD)]
    rows.insert(1, _row("img14.jpg", "L-9", ori="WA123", folder=tmp_path))  # line 3: not an ORI
    rows.append(_row("couple.jpg", "L-8", folder=tmp_path))  # line 6: two faces
    rows.append(_row("img1.jpg", "L-0", folder=tmp_path))  # line 7: the same photo of the same booking again
    manifest = _manifest(tmp_path / "legacy.csv", rows)
    db = tmp_path / "g.db"

    first = _import(manifest, "--db", db, "--ca-dir", ca.directory, "--json")
    assert first.exit_code == 1, first.output  # some rows refused: said, and the rest imported
    summary = _json(first.output)
    assert (summary["imported"], summary["duplicates"]) == (3, 1)
    assert [(r["source"], r["reason"].split(" ")[0]) for r in summary["refused"]] == [
        ("legacy.csv line 3", "ori"), ("legacy.csv line 6", "2")]
    assert "not a 9-character NCIC ORI" in summary["refused"][0]["reason"]

    with SQLiteStore(db) as store:
        records = store.list_records()
        assert sorted(r.booking_number for r in records) == ["L-0", "L-1", "L-2"]
        device = store.get_device(IMPORT_STATION)
        assert device is not None and device.public_key == _raw(ca.command_public_key)
        for rec in records:
            assert rec.station == IMPORT_STATION and rec.operator == "legacy-import"
            verified = load_record(store, rec.record_id)  # re-verified with the county key
            assert verified.captures[0].quality == {"imported": True}
            [tpl] = store.templates(rec.record_id)
            vec = np.frombuffer(tpl.vector, "<f4")
            assert (tpl.pose, tpl.dim, tpl.model) == ("frontal", 128, bundle.embedding)
            assert 0.5 < float(np.linalg.norm(vec)) < 2.0
        audit = store.list_audit(action="import")
        assert audit and audit[0].details["imported"] == 3

    again = _import(manifest, "--db", db, "--ca-dir", ca.directory, "--json")
    summary = _json(again.output)
    assert (summary["imported"], summary["duplicates"]) == (0, 4)
    with SQLiteStore(db) as store:
        assert store.count_records() == 3
        angelina = next(r.record_id for r in store.list_records() if r.booking_number == "L-0")

    # the imported mug shots are searchable: another photo of the same person finds hers first
    found = CliRunner().invoke(main, ["search", str(factory.FACES / "img2.jpg"), "--db", str(db), "--json"],
                               catch_exceptions=False)
    assert found.exit_code == 0, found.output
    candidates = _json(found.output)["candidates"]
    assert candidates[0]["record_id"] == angelina and candidates[0]["station"] == IMPORT_STATION
    assert candidates[0]["distance"] < 0.6


def test_a_station_may_not_enrol_as_the_import_identity(ca: CountyCA) -> None:
    with pytest.raises(ValueError, match="reserved"):
        TokenStore.in_ca_dir(ca.directory).issue(ca.county, IMPORT_STATION)


def test_import_of_an_ansi_nist_file(tmp_path: Path, ca: CountyCA) -> None:
    jpeg, width, height = factory.face_jpeg("img20.jpg")
    record = factory.record(
        booking=wire.WireBooking("WA0170000", "N-77", "ofc-1", factory.T0),
        captures=(wire.WireCapture.build("frontal", jpeg, width, height),
                  wire.WireCapture.build("smt", factory.jpeg(), 48, 60, description="tattoo left arm")))
    eft = tmp_path / "legacy.eft"
    eft.write_bytes(export_record(record))
    db = tmp_path / "g.db"
    result = _import(eft, "--db", db, "--ca-dir", ca.directory, "--json")
    assert result.exit_code == 0, result.output
    assert (_json(result.output)["imported"], _json(result.output)["refused"]) == (1, [])  # the tattoo is no mug shot
    with SQLiteStore(db) as store:
        [rec] = store.list_records()
        assert (rec.station, rec.ori, rec.booking_number, rec.captured_at) == (
            IMPORT_STATION, "WA0170000", "N-77", factory.T0.replace(microsecond=0))
        assert load_record(store, rec.record_id).captures[0].jpeg == jpeg  # a baseline JPEG is kept as it is
        assert len(store.templates(rec.record_id)) == 1
    unreadable = tmp_path / "junk.eft"
    unreadable.write_bytes(b"not a transaction")
    bad = _import(unreadable, "--db", db, "--ca-dir", ca.directory)
    assert bad.exit_code == 2 and "junk.eft" in bad.output and "Traceback" not in bad.output


def test_a_killed_import_resumes_where_it_stopped(tmp_path: Path, ca: CountyCA) -> None:
    names = [f"img{n}.jpg" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12)]
    manifest = _manifest(tmp_path / "big.csv", [_row(n, f"K-{i}", folder=tmp_path) for i, n in enumerate(names)])
    db = tmp_path / "g.db"
    cmd = [sys.executable, "-m", "sync.county.cli", "import", str(manifest), "--db", str(db), "--ca-dir",
           str(ca.directory), "--jobs", "1"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            cwd=Path(__file__).resolve().parents[3])
    try:
        factory.wait_for(lambda: _count_while_created(db) >= 1, timeout=120, message="the first imported record")
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the importer and its worker, mid-import
        proc.wait(10)
    time.sleep(0.2)
    done = _count(db)
    assert 1 <= done < len(names), done
    result = _import(manifest, "--db", db, "--ca-dir", ca.directory, "--json")
    assert result.exit_code == 0, result.output
    summary = _json(result.output)
    assert (summary["imported"], summary["duplicates"]) == (len(names) - done, done)
    assert _count(db) == len(names)


def _count_while_created(db: Path) -> int:
    """0 until the importer has created the file AND written its schema (the file exists a moment before)."""
    from sync.county.gallery.store import NotAGalleryDatabaseError

    try:
        return _count(db) if db.exists() else 0
    except NotAGalleryDatabaseError:
        return 0


def _count(db: Path) -> int:
    with SQLiteStore(db, create=False) as store:
        return store.count_records()


def _json(output: str) -> dict[str, Any]:
    import json

    return json.loads(output.strip().splitlines()[-1])


def _raw(key: Any) -> bytes:
    from cryptography.hazmat.primitives import serialization

    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
