"""Group commit through a real Mosquitto (mutual TLS): a burst of records shares transactions, every ack
comes after its record's commit, and a record refused inside a group never holds the others' acks."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization

from sync.county.broker_config import gallery_identity
from sync.county.gallery.receiver import GalleryReceiver, ReceiverConfig
from sync.county.gallery.store import SQLiteStore
from sync.county.gallery.worker import JobWorker
from sync.protocol import topics, wire
from tests.sync import factory
from tests.sync.broker import MosquittoBroker, MqttTestClient
from tests.sync.conftest import COUNTY


def _receiver(broker: MosquittoBroker, db: Path, station_keys: dict[str, Any], **config: Any) -> GalleryReceiver:
    store = SQLiteStore(db)
    raw = station_keys["st-01"].public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    store.register_device("st-01", COUNTY, raw)
    cert, key = broker.pki.client(gallery_identity(COUNTY))
    cfg = ReceiverConfig(county=COUNTY, ca_file=str(broker.pki.ca_cert), cert_file=str(cert), key_file=str(key),
                         host=broker.host, port=broker.port, **config)
    return GalleryReceiver(cfg, store, jobs=JobWorker(store, {"index": lambda job: None}, worker_id="g"))


def test_a_burst_shares_transactions_and_each_ack_follows_its_commit(
    broker: MosquittoBroker, tmp_path: Path, station_keys: dict[str, Any]
) -> None:
    db = tmp_path / "g.db"
    receiver = _receiver(broker, db, station_keys, group_commit=16, group_commit_ms=20)
    receiver.start()
    assert receiver.wait_ready(10) and receiver.committer is not None
    station = MqttTestClient(broker, "st-01").connect()
    reader = sqlite3.connect(db)
    try:
        station.subscribe(topics.acks_topic(COUNTY, "st-01"))
        records = [factory.record("st-01") for _ in range(40)]
        payloads = [wire.encode_record(r, station_keys["st-01"]) for r in records]
        clash = wire.encode_record(factory.record("st-01", record_id=records[0].record_id,
                                                  created_at=factory.T0), station_keys["st-01"])
        for payload in [*payloads, clash]:
            station.client.publish(topics.records_topic(COUNTY, "st-01"), payload, qos=1)
        acks: dict[str, str] = {}
        while len(acks) < 41:
            message = station.next_message(20)
            ack = wire.decode_ack(message.payload)
            key = ack.record_id if ack.status != "rejected" else f"{ack.record_id}:{ack.reason}"
            acks[key] = ack.status
            if ack.status == "stored":  # the gallery said so: it must already be committed
                assert reader.execute("SELECT 1 FROM records WHERE record_id = ?", (ack.record_id,)).fetchone()
        assert {r.record_id: "stored" for r in records}.items() <= acks.items()
        assert acks[f"{records[0].record_id}:replay"] == "rejected"
        assert reader.execute("SELECT COUNT(*) FROM records").fetchone()[0] == 40
        assert reader.execute("SELECT COUNT(*) FROM jobs WHERE kind = 'index'").fetchone()[0] == 40
        assert receiver.committer.committed == 41 and receiver.committer.batches < 41  # grouped
        deadline = time.monotonic() + 10
        while receiver.store.job_summary().waiting and time.monotonic() < deadline:
            time.sleep(0.05)
        assert receiver.store.job_summary().kinds["index"].done == 40
    finally:
        reader.close()
        station.close()
        receiver.stop()
        receiver.store.close()


def test_group_commit_off_acks_each_record_from_the_network_thread(
    broker: MosquittoBroker, tmp_path: Path, station_keys: dict[str, Any]
) -> None:
    receiver = _receiver(broker, tmp_path / "g.db", station_keys, group_commit=1)
    receiver.start()
    assert receiver.wait_ready(10) and receiver.committer is None
    station = MqttTestClient(broker, "st-01").connect()
    try:
        station.subscribe(topics.acks_topic(COUNTY, "st-01"))
        rec = factory.record("st-01")
        station.publish(topics.records_topic(COUNTY, "st-01"), wire.encode_record(rec, station_keys["st-01"]))
        ack = wire.decode_ack(station.next_message(10).payload)
        assert (ack.record_id, ack.status) == (rec.record_id, "stored")
    finally:
        station.close()
        receiver.stop()
        receiver.store.close()


def test_checks_run_beside_the_network_thread_and_acks_keep_the_arrival_order(
    broker: MosquittoBroker, tmp_path: Path, station_keys: dict[str, Any]
) -> None:
    """Records are checked on the checker threads, yet every ack (a refusal too, in its place) goes out in
    the order the records arrived."""
    receiver = _receiver(broker, tmp_path / "g.db", station_keys, group_commit=8, group_commit_ms=5)
    checked_on: set[str] = set()
    check = receiver.check

    def spy(topic: str, payload: bytes) -> Any:
        checked_on.add(threading.current_thread().name.split("_")[0])
        return check(topic, payload)

    receiver.check = spy  # type: ignore[method-assign]
    receiver.start()
    assert receiver.wait_ready(10)
    station = MqttTestClient(broker, "st-01").connect()
    try:
        station.subscribe(topics.acks_topic(COUNTY, "st-01"))
        records = [factory.record("st-01", county="pierce" if i == 7 else COUNTY) for i in range(24)]
        for r in records:
            station.client.publish(topics.records_topic(COUNTY, "st-01"), wire.encode_record(r, station_keys["st-01"]),
                                   qos=1)
        acks = [wire.decode_ack(station.next_message(20).payload) for _ in records]
        assert [a.record_id for a in acks] == [r.record_id for r in records]
        assert [(a.status, a.reason) for a in acks if a.status != "stored"] == [("rejected", "county_mismatch")]
        assert acks[7].status == "rejected"
        assert checked_on == {"gallery-check"}
        assert receiver.store.count_records() == 23
    finally:
        station.close()
        receiver.stop()
        receiver.store.close()
