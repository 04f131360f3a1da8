"""`booking-gallery receive` as a real process behind Mosquitto keeps the search index current."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from sync.county.broker_config import gallery_identity
from sync.county.cli import main
from sync.county.gallery.store import SQLiteStore
from sync.protocol import topics, wire
from tests.sync import factory
from tests.sync.broker import MosquittoBroker, MqttTestClient
from tests.sync.conftest import COUNTY

REPO = Path(__file__).resolve().parents[4]


def test_a_received_record_is_searchable_and_the_index_verifies(
    broker: MosquittoBroker, tmp_path: Path, station_keys: dict[str, Any]
) -> None:
    db = tmp_path / "g.db"
    store = SQLiteStore(db)
    store.register_device("st-01", COUNTY, station_keys["st-01"].public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw))
    store.close()
    cert, key = broker.pki.client(gallery_identity(COUNTY))
    config = tmp_path / "county.toml"
    config.write_text(
        f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\nca_file = "{broker.pki.ca_cert}"\n'
        f'cert_file = "{cert}"\nkey_file = "{key}"\n[gallery]\ncounty = "{COUNTY}"\ndb = "{db}"\n'
        '[search]\nfolder = "idx"\nsave_interval = 0\n'
    )
    env = {**os.environ, "PYTHONPATH": str(REPO), "BOOKING_GALLERY_CONFIG": str(config)}
    proc = subprocess.Popen([sys.executable, "-m", "sync.county.cli", "receive"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    st1 = MqttTestClient(broker, "st-01").connect()
    rec = factory.record("st-01")
    try:
        st1.subscribe(topics.acks_topic(COUNTY, "st-01"))
        payload = wire.encode_record(rec, station_keys["st-01"])
        ack = None
        deadline = time.monotonic() + 30
        while ack is None and time.monotonic() < deadline:  # retry like a station until the worker is up
            st1.publish(topics.records_topic(COUNTY, "st-01"), payload)
            try:
                ack = wire.decode_ack(st1.next_message(0.5).payload)
            except Exception:  # noqa: BLE001 - queue.Empty while the worker starts
                ack = None
        assert ack is not None and ack.status == "stored"
    finally:
        st1.close()
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0, out.decode(errors="replace")
    assert b"search index (faiss) caught up" in out
    runner = CliRunner(env={"BOOKING_GALLERY_CONFIG": str(config)})
    verify = runner.invoke(main, ["index", "verify", "--json"])
    assert verify.exit_code == 0 and json.loads(verify.stdout)["indexed"] == 1
    template = tmp_path / "probe.tpl"
    vec = np.frombuffer(rec.captures[0].template.values, dtype="<f4")  # type: ignore[union-attr]
    template.write_bytes((vec + 0.01).astype("<f4").tobytes())
    found = runner.invoke(main, ["search", "--template", str(template), "--json", "--threshold", "0.6"])
    assert found.exit_code == 0, found.output
    assert [c["record_id"] for c in json.loads(found.stdout)["candidates"]] == [rec.record_id]
