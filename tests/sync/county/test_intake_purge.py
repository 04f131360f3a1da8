"""`booking-gallery purge`: a sealed booking leaves the gallery store, the export folder and the station
that captured it (a signed command over a real Mosquitto to the station's real sync agent), and cannot
come back."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tomli_w
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from appliance.store import audit
from sync.county.cli import main
from sync.county.enroll.ca import CountyCA
from sync.county.gallery.export import MARKER_DIR, drop_export, export_path
from sync.county.gallery.receiver import GalleryReceiver, ReceiverConfig
from sync.county.gallery.store import RecordPurgedError, SQLiteStore
from sync.county.search.index import open_index
from sync.county.search.settings import SearchSettings
from sync.protocol import wire
from tests.sync import factory
from tests.sync.broker import PKI, MosquittoBroker, mosquitto_binary
from tests.sync.conftest import COUNTY

OPS = f"ops.{COUNTY}"
ORI = "WA0170000"
REASON = "sealed by court order 26-11"


def _raw(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _purge(*args: object) -> Any:
    return CliRunner().invoke(main, ["purge", *map(str, args)], catch_exceptions=False)


def _gallery_record(store: SQLiteStore, booking: str, record_id: str | None = None) -> tuple[str, bytes]:
    """A station record of ``booking`` stored as the receiver stores it; returns its id and payload."""
    rec = factory.record(booking=wire.WireBooking(ORI, booking, "ofc-1187", factory.T0))
    if record_id is not None:
        rec = dataclasses.replace(rec, record_id=record_id)
    payload = wire.encode_record(rec, factory.key(1))
    store.insert_record(wire.verify_record(payload, lambda kid: factory.key(1).public_key()), payload)
    return rec.record_id, payload


def test_purge_leaves_store_export_folder_and_sends_a_signed_command(tmp_path: Path) -> None:
    ca = CountyCA.init(tmp_path / "ca", COUNTY)
    probe = np.frombuffer(factory.template().values, "<f4")  # the factory's frontal template
    db, exports, cmds = tmp_path / "g.db", tmp_path / "eft", tmp_path / "cmds"
    with SQLiteStore(db) as store:
        store.register_device("st-01", COUNTY, _raw(factory.key(1)))
        sealed, payload = _gallery_record(store, "2026-000777")
        kept, _ = _gallery_record(store, "2026-000778")
        for rid in (sealed, kept):
            drop_export(wire.decode_record(store.get_payload(rid) or b"", lambda k: factory.key(1).public_key()),
                        exports)
        index = open_index(SearchSettings(), str(db))  # the default: search/ beside the gallery, as purge opens it
        assert index.rebuild(store) == 2
        assert {c.record_id for c in index.search(store, probe, k=5).candidates} == {sealed, kept}
        index.close()
    args = ("--booking", "2026-000777", "--ori", ORI, "--reason", REASON, "--db", db, "--ca-dir", ca.directory,
            "--export-dir", exports, "--actor", "clerk-7")
    result = _purge(*args, "--out", cmds, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert (out["record_ids"], out["removed"], len(out["exports_removed"])) == ([sealed], [sealed], 2)
    assert not export_path(exports, sealed).exists() and not (exports / MARKER_DIR / sealed).exists()
    assert export_path(exports, kept).exists()

    with SQLiteStore(db) as store:
        assert store.get_record(sealed) is None and store.templates(sealed) == []
        assert store.get_record(kept) is not None and store.templates(kept)
        assert store.is_purged(sealed)
        [entry] = store.list_audit(action="purge")
        assert (entry.actor, entry.subject, entry.details["reason"]) == ("clerk-7", f"{ORI}/2026-000777", REASON)
        [sent] = store.list_audit(action="purge_command")
        assert sent.subject == "st-01" and sent.details["record_id"] == sealed
        # the station still had it in its outbox and sends it again: refused, never stored again
        receiver = GalleryReceiver(ReceiverConfig(county=COUNTY, ca_file="ca", cert_file="c", key_file="k"), store)
        outcome = receiver.handle(f"booking/v1/{COUNTY}/st-01/records", payload)
        assert outcome.ack is not None and (outcome.ack.status, outcome.ack.reason) == ("rejected", "purged")
        assert store.get_record(sealed) is None
        with pytest.raises(RecordPurgedError):
            store.insert_record(wire.verify_record(payload, lambda kid: factory.key(1).public_key()), payload)
        # no search returns it, and the index file itself no longer holds its template
        index = open_index(SearchSettings(), str(db))
        assert [c.record_id for c in index.search(store, probe, k=5).candidates] == [kept]
        assert index.verify(store).ok and index.engine.count() == 1
        index.close()

    [path] = list(cmds.iterdir())
    command = wire.decode_command(path.read_bytes(),
                                  lambda kid: ca.command_public_key if kid == f"county:{COUNTY}" else None,
                                  county=COUNTY, station="st-01")
    assert (command.action, command.args) == ("purge", {"record_id": sealed, "reason": REASON})

    again = _purge(*args, "--out", cmds)  # re-sends the command (the station was offline)
    assert again.exit_code == 0 and "0 record(s) removed now, 1 in all" in again.output
    assert len(list(cmds.iterdir())) == 2
    unknown = _purge("--booking", "NOPE-1", "--ori", ORI, "--reason", REASON, "--db", db, "--ca-dir", ca.directory,
                     "--out", cmds)
    assert unknown.exit_code == 1 and "no booking NOPE-1" in unknown.output
    neither = _purge(*args)  # a station captured it: its command needs somewhere to go
    assert neither.exit_code == 1 and "--config" in neither.output
    both = _purge(*args, "--out", cmds, "--config", tmp_path / "g.db")
    assert both.exit_code == 2 and "not both" in both.output


def test_the_station_that_captured_it_purges_it_too(tmp_path: Path, pki: PKI) -> None:
    if mosquitto_binary() is None:
        pytest.fail("Mosquitto is needed for these tests: apt-get install -y mosquitto")
    ca = CountyCA.init(tmp_path / "ca", COUNTY)
    broker = MosquittoBroker(tmp_path / "broker", pki, COUNTY, extra_gallery_identities=(OPS,))
    broker.start()
    station = factory.make_station(tmp_path / "st-01", pki, broker.host, broker.port, **factory.FAST)
    shutil.copy(ca.directory / "command-signing.pub", station.data_dir / "keys" / "county-command.pub")
    store = station.open_store()
    agent = None
    try:
        sealed = factory.store_booking(store, 1)
        kept = factory.store_booking(store, 2)
        db = tmp_path / "g.db"
        with SQLiteStore(db) as gallery:
            gallery.register_device("st-01", COUNTY, _raw(factory.key(1)))
            _gallery_record(gallery, "2026-000001", record_id=sealed)
        cert, key = broker.pki.client(OPS)
        ops = tmp_path / "ops.toml"
        ops.write_text(tomli_w.dumps({
            "broker": {"host": broker.host, "port": broker.port, "ca_file": str(broker.pki.ca_cert),
                       "cert_file": str(cert), "key_file": str(key)},
            "gallery": {"county": COUNTY}}))
        agent = factory.AgentThread(station).start()
        result = _purge("--booking", "2026-000001", "--ori", ORI, "--reason", REASON, "--db", db, "--ca-dir",
                        ca.directory, "--config", ops, "--export-dir", tmp_path / "eft")
        assert result.exit_code == 0, result.output

        def applied() -> list[dict[str, Any]]:
            return [e.details_dict for e in audit.entries(store.conn)
                    if e.action == "command_applied" and e.details_dict.get("action") == "purge"]

        factory.wait_for(applied, message="the station to apply the purge command")
        assert applied()[0]["args"]["record_id"] == sealed
        assert store.records_for_booking("2026-000001", ORI) == []
        assert store.records_for_booking("2026-000002", ORI) == [kept]
    finally:
        if agent is not None:
            agent.close()
        store.close()
        broker.stop()


def test_an_imported_booking_is_purged_without_a_station_command(tmp_path: Path) -> None:
    from sync.county.intake.embedding import Photo
    from sync.county.intake.identity import ensure_registered, load_signer, verify_key_lookup
    from sync.county.intake.legacy import build_record, import_record_id
    from sync.county.intake.sources import ImportItem

    ca = CountyCA.init(tmp_path / "ca", COUNTY)
    signer = load_signer(ca.directory)
    db = tmp_path / "g.db"
    item = ImportItem("legacy.csv line 2", "1998-0042", ORI, factory.T0, "frontal")
    jpeg, width, height = factory.small_face()
    with SQLiteStore(db) as store:
        device = ensure_registered(store, signer)
        record_id = import_record_id(item, b"\x01" * 32)
        photo = Photo(jpeg, width, height, factory.template().values, "dlib-resnet-v1@1")
        payload = wire.encode_record(build_record(item, record_id, photo, signer, "legacy-import"), signer.key)
        store.insert_record(wire.verify_record(payload, verify_key_lookup(device)), payload)
    result = _purge("--booking", "1998-0042", "--ori", ORI, "--reason", REASON, "--db", db, "--ca-dir", ca.directory,
                    "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert (out["removed"], out["commands"]) == ([record_id], [])
    with SQLiteStore(db) as store:
        assert store.get_record(record_id) is None and store.is_purged(record_id)
