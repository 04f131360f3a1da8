"""Exports from the gallery store: the ``export`` command, the export folder (atomic drops, also when the
writer dies mid-file) and the receiver that drops each committed record, through click, a real SQLite
store and, for ``receive --export-dir``, a real Mosquitto broker and process."""

from __future__ import annotations

import dataclasses
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from sync.county.broker_config import gallery_identity
from sync.county.gallery import export, nist
from sync.county.gallery.cli import register_commands
from sync.county.gallery.export import ExportConfigError, ExportingReceiver, ExportSettings
from sync.county.gallery.receiver import ReceiverConfig
from sync.county.gallery.store import SQLiteStore
from sync.protocol import topics, wire
from tests.sync import factory
from tests.sync.broker import MosquittoBroker, MqttTestClient
from tests.sync.conftest import COUNTY
from tests.sync.county.test_nist import PROGRESSIVE, real_record, swap_frontal

REPO = Path(__file__).resolve().parents[3]
KEY = factory.key(1)
RAW = KEY.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
TOPIC = topics.records_topic(COUNTY, "st-01")


@click.group()
def cli() -> None:
    """Stand-in for booking-gallery's main group."""


register_commands(cli)


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def stored(db: Path, *records: wire.WireRecord) -> None:
    """Register st-01 and commit ``records`` as the receiver would."""
    store = SQLiteStore(db)
    if store.get_device("st-01") is None:
        store.register_device("st-01", COUNTY, RAW)
    for rec in records:
        payload = wire.encode_record(rec, KEY)
        store.insert_record(wire.verify_record(payload, lambda kid: KEY.public_key()), payload)
    store.close()


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


# ------------------------------------------------------------------------------------ CLI export
def test_export_command_writes_the_stored_record(tmp_path: Path) -> None:
    db, rec = tmp_path / "g.db", real_record()
    stored(db, rec)
    out = tmp_path / "out" / f"{rec.record_id}.eft"
    out.parent.mkdir()
    r = run("export", rec.record_id, "-o", str(out), "--db", str(db))
    assert r.exit_code == 0, r.output
    assert f"Wrote {out}" in r.output
    data = out.read_bytes()
    assert data == nist.export_record(rec)  # made from the stored, re-verified payload: same bytes
    assert nist.validate_transaction(data) == []
    assert oct(out.stat().st_mode & 0o777) == oct(export.FILE_MODE)
    assert visible(out.parent) == [out.name] and len(list(out.parent.iterdir())) == 1

    conf = tmp_path / "gallery.toml"
    conf.write_text('[export]\ntot = "BKG"\ndai = "WA017015G"\n[export.type2_fields]\nbooking_number = 18\n')
    r = run("export", rec.record_id, "-o", str(out), "--db", str(db), "--config", str(conf))
    assert r.exit_code == 0, r.output
    t1, t2 = nist.decode_transaction(out.read_bytes())[:2]
    assert (t1.fields[4], t1.fields[7], t2.fields[18]) == ("BKG", "WA017015G", "2026-000123")


def test_export_command_unknown_record_is_a_plain_error(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    stored(db, real_record())
    missing = wire.uuid7()
    out = tmp_path / "x.eft"
    r = run("export", missing, "-o", str(out), "--db", str(db))
    assert r.exit_code == 1
    assert f"Error: no record {missing} in the gallery database" in r.output and "Traceback" not in r.output
    assert not out.exists()


def test_export_command_refuses_an_invalid_transaction_and_writes_nothing(tmp_path: Path) -> None:
    db, rec = tmp_path / "g.db", swap_frontal(real_record(), PROGRESSIVE)
    stored(db, rec)
    out = tmp_path / "x.eft"
    r = run("export", rec.record_id, "-o", str(out), "--db", str(db))
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "is not a valid ANSI/NIST-ITL transaction" in r.output
    assert (
        "Type-10 10.011 CGA: IDC 1: JPEGB needs a baseline (8-bit sequential) JPEG; this one is progressive" in r.output
    )
    assert not out.exists() and list(tmp_path.glob("*.tmp")) == []


def test_export_command_refuses_a_tampered_record_and_bad_settings(tmp_path: Path) -> None:
    db, rec = tmp_path / "g.db", real_record()
    stored(db, rec)
    conn = sqlite3.connect(db)
    payload = conn.execute("SELECT payload FROM records WHERE record_id = ?", (rec.record_id,)).fetchone()[0]
    tampered = payload.replace(b"2026-000123", b"2026-000999")
    conn.execute("UPDATE records SET payload = ? WHERE record_id = ?", (tampered, rec.record_id))
    conn.commit()
    conn.close()
    r = run("export", rec.record_id, "-o", str(tmp_path / "x.eft"), "--db", str(db))
    assert r.exit_code == 1 and "as stored does not verify (bad_signature)" in r.output

    conf = tmp_path / "bad.toml"
    conf.write_text('[export]\ntot = "MUG"\nflavour = "vanilla"\n')
    r = run("export", rec.record_id, "-o", str(tmp_path / "x.eft"), "--db", str(db), "--config", str(conf))
    assert r.exit_code == 1 and "[export]: unknown setting(s) flavour" in r.output


def test_export_settings_from_the_receiver_toml(tmp_path: Path) -> None:
    conf = tmp_path / "etc" / "receiver.toml"
    conf.parent.mkdir()
    conf.write_text(
        '[gallery]\ncounty = "king"\n[export]\nfolder = "../spool/eft"\ntimezone = "America/Los_Angeles"\n'
        "[export.type2_fields]\noperator = 33\n"
    )
    settings = ExportSettings.from_toml(conf)
    assert settings.folder == tmp_path / "etc" / ".." / "spool" / "eft"
    assert settings.nist.timezone == "America/Los_Angeles"
    assert settings.nist.type2_fields["operator"] == 33 and settings.nist.type2_fields["booking_number"] == 701
    assert ExportSettings.from_toml(tmp_path / "etc" / "receiver.toml").nist.tot == "MUG"
    conf.write_text('[export]\ndai = "nope"\n')
    with pytest.raises(ExportConfigError, match="dai 'nope' must be a 9-character ORI"):
        ExportSettings.from_toml(conf)


# ----------------------------------------------------------------------------------- folder drop
def test_drop_export_writes_the_file_atomically_and_marks_it(tmp_path: Path) -> None:
    rec, folder = real_record(), tmp_path / "spool"
    path = export.drop_export(rec, folder)
    assert path == folder / f"{rec.record_id}.eft"
    assert path.read_bytes() == nist.export_record(rec)
    assert oct(path.stat().st_mode & 0o777) == oct(export.FILE_MODE)
    assert visible(folder) == [path.name]
    assert (folder / ".exported" / rec.record_id).exists()
    assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []
    assert export.already_exported(folder, rec.record_id)
    assert export.drop_export(rec, folder).read_bytes() == path.read_bytes()  # a repeat rewrites the same bytes

    with pytest.raises(export.ExportError, match="is not a record id"):
        export.drop_export(dataclasses.replace(rec, record_id="../../etc/passwd"), folder)
    with pytest.raises(nist.NistExportError):
        export.drop_export(swap_frontal(rec, PROGRESSIVE), folder)
    assert visible(folder) == [path.name]


def test_a_failed_drop_leaves_no_file_and_keeps_the_previous_one(tmp_path: Path, monkeypatch: Any) -> None:
    rec, folder = real_record(), tmp_path / "spool"
    folder.mkdir()

    def disk_full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(export.os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space left"):
        export.drop_export(rec, folder)
    assert list(folder.iterdir()) == []  # neither the .eft nor its temporary file
    monkeypatch.undo()

    good = export.drop_export(rec, folder)
    before = good.read_bytes()
    monkeypatch.setattr(export.os, "replace", lambda *a: (_ for _ in ()).throw(OSError(5, "I/O error")))
    with pytest.raises(OSError, match="I/O error"):
        export.drop_export(rec, folder)
    assert good.read_bytes() == before
    assert visible(folder) == [good.name] and not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


CHILD = """
import os, sys, time
from sync.county.gallery import export
from tests.sync.county.test_nist import real_record

def stall(src, dst):
    print("written", flush=True)
    time.sleep(60)

export.os.replace = stall
export.drop_export(real_record(), sys.argv[1])
"""


def test_a_writer_killed_mid_drop_never_shows_a_file(tmp_path: Path) -> None:
    """Power loss stand-in: SIGKILL the writer after its data is on disk but before the rename."""
    folder = tmp_path / "spool"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(folder)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line == b"written\n", line + proc.stdout.read()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    temps = [p for p in folder.iterdir() if p.name.endswith(".tmp")]
    assert len(temps) == 1 and temps[0].name.startswith(".")  # hidden: a *.eft pickup never matches it
    assert list(folder.glob("*.eft")) == []
    assert export.remove_stale_temps(folder) == 0  # too young: could be another worker's live write
    old = time.time() - 2 * export.STALE_TEMP_SECONDS
    os.utime(temps[0], (old, old))
    assert export.remove_stale_temps(folder) == 1
    assert visible(folder) == []


# --------------------------------------------------------------------------------- the receiver
@pytest.fixture
def receiver(tmp_path: Path) -> Any:
    store = SQLiteStore(tmp_path / "g.db")
    store.register_device("st-01", COUNTY, RAW)
    config = ReceiverConfig(county=COUNTY, ca_file="ca", cert_file="c", key_file="k")
    r = ExportingReceiver(config, store, export_folder=tmp_path / "spool")
    yield r
    store.close()


def test_receiver_exports_after_commit_and_not_twice(receiver: ExportingReceiver) -> None:
    rec = real_record()
    payload = wire.encode_record(rec, KEY)
    folder = receiver.export_folder
    out = receiver.handle(TOPIC, payload)
    assert out.ack == wire.Ack(rec.record_id, "stored")
    path = folder / f"{rec.record_id}.eft"
    assert path.read_bytes() == nist.export_record(rec)
    assert receiver.stats.counts["exported"] == 1

    path.unlink()  # the county's pickup took it
    out = receiver.handle(TOPIC, payload)  # the station repeats (its ack was lost)
    assert out.ack == wire.Ack(rec.record_id, "duplicate")
    assert not path.exists() and receiver.stats.counts["exported"] == 1

    bad = receiver.handle(TOPIC, b"not cbor")
    assert bad.ack is not None and bad.ack.status == "rejected" and visible(folder) == []


def test_receiver_exports_on_the_repeat_after_a_crash_between_commit_and_export(
    receiver: ExportingReceiver, tmp_path: Path
) -> None:
    rec = real_record()
    payload = wire.encode_record(rec, KEY)
    receiver.store.insert_record(wire.verify_record(payload, lambda kid: KEY.public_key()), payload)  # no export
    out = receiver.handle(TOPIC, payload)
    assert out.ack == wire.Ack(rec.record_id, "duplicate")
    assert (receiver.export_folder / f"{rec.record_id}.eft").exists()


def test_a_failed_export_never_holds_the_ack(receiver: ExportingReceiver) -> None:
    rec = swap_frontal(real_record(), PROGRESSIVE)
    out = receiver.handle(TOPIC, wire.encode_record(rec, KEY))
    assert out.ack == wire.Ack(rec.record_id, "stored")
    assert receiver.store.get_record(rec.record_id) is not None
    assert receiver.stats.counts["export_errors"] == 1 and visible(receiver.export_folder) == []


def test_receive_process_drops_exports_into_the_folder(
    broker: MosquittoBroker, tmp_path: Path, station_keys: dict[str, Any]
) -> None:
    db = tmp_path / "g.db"
    store = SQLiteStore(db)
    store.register_device("st-01", COUNTY, RAW)
    store.close()
    cert, key = broker.pki.client(gallery_identity(COUNTY))
    config = tmp_path / "receiver.toml"
    config.write_text(
        f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\nca_file = "{broker.pki.ca_cert}"\n'
        f'cert_file = "{cert}"\nkey_file = "{key}"\n[gallery]\ncounty = "{COUNTY}"\n'
        '[export]\nfolder = "spool"\ntot = "BKG"\n'
    )
    code = (
        "import click, sys; from sync.county.gallery.cli import register_commands; "
        "g = click.Group(); register_commands(g); g(sys.argv[1:])"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "receive", "--config", str(config), "--db", str(db)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    st1 = MqttTestClient(broker, "st-01").connect()
    rec = real_record()
    try:
        st1.subscribe(topics.acks_topic(COUNTY, "st-01"))
        payload = wire.encode_record(rec, station_keys["st-01"])
        ack = None
        deadline = time.monotonic() + 20
        while ack is None and time.monotonic() < deadline:  # retry like a station until the worker is up
            st1.publish(TOPIC, payload)
            try:
                ack = wire.decode_ack(st1.next_message(0.5).payload)
            except Exception:  # noqa: BLE001 - queue.Empty while the worker starts
                ack = None
        assert ack is not None and ack.record_id == rec.record_id and ack.delivered
    finally:
        st1.close()
        proc.send_signal(signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
            pytest.fail(f"receive did not stop on SIGTERM:\n{out.decode(errors='replace')}")
    assert proc.returncode == 0, out.decode(errors="replace")
    assert b"exporting each committed record to" in out
    dropped = tmp_path / "spool" / f"{rec.record_id}.eft"  # relative to the TOML's folder
    assert dropped.read_bytes() == nist.export_record(rec, ExportSettings.from_toml(config).nist)
    assert nist.decode_transaction(dropped.read_bytes())[0].fields[4] == "BKG"


def test_without_nistitl_the_export_says_what_to_install(tmp_path: Path, monkeypatch: Any) -> None:
    db, rec = tmp_path / "g.db", real_record()
    stored(db, rec)
    monkeypatch.setitem(sys.modules, "nistitl", None)  # import nistitl now raises ImportError
    r = run("export", rec.record_id, "-o", str(tmp_path / "x.eft"), "--db", str(db))
    assert r.exit_code == 1 and "needs the nistitl package: pip install 'nistitl>=0.6,<0.7'" in r.output
    store = SQLiteStore(db)
    config = ReceiverConfig(county=COUNTY, ca_file="ca", cert_file="c", key_file="k")
    with pytest.raises(nist.NistCodecMissing):  # refused at start-up, not on the first record
        ExportingReceiver(config, store, export_folder=tmp_path / "spool")
    store.close()


def test_export_modules_import_no_appliance_or_vision_code() -> None:
    """The gallery (and so the export) runs on a server with no camera and no vision stack."""
    code = (
        "import sys, sync.county.gallery.nist, sync.county.gallery.export, nistitl; "
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('appliance', 'cv2', 'numpy', 'ai_edge_litert')); "
        "print(bad); sys.exit(1 if bad else 0)"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
