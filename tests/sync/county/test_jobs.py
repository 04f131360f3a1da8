"""The gallery's work queue: jobs committed with their record, claimed once, retried, taken over after a
crash, shown by ``booking-gallery status``; on SQLite and on a private PostgreSQL (pgserver), and a gallery
worker killed with SIGKILL in the middle of an export."""

from __future__ import annotations

import datetime as dt
import json
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from sync.county.gallery import nist
from sync.county.gallery.export import ExportConfigError, ExportSettings
from sync.county.gallery.exporters import export_handlers
from sync.county.gallery.receiver import GalleryReceiver, ReceiverConfig
from sync.county.gallery.status_cli import status_cmd
from sync.county.gallery.store import (
    GalleryStore,
    PendingInsert,
    PostgresStore,
    RecordConflictError,
    RecordFieldError,
    SQLiteStore,
)
from sync.county.gallery.worker import JobWorker, RetryPolicy
from sync.protocol import topics, wire
from tests.sync import factory
from tests.sync.county.test_nist import real_record

REPO = Path(__file__).resolve().parents[3]
KEY = factory.key(1)
RAW = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
TOPIC = topics.records_topic("king", "st-01")
T = dt.datetime(2026, 3, 1, 12, tzinfo=dt.timezone.utc)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GalleryStore]:
    if request.param == "sqlite":
        s: GalleryStore = SQLiteStore(tmp_path / "gallery.db")
    else:
        s = PostgresStore(request.getfixturevalue("pg_uri"), schema=f"jobs_{uuid.uuid4().hex[:12]}")
    s.register_device("st-01", "king", RAW)
    try:
        yield s
    finally:
        if isinstance(s, PostgresStore):
            s.drop_schema()
        s.close()


def verified(rec: wire.WireRecord) -> tuple[wire.VerifiedRecord, bytes]:
    payload = wire.encode_record(rec, KEY)
    return wire.verify_record(payload, lambda kid: KEY.public_key()), payload


def test_jobs_commit_with_their_record_and_are_claimed_once(store: GalleryStore) -> None:
    rec = factory.record()
    v, payload = verified(rec)
    assert store.insert_record(v, payload, received_at=T, jobs=("export:ansi-nist", "index")) == "stored"
    assert store.insert_record(v, payload, received_at=T, jobs=("export:ansi-nist", "index")) == "duplicate"
    assert sorted((j.kind, j.state) for j in store.list_jobs()) == [("export:ansi-nist", "pending"),
                                                                    ("index", "pending")]
    claimed = store.claim_jobs("w-a", ("export:ansi-nist", "index"), now=T)
    assert len(claimed) == 2 and {j.record_id for j in claimed} == {rec.record_id}
    assert store.claim_jobs("w-b", ("export:ansi-nist", "index"), now=T) == []  # nobody gets them twice
    export_job = next(j for j in claimed if j.kind == "export:ansi-nist")
    index_job = next(j for j in claimed if j.kind == "index")
    store.finish_job(export_job, "/spool/x.eft", now=T)
    store.fail_job(index_job, "OSError: disk full", retry_in=60, now=T)
    assert store.claim_jobs("w-b", ("index",), now=T + dt.timedelta(seconds=30)) == []  # backing off
    (again,) = store.claim_jobs("w-b", ("index",), now=T + dt.timedelta(seconds=61))
    assert again.id == index_job.id and again.attempts == 2 and again.last_error == "OSError: disk full"

    summary = store.job_summary()
    assert summary.kinds["export:ansi-nist"].done == 1 and summary.kinds["export:ansi-nist"].waiting == 0
    assert summary.kinds["index"].running == 1 and summary.retrying == 1 and summary.waiting == 1
    assert summary.last_error == "OSError: disk full" and summary.last_error_kind == "index"
    assert summary.oldest_waiting == T


def test_a_conflicting_record_enqueues_nothing(store: GalleryStore) -> None:
    rec = factory.record()
    v, payload = verified(rec)
    store.insert_record(v, payload, received_at=T)
    other, other_payload = verified(factory.record(record_id=rec.record_id, created_at=T))
    with pytest.raises(RecordConflictError):
        store.insert_record(other, other_payload, received_at=T, jobs=("export:ansi-nist",))
    assert store.list_jobs() == []


def test_a_dead_workers_claims_are_taken_over_or_released(store: GalleryStore) -> None:
    for _ in range(3):
        v, payload = verified(factory.record())
        store.insert_record(v, payload, received_at=T, jobs=("export:ansi-nist",))
    held = store.claim_jobs("w-a", ("export:ansi-nist",), limit=2, lease=60, now=T)
    assert len(held) == 2
    # Another worker takes over only once the lease has run out.
    assert len(store.claim_jobs("w-b", ("export:ansi-nist",), now=T + dt.timedelta(seconds=30))) == 1
    taken = store.claim_jobs("w-b", ("export:ansi-nist",), now=T + dt.timedelta(seconds=61))
    assert {j.id for j in taken} == {j.id for j in held}
    # The same identity starting again hands back what its earlier process held.
    assert store.release_claims("w-b") == 3
    assert len(store.list_jobs(state="pending")) == 3


def test_failed_jobs_wait_for_county_it(store: GalleryStore) -> None:
    v, payload = verified(factory.record())
    store.insert_record(v, payload, received_at=T, jobs=("export:ansi-nist",))
    (job,) = store.claim_jobs("w", ("export:ansi-nist",), now=T)
    store.fail_job(job, "not a valid transaction", retry_in=None, now=T)
    assert store.claim_jobs("w", ("export:ansi-nist",), now=T + dt.timedelta(days=30)) == []
    assert store.job_summary().failed == 1
    assert store.retry_failed_jobs(now=T) == 1
    assert [j.id for j in store.claim_jobs("w", ("export:ansi-nist",), now=T)] == [job.id]


def test_group_commit_stores_each_record_or_refuses_it_alone(store: GalleryStore) -> None:
    known = factory.record()
    v, payload = verified(known)
    store.insert_record(v, payload, received_at=T)
    fresh = [verified(factory.record()) for _ in range(3)]
    clash = verified(factory.record(record_id=known.record_id, created_at=T))
    bad = verified(factory.record())
    object.__setattr__(bad[0].record, "station", "Bad Station")  # a record built by other means than the wire
    batch = [PendingInsert(fv, fp, T, ("export:ansi-nist",)) for fv, fp in fresh]
    batch += [PendingInsert(v, payload, T, ("export:ansi-nist",)), PendingInsert(*clash, T),
              PendingInsert(*bad, T)]
    results = store.insert_records(batch)
    assert results[:4] == ["stored", "stored", "stored", "duplicate"]
    assert isinstance(results[4], RecordConflictError) and isinstance(results[5], RecordFieldError)
    assert store.count_records() == 4
    assert len(store.list_jobs()) == 4  # three new records and the duplicate's missing job


def test_an_existing_database_gains_the_queue_on_open(tmp_path: Path) -> None:
    db = tmp_path / "old.db"
    SQLiteStore(db).close()
    conn = sqlite3.connect(db)
    conn.execute("DROP TABLE jobs")  # as a gallery database from before the work queue
    conn.commit()
    conn.close()
    with SQLiteStore(db) as store:
        assert store.list_jobs() == [] and store.job_summary().waiting == 0


def test_unknown_export_format_is_a_config_error() -> None:
    with pytest.raises(ExportConfigError, match=r"unknown export format 'jpeg-zip' \(known: ansi-nist\)"):
        ExportSettings.from_mapping({"formats": ["jpeg-zip"]})
    with pytest.raises(ExportConfigError, match="non-empty list"):
        ExportSettings.from_mapping({"formats": "ansi-nist"})
    assert ExportSettings.from_mapping({"formats": ["ansi-nist"]}).formats == ("ansi-nist",)


# ------------------------------------------------------------------------- ack first, export after
@click.group()
def cli() -> None:
    """Stand-in for booking-gallery's main group."""


cli.add_command(status_cmd)


def test_the_ack_does_not_wait_for_an_unwritable_export_folder(tmp_path: Path) -> None:
    """The folder cannot be made (a file is in its place): the record is stored and acked, its export job
    is retried and shown by ``status``, and succeeds, once, when the folder is fixed."""
    db, folder = tmp_path / "g.db", tmp_path / "spool"
    folder.write_text("not a folder")
    store = SQLiteStore(db)
    store.register_device("st-01", "king", RAW)
    jobs = JobWorker(store, export_handlers(store, ExportSettings(), folder), worker_id="gallery.king",
                     policy=RetryPolicy(first=0.05))
    receiver = GalleryReceiver(ReceiverConfig(county="king", ca_file="ca", cert_file="c", key_file="k"), store,
                               jobs=jobs)
    rec = real_record()
    try:
        assert receiver.handle(TOPIC, wire.encode_record(rec, KEY)).ack == wire.Ack(rec.record_id, "stored")
        assert store.get_record(rec.record_id) is not None
        assert jobs.drain() == 1 and jobs.stats["retried"] == 1

        r = CliRunner().invoke(cli, ["status", "--db", str(db), "--json"])
        assert r.exit_code == 1, r.output
        doc = json.loads(r.output)
        assert doc["records"] == 1 and doc["waiting"] == 1 and doc["retrying"] == 1 and doc["failed"] == 0
        assert doc["kinds"]["export:ansi-nist"]["retrying"] == 1 and doc["oldest_waiting_age_s"] >= 0
        assert doc["last_error"]["record_id"] == rec.record_id and "spool" in doc["last_error"]["error"]
        r = CliRunner().invoke(cli, ["status", "--db", str(db)])
        assert r.exit_code == 1
        assert "1 record(s) stored; 1 job(s) waiting" in r.output and "1 retrying, 0 failed" in r.output
        assert f"export:ansi-nist of record {rec.record_id}:" in r.output

        folder.unlink()  # county IT fixes the folder
        time.sleep(0.2)  # past the backoff
        assert jobs.drain() == 1 and jobs.drain() == 0
        assert (folder / f"{rec.record_id}.eft").read_bytes() == nist.export_record(rec)
        r = CliRunner().invoke(cli, ["status", "--db", str(db), "--json"])
        assert r.exit_code == 0, r.output
        assert json.loads(r.output)["kinds"]["export:ansi-nist"] == {
            "waiting": 0, "pending": 0, "running": 0, "retrying": 0, "failed": 0, "done": 1,
            "oldest_waiting_age_s": None}
    finally:
        store.close()


def test_status_of_a_missing_database_is_a_usage_error(tmp_path: Path) -> None:
    r = CliRunner().invoke(cli, ["status", "--db", str(tmp_path / "none.db")])
    assert r.exit_code == 2 and "does not exist" in r.output and not (tmp_path / "none.db").exists()


# --------------------------------------------------------------------------------- SIGKILL mid-export
KILLED_WORKER = """
import os, sys, time
from pathlib import Path
from sync.county.gallery.export import ExportSettings
from sync.county.gallery.exporters import export_handlers
from sync.county.gallery.store import SQLiteStore
from sync.county.gallery.worker import JobWorker

db, folder, flag = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
real_replace, calls = os.replace, []

def stall(src, dst):  # the third file is written in full but never renamed into place
    calls.append(dst)
    if len(calls) == 3:
        flag.write_text(str(dst))
        time.sleep(3600)
    real_replace(src, dst)

os.replace = stall
store = SQLiteStore(db)
JobWorker(store, export_handlers(store, ExportSettings(), folder), worker_id="gallery.king", batch=2).start()
time.sleep(3600)
"""


def test_a_worker_killed_mid_export_loses_nothing_and_exports_each_record_once(tmp_path: Path) -> None:
    db, folder, flag = tmp_path / "g.db", tmp_path / "spool", tmp_path / "stalled"
    store = SQLiteStore(db)
    store.register_device("st-01", "king", RAW)
    records = [real_record() for _ in range(6)]
    for rec in records:
        v, payload = verified(rec)
        store.insert_record(v, payload, jobs=("export:ansi-nist",))
    proc = subprocess.Popen([sys.executable, "-c", KILLED_WORKER, str(db), str(folder), str(flag)], cwd=REPO,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while not flag.exists():
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[0].decode()[-2000:]
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    assert len(list(folder.glob("*.eft"))) == 2  # two done before the kill, the third never renamed
    assert len(store.list_jobs(state="running")) == 2  # the stalled one and the rest of its batch

    jobs = JobWorker(store, export_handlers(store, ExportSettings(), folder), worker_id="gallery.king")
    jobs.start()  # the same worker identity: its dead claims are handed back at once
    try:
        deadline = time.monotonic() + 60
        while store.job_summary().waiting and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        jobs.stop()
    ids = {r.record_id for r in records}
    assert {p.stem for p in folder.glob("*.eft")} == ids and len(list(folder.glob("*.eft"))) == 6
    assert {p.name for p in (folder / ".exported").iterdir()} == ids
    for rec in records:
        assert (folder / f"{rec.record_id}.eft").read_bytes() == nist.export_record(rec)
    done = store.list_jobs(state="done")
    assert len(done) == 6 and store.job_summary().waiting == 0 and store.job_summary().failed == 0
    assert jobs.stats["done"] == 4  # only the four unfinished ones ran again: no export was done twice
    store.close()


def test_receiver_enqueues_what_its_worker_runs(tmp_path: Path) -> None:
    """The place for further kinds (a search index): a handler in the worker is enqueued with each record."""
    store = SQLiteStore(tmp_path / "g.db")
    store.register_device("st-01", "king", RAW)
    seen: list[str] = []

    def index(job: Any) -> str:
        seen.append(job.record_id)
        return "indexed"

    jobs = JobWorker(store, {"index": index}, worker_id="gallery.king")
    receiver = GalleryReceiver(ReceiverConfig(county="king", ca_file="ca", cert_file="c", key_file="k"), store,
                               jobs=jobs)
    rec = factory.record()
    assert receiver.handle(TOPIC, wire.encode_record(rec, KEY)).ack == wire.Ack(rec.record_id, "stored")
    assert receiver.job_kinds == ("index",) and jobs.drain() == 1 and seen == [rec.record_id]
    store.close()
