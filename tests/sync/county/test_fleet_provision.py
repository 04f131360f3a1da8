"""The issue's proof: a county provisions two stations, both deliver, one is revoked and shut out, and
`booking-gallery fleet` shows it. Everything is the real thing except the hardware:

* the county CA (``CountyCA``) and its HTTPS enrolment server, in-process on a free port, registering each
  station's signing key straight into the gallery's store (``StoreDeviceRegistry``, what
  ``enroll-server --db`` wires in; the command itself is run as a process in the second test);
* a real Mosquitto whose TLS trusts the same county CA, from the generated config, with a CRL from day one;
* ``firmware.provision`` on each "device" (keys made there, token from ``tokens issue``), then the real
  ``SyncAgent`` from the station.toml and keys it wrote, and the real ``GalleryReceiver``;
* ``devices revoke`` (gallery registry, broker ACL and CRL) and a broker reload by SIGHUP.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
import tomli_w
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from appliance.doctor import CheckFailed, mqtt_connect
from firmware.provision import StationPaths, provision
from sync.county.broker_config import save_settings
from sync.county.enroll.ca import CountyCA, certificate_pem, generate_tls_key, private_key_pem
from sync.county.enroll.cli import tokens as tokens_cli
from sync.county.enroll.server import make_server
from sync.county.enroll.service import EnrollmentService, MqttEndpoint
from sync.county.enroll.tokens import TokenStore
from sync.county.gallery.devices import StoreDeviceRegistry, load_public_key
from sync.county.gallery.fleet_cli import fleet
from sync.county.gallery.store import SQLiteStore
from tests.sync import factory
from tests.sync.broker import MosquittoBroker, free_port, mosquitto_binary, start_gallery, stop_gallery
from tests.sync.county.test_fleet_revoke import county_pki
from tests.sync.county.test_fleet_revoke import run as gallery_cli

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

COUNTY = "king"
REPO = Path(__file__).resolve().parents[3]


@dataclass
class County:
    ca: CountyCA
    db: Path
    url: str
    broker: MosquittoBroker

    def token(self, station: str) -> str:
        result = CliRunner().invoke(tokens_cli, ["issue", "--ca-dir", str(self.ca.directory), "--station", station,
                                                 "--json"])
        assert result.exit_code == 0, result.output
        return str(json.loads(result.output)["token"])


def _server_cert(ca: CountyCA, directory: Path) -> tuple[Path, Path]:
    """What `booking-gallery ca server-cert --name 127.0.0.1` writes."""
    key = generate_tls_key()
    cert = ca.issue_server_certificate(key.public_key(), ["127.0.0.1", "localhost"])
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "enroll.crt").write_text(certificate_pem(cert))
    (directory / "enroll.key").write_bytes(private_key_pem(key))
    return directory / "enroll.crt", directory / "enroll.key"


@contextlib.contextmanager
def running_county(tmp_path: Path, purpose: str, extra_gallery_identities: tuple[str, ...] = ()) -> Iterator[County]:
    """A county as county IT sets it up: CA, broker (county CA TLS, generated config and ACL, a CRL from day
    one, settings kept for revocations) and the enrolment server registering keys into the gallery's store."""
    if mosquitto_binary() is None:
        pytest.fail(f"Mosquitto is needed for the {purpose}: apt-get install -y mosquitto")
    ca = CountyCA.init(tmp_path / "county-ca", COUNTY)
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    r = gallery_cli("devices", "crl", "--empty", "--ca-dir", ca.directory, "-o", broker_dir / "crl.pem")
    assert r.exit_code == 0, r.output
    broker = MosquittoBroker(broker_dir, county_pki(ca, tmp_path / "pki"), COUNTY, crlfile=str(broker_dir / "crl.pem"),
                             extra_gallery_identities=extra_gallery_identities)
    save_settings(broker.config, broker_dir)
    broker.start()
    db = tmp_path / "gallery.db"
    registry_store = SQLiteStore(db)
    service = EnrollmentService(ca, TokenStore.in_ca_dir(ca.directory), StoreDeviceRegistry(registry_store),
                                mqtt=MqttEndpoint(broker.host, broker.port))
    cert, key = _server_cert(ca, tmp_path / "enroll-tls")
    server = make_server(service, "127.0.0.1", 0, cert, key)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield County(ca, db, server.url, broker)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
        registry_store.close()
        broker.stop()


@pytest.fixture
def county(tmp_path: Path) -> Iterator[County]:
    with running_county(tmp_path, "fleet proof") as c:
        yield c


def provision_station(county: County, directory: Path, name: str) -> factory.Station:
    """`booking-station provision` on a fresh device, then the [sync] timings a test can wait for."""
    paths = StationPaths(directory / "etc", directory / "var")
    lines: list[str] = []
    result = provision(COUNTY, name, county.url, county.token(name), county.ca.directory / "ca.crt",
                       paths.config_dir, paths.data_dir, device_profile="replay", service_user=None, echo=lines.append)
    assert result.status == "enrolled", lines
    doc = tomllib.loads(paths.config_file.read_text())
    assert doc["mqtt"] == {"host": county.broker.host, "port": county.broker.port}  # handed out by the server
    doc["sync"] = dict(factory.FAST)
    paths.config_file.write_text(tomli_w.dumps(doc))
    signing = serialization.load_pem_private_key(paths.signing_key.read_bytes(), password=None)
    command = serialization.load_pem_private_key((county.ca.directory / "command-signing.key").read_bytes(), None)
    return factory.Station(name, paths.data_dir, paths.config_file, signing, command)  # type: ignore[arg-type]


def _fleet(db: Path) -> tuple[int, dict[str, dict[str, Any]]]:
    result = CliRunner().invoke(fleet, ["--db", str(db), "--json"])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, {row["station"]: row for row in json.loads(result.output)["stations"]}


def test_two_provisioned_stations_deliver_one_is_revoked_and_shut_out(county: County, tmp_path: Path) -> None:
    desk1 = provision_station(county, tmp_path / "desk-1", "desk-1")
    desk2 = provision_station(county, tmp_path / "desk-2", "desk-2")
    with SQLiteStore(county.db) as registry:  # enrolment put each device's own key in the gallery's table
        for desk in (desk1, desk2):
            device = registry.get_device(desk.name)
            pub = (desk.data_dir / "keys" / "signing.pub").read_bytes()
            assert device is not None and device.active and device.public_key == load_public_key(pub)

    gallery = start_gallery(county.broker, county.db, {})
    stores = {d.name: d.open_store() for d in (desk1, desk2)}
    agents = {d.name: factory.AgentThread(d).start() for d in (desk1, desk2)}
    try:
        first = {name: factory.store_booking(store, n, station=name) for n, (name, store) in enumerate(stores.items())}
        factory.wait_for(lambda: all(gallery.store.get_record(rid) for rid in first.values()), timeout=30,
                         message="both stations' first records stored")

        def reported(name: str, **want: Any) -> bool:
            kept = gallery.store.get_station_status(name)
            return kept is not None and all(
                (kept.body["queue"].get(k) if k in ("pending", "delivered") else kept.body.get(k)) == v
                for k, v in want.items())

        factory.wait_for(lambda: reported("desk-1", state="online", delivered=1)
                         and reported("desk-2", state="online", delivered=1), timeout=30, message="both online")
        code, rows = _fleet(county.db)
        assert code == 0 and set(rows) == {"desk-1", "desk-2"}
        assert not rows["desk-1"]["flagged"] and not rows["desk-2"]["flagged"]

        # County IT revokes desk-2: gallery registry, broker ACL and CRL in one command.
        r = gallery_cli("devices", "revoke", "--station", "desk-2", "--db", county.db,
                        "--broker-dir", county.broker.directory, "--ca-dir", county.ca.directory)
        assert r.exit_code == 0 and "systemctl reload mosquitto" in r.output, r.output

        # Before the broker reload: desk-2's next record reaches the gallery, which refuses it (revoked).
        refused = factory.store_booking(stores["desk-2"], 10, station="desk-2")
        factory.wait_for(lambda: any(x.reason == "revoked_device" and x.station == "desk-2"
                                     for x in gallery.store.list_rejections()), message="the gallery's refusal")
        factory.wait_for(lambda: "gallery_refusing" in (gallery.store.get_station_status("desk-2").body["alarms"]),
                         timeout=30, message="desk-2 reporting the refusal as an alarm")

        # After the reload: the broker itself refuses desk-2's records; desk-1 carries on.
        assert county.broker.process is not None
        county.broker.process.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        blocked = factory.store_booking(stores["desk-2"], 11, station="desk-2")
        later = factory.store_booking(stores["desk-1"], 12, station="desk-1")
        factory.wait_for(lambda: gallery.store.get_record(later) is not None, message="desk-1's next record stored")
        factory.wait_for(lambda: "Not authorized" in (
            {e.record_id: e for e in stores["desk-2"].queue("pending")}[blocked].last_error or ""),
            message="the broker refusing desk-2's record")

        # A new connection of desk-2 is refused at the TLS handshake (CRL): restart its agent.
        agents["desk-2"].close()
        log_before = len(county.broker.logs())
        agents["desk-2"] = factory.AgentThread(desk2).start(ready_timeout=None)
        factory.wait_for(lambda: "certificate verify failed" in county.broker.logs()[log_before:],
                         message="the broker refusing desk-2's certificate")
        time.sleep(1.0)
        assert not agents["desk-2"].agent.ready.is_set()
        keys = desk2.data_dir / "keys"
        with pytest.raises(CheckFailed, match="refused this device's certificate|closed the connection"):
            mqtt_connect(county.broker.host, county.broker.port, keys / "ca.crt", keys / "tls.crt", keys / "tls.key",
                         "desk-2", timeout=3)

        # Fleet: both listed; desk-1 healthy, desk-2 revoked yet last heard online after its revocation.
        factory.wait_for(lambda: reported("desk-1", state="online", delivered=2), timeout=30, message="desk-1 status")
        code, rows = _fleet(county.db)
        assert code == 1 and set(rows) == {"desk-1", "desk-2"}
        assert not rows["desk-1"]["flagged"], rows["desk-1"]
        assert rows["desk-2"]["registry"] == "revoked" and rows["desk-2"]["flagged"]
        assert any("still reporting online" in why for why in rows["desk-2"]["unhealthy"])
        assert "gallery_refusing" in rows["desk-2"]["alarms"]
    finally:
        for agent in agents.values():
            agent.close()
        stop_gallery(gallery)

    try:
        assert stores["desk-1"].queue_counts() == {"pending": 0, "delivered": 2, "rejected": 0}
        # desk-2 keeps both refused records: never lost, never marked delivered
        assert stores["desk-2"].queue_counts() == {"pending": 2, "delivered": 1, "rejected": 0}
        assert {e.record_id for e in stores["desk-2"].queue("pending")} == {refused, blocked}
    finally:
        for store in stores.values():
            store.close()
    with SQLiteStore(county.db) as gallery_store:
        assert gallery_store.get_record(refused) is None and gallery_store.get_record(blocked) is None
        assert gallery_store.get_record(first["desk-2"]) is not None  # delivered before revocation: kept
        assert {r.station for r in gallery_store.list_records()} == {"desk-1", "desk-2"}



def test_enroll_server_gallery_db_registers_keys_into_the_gallery(tmp_path: Path) -> None:
    """`booking-gallery enroll-server --db` as county IT runs it (a process, over HTTPS)."""
    ca = CountyCA.init(tmp_path / "county-ca", COUNTY)
    cert, key = _server_cert(ca, tmp_path / "enroll-tls")
    db = tmp_path / "gallery.db"
    port = free_port()
    log = (tmp_path / "enroll.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "sync.county.cli", "enroll-server", "--ca-dir", str(ca.directory), "--host", "127.0.0.1",
         "--port", str(port), "--tls-cert", str(cert), "--tls-key", str(key), "--db", str(db),
         "--mqtt-host", "broker.king.example"],
        stdout=log, stderr=subprocess.STDOUT, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        factory.wait_for(lambda: _healthy(port, ca), timeout=20, message="the enrolment server")
        token = CliRunner().invoke(tokens_cli, ["issue", "--ca-dir", str(ca.directory), "--station", "desk-7"])
        paths = StationPaths(tmp_path / "etc", tmp_path / "var")
        provision(COUNTY, "desk-7", f"https://127.0.0.1:{port}/enroll", token.output.splitlines()[0],
                  ca.directory / "ca.crt", paths.config_dir, paths.data_dir, service_user=None, echo=lambda _: None)
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(10)
        log.close()
    assert "registering station keys into the gallery database" in (tmp_path / "enroll.log").read_text()
    with SQLiteStore(db) as store:
        device = store.get_device("desk-7")
        assert device is not None and device.county == COUNTY and device.active
        assert device.public_key == load_public_key(paths.signing_pub.read_bytes())
    assert not (ca.directory / "devices.json").exists()  # the gallery is the registry now


def _healthy(port: int, ca: CountyCA) -> bool:
    try:
        return requests.get(f"https://127.0.0.1:{port}/healthz", verify=str(ca.directory / "ca.crt"),
                            timeout=2).ok
    except requests.RequestException:
        return False
