"""The county-side CLI commands, through click and (for ``receive``) as a real process."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
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
from sync.county.gallery.cli import register_commands
from sync.county.gallery.devices import public_key_pem
from sync.county.gallery.store import SQLiteStore
from sync.protocol import topics, wire
from tests.sync import factory
from tests.sync.broker import MosquittoBroker, MqttTestClient
from tests.sync.conftest import COUNTY

REPO = Path(__file__).resolve().parents[3]


@click.group()
def cli() -> None:
    """Stand-in for booking-gallery's main group (sync/county/cli.py registers the same commands)."""


register_commands(cli)


def _raw(key: Any) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def run(*args: str) -> Any:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_devices_register_list_revoke_and_records(tmp_path: Path) -> None:
    db = str(tmp_path / "g.db")
    pem = tmp_path / "st-01.pub.pem"
    pem.write_bytes(public_key_pem(_raw(factory.key(1))))
    r = run("devices", "register", "--station", "st-01", "--county", COUNTY, "--public-key", str(pem), "--db", db)
    assert r.exit_code == 0, r.output
    assert "Registered st-01" in r.output

    r = run("devices", "register", "--station", "st-01", "--county", COUNTY, "--public-key", str(pem), "--db", db)
    assert r.exit_code == 1 and "already registered" in r.output and "Traceback" not in r.output

    r = run("devices", "list", "--json", "--db", db)
    [row] = json.loads(r.output)["devices"]
    assert (row["station"], row["status"], row["public_key"]) == ("st-01", "active", _raw(factory.key(1)).hex())

    store = SQLiteStore(db)
    rec = factory.record()
    payload = wire.encode_record(rec, factory.key(1))
    store.insert_record(wire.verify_record(payload, lambda kid: factory.key(1).public_key()), payload)
    store.close()
    r = run("records", "--json", "--db", db)
    [stored] = json.loads(r.output)["records"]
    assert (stored["record_id"], stored["captures"], stored["booking_number"]) == (rec.record_id, 3, "2026-000123")
    assert rec.record_id in run("records", "--db", db).output

    r = run("devices", "revoke", "--station", "st-01", "--db", db)
    assert r.exit_code == 0 and "Revoked st-01" in r.output
    assert "revoked" in run("devices", "list", "--db", db).output
    r = run("devices", "revoke", "--station", "st-77", "--db", db)
    assert r.exit_code == 1 and "not registered" in r.output


def test_register_refuses_a_key_that_is_not_ed25519(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = tmp_path / "ec.pem"
    pem.write_bytes(
        ec.generate_private_key(ec.SECP256R1())
        .public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    r = run(
        "devices",
        "register",
        "--station",
        "st-01",
        "--county",
        COUNTY,
        "--public-key",
        str(pem),
        "--db",
        str(tmp_path / "g.db"),
    )
    assert r.exit_code == 1 and "Ed25519" in r.output
    pem.write_text("hello")
    r = run(
        "devices",
        "register",
        "--station",
        "st-01",
        "--county",
        COUNTY,
        "--public-key",
        str(pem),
        "--db",
        str(tmp_path / "g.db"),
    )
    assert r.exit_code == 1 and "not a public key" in r.output


def test_bad_db_url_is_a_plain_error(tmp_path: Path) -> None:
    r = run("records", "--db", "mysql://x/y")
    assert r.exit_code == 1 and "unsupported database URL" in r.output


def test_broker_config_command(tmp_path: Path) -> None:
    r = run(
        "broker-config",
        "--county",
        COUNTY,
        "--out",
        str(tmp_path / "etc"),
        "--cafile",
        "/c/ca.crt",
        "--certfile",
        "/c/b.crt",
        "--keyfile",
        "/c/b.key",
        "--gallery-workers",
        "2",
    )
    assert r.exit_code == 0, r.output
    assert "gallery.king, gallery-2.king" in r.output
    assert "require_certificate true" in (tmp_path / "etc" / "mosquitto.conf").read_text()
    assert "user gallery-2.king" in (tmp_path / "etc" / "acl").read_text()


def test_receive_runs_as_a_process_and_stops_on_sigterm(
    broker: MosquittoBroker, tmp_path: Path, station_keys: dict[str, Any]
) -> None:
    db = tmp_path / "g.db"
    store = SQLiteStore(db)
    store.register_device("st-01", COUNTY, _raw(station_keys["st-01"]))
    store.close()
    cert, key = broker.pki.client(gallery_identity(COUNTY))
    config = tmp_path / "receiver.toml"
    config.write_text(
        f'[broker]\nhost = "{broker.host}"\nport = {broker.port}\nca_file = "{broker.pki.ca_cert}"\n'
        f'cert_file = "{cert}"\nkey_file = "{key}"\n[gallery]\ncounty = "{COUNTY}"\n'
    )
    code = (
        "import click, sys; from sync.county.gallery.cli import register_commands; "
        "g = click.Group(); register_commands(g); g(sys.argv[1:])"
    )
    # systemd's side of Type=notify: a datagram socket the worker reports READY/WATCHDOG/STOPPING to.
    notify_name = f"booking-gallery-test-{os.getpid()}-{time.monotonic_ns()}"
    notify_sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify_sock.bind("\0" + notify_name)
    notify_sock.settimeout(0.2)
    proc = subprocess.Popen(
        [sys.executable, "-c", code, "receive", "--config", str(config), "--db", str(db)],
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": "@" + notify_name,
             "WATCHDOG_USEC": "2000000"},
    )
    notes: list[str] = []
    st1 = MqttTestClient(broker, "st-01").connect()
    try:
        st1.subscribe(topics.acks_topic(COUNTY, "st-01"))
        rec = factory.record("st-01")
        payload = wire.encode_record(rec, station_keys["st-01"])
        ack = None
        deadline = time.monotonic() + 20
        while ack is None and time.monotonic() < deadline:  # retry like a station until the worker is up
            st1.publish(topics.records_topic(COUNTY, "st-01"), payload)
            try:
                ack = wire.decode_ack(st1.next_message(0.5).payload)
            except Exception:  # noqa: BLE001 - queue.Empty while the worker starts
                ack = None
        assert ack is not None and ack.record_id == rec.record_id and ack.delivered
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (
            any("WATCHDOG=1" in n for n in notes) and any("STATUS=subscribed" in n for n in notes)
        ):
            with contextlib.suppress(TimeoutError):
                notes.append(notify_sock.recv(4096).decode())
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
    assert b"connected to" in out
    with contextlib.suppress(TimeoutError):
        while True:
            notes.append(notify_sock.recv(4096).decode())
    notify_sock.close()
    lines = {line for n in notes for line in n.splitlines()}
    assert {"READY=1", "WATCHDOG=1", "STOPPING=1"} <= lines, notes
    assert any(line.startswith("STATUS=subscribed") for line in lines), notes
    check = SQLiteStore(db)
    assert check.count_records() == 1
    check.close()
