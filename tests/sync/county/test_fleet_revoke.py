"""Revocation on the broker, and county key-rotation commands, with a real county CA and a real Mosquitto.

``devices revoke`` must not stop at the gallery's registry: it regenerates the broker ACL (a ``deny``
block for the station, effective on a reload even for the connection the station already has) and
writes the county CRL (every certificate the enrolment log issued to the station, refused at every new
TLS handshake). ``devices rotate`` signs a ``rotate`` command with the county key from the CA
directory, and the station's real sync agent verifies it.
"""

from __future__ import annotations

import datetime as dt
import shutil
import signal
from pathlib import Path
from typing import Any

import click
import pytest
import tomli_w
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from appliance.doctor import CheckFailed, mqtt_connect
from appliance.store import audit
from sync.county.broker_config import BrokerConfig, gallery_identity, load_settings, render_acl, save_settings
from sync.county.enroll.ca import CountyCA, certificate_pem, generate_tls_key, private_key_pem
from sync.county.enroll.tokens import TokenStore
from sync.county.gallery.cli import register_commands
from sync.county.gallery.store import SQLiteStore
from sync.protocol import topics, wire
from tests.sync import factory
from tests.sync.broker import PKI, BrokerError, MosquittoBroker, MqttTestClient, mosquitto_binary
from tests.sync.conftest import COUNTY

OPS = f"ops.{COUNTY}"


@click.group()
def cli() -> None:
    """Stand-in for booking-gallery's main group."""


register_commands(cli)


def run(*args: object) -> Any:
    return CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)


# ------------------------------------------------------------------------------ county helpers
def county_pki(ca: CountyCA, directory: Path) -> PKI:
    """The test harness's PKI, but the county CA's: the broker's certificate from ``ca server-cert``'s code,
    clients (gallery, operator) signed by the county CA key."""
    directory.mkdir(parents=True, exist_ok=True)
    key = generate_tls_key()
    cert = ca.issue_server_certificate(key.public_key(), ["127.0.0.1", "localhost"])
    cert_path, key_path = directory / "broker.crt", directory / "broker.key"
    cert_path.write_text(certificate_pem(cert))
    key_path.write_bytes(private_key_pem(key))
    key_path.chmod(0o600)
    return PKI(directory, ca.directory / "ca.crt", cert_path, key_path, ca.key, ca.certificate)


def enrol(ca: CountyCA, pki: PKI, station: str) -> x509.Certificate:
    """A station certificate issued and logged exactly as the enrolment server does it (token redeemed,
    certificate recorded in enroll.db), usable by the harness clients as ``station``."""
    tokens = TokenStore.in_ca_dir(ca.directory)
    key = ec.generate_private_key(ec.SECP256R1())
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, station)]))
           .sign(key, hashes.SHA256()))
    cert = ca.issue_station_certificate(csr, station)
    token = tokens.issue(ca.county, station).token
    tokens.redeem(token, county=ca.county, station=station, key_fingerprint=station,
                  issue=lambda: (format(cert.serial_number, "x"), certificate_pem(cert), cert.not_valid_before_utc,
                                 cert.not_valid_after_utc))
    cert_path, key_path = pki.directory / f"{station}.crt", pki.directory / f"{station}.key"
    cert_path.write_text(certificate_pem(cert))
    key_path.write_bytes(private_key_pem(key))
    key_path.chmod(0o600)
    pki._issued[station] = (cert_path, key_path)
    return cert


def _raw(n: int) -> bytes:
    return factory.key(n).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _need_mosquitto() -> None:
    if mosquitto_binary() is None:
        pytest.fail("Mosquitto is needed for these tests: apt-get install -y mosquitto")


# ------------------------------------------------------------------------------- the generator
def test_the_acl_denies_revoked_stations_and_only_them() -> None:
    cfg = BrokerConfig(county=COUNTY, cafile="ca", certfile="c", keyfile="k", acl_file="acl",
                       revoked_stations=("st-02", "st-07", "st-02"))
    acl = render_acl(cfg)
    assert cfg.revoked_stations == ("st-02", "st-07")
    for station in ("st-02", "st-07"):
        assert f"user {station}\ntopic deny #\n" in acl
    assert "user st-01" not in acl and "pattern write booking/v1/king/%u/records" in acl
    assert f"user {gallery_identity(COUNTY)}" in acl and f"topic read booking/v1/{COUNTY}/+/status" in acl
    with pytest.raises(ValueError, match="slug"):
        BrokerConfig(county=COUNTY, cafile="ca", certfile="c", keyfile="k", acl_file="acl",
                     revoked_stations=(gallery_identity(COUNTY),))


def test_broker_settings_round_trip_beside_the_files(tmp_path: Path) -> None:
    cfg = BrokerConfig(county=COUNTY, cafile="/etc/ca.crt", certfile="c", keyfile="k", acl_file=str(tmp_path / "acl"),
                       extra_gallery_identities=(OPS,), revoked_stations=("st-02",), crlfile="/etc/crl.pem")
    save_settings(cfg, tmp_path)
    assert load_settings(tmp_path) == cfg
    with pytest.raises(ValueError, match="broker-config --out"):
        load_settings(tmp_path / "elsewhere")


# ----------------------------------------------------------------------------- broker revocation
def test_revoke_shuts_the_station_out_of_a_running_broker_after_a_reload(tmp_path: Path) -> None:
    """CRL configured from day one (devices crl --empty), so a revocation needs only SIGHUP."""
    _need_mosquitto()
    ca = CountyCA.init(tmp_path / "ca", COUNTY)
    pki = county_pki(ca, tmp_path / "pki")
    certs = {name: enrol(ca, pki, name) for name in ("st-01", "st-02")}
    broker_dir = tmp_path / "broker"
    broker_dir.mkdir()
    r = run("devices", "crl", "--empty", "--ca-dir", ca.directory, "-o", broker_dir / "crl.pem")
    assert r.exit_code == 0 and "0 revoked certificate(s)" in r.output, r.output
    broker = MosquittoBroker(broker_dir, pki, COUNTY, crlfile=str(broker_dir / "crl.pem"))
    save_settings(broker.config, broker_dir)  # what `broker-config --out` keeps for later revocations
    db = tmp_path / "gallery.db"
    with SQLiteStore(db) as store:
        store.register_device("st-01", COUNTY, _raw(1))
        store.register_device("st-02", COUNTY, _raw(2))
    broker.start()
    clients: list[MqttTestClient] = []
    try:
        one, two, gallery = (MqttTestClient(broker, name).connect()
                             for name in ("st-01", "st-02", gallery_identity(COUNTY)))
        clients += [one, two, gallery]
        assert not two.publish(topics.records_topic(COUNTY, "st-02"), b"before").is_failure
        two.subscribe(topics.acks_topic(COUNTY, "st-02"))
        gallery.publish(topics.acks_topic(COUNTY, "st-02"), b"ack before")
        assert two.next_message(5).payload == b"ack before"

        r = run("devices", "revoke", "--station", "st-02", "--db", db, "--broker-dir", broker_dir,
                "--ca-dir", ca.directory)
        assert r.exit_code == 0, r.output
        assert "Revoked st-02 in the gallery" in r.output and "denies st-02 everything" in r.output
        assert format(certs["st-02"].serial_number, "x") in r.output
        assert format(certs["st-01"].serial_number, "x") not in r.output
        assert "systemctl reload mosquitto" in r.output and "RESTART" not in r.output
        crl = x509.load_pem_x509_crl((broker_dir / "crl.pem").read_bytes())
        assert [e.serial_number for e in crl] == [certs["st-02"].serial_number]
        assert crl.is_signature_valid(ca.key.public_key())  # type: ignore[arg-type]
        assert crl.next_update_utc == ca.certificate.not_valid_after_utc

        assert broker.process is not None
        broker.process.send_signal(signal.SIGHUP)  # what `systemctl reload mosquitto` does
        factory.wait_for(lambda: two.publish(topics.records_topic(COUNTY, "st-02"), b"after").is_failure,
                         timeout=10, message="the reloaded ACL to refuse st-02 on its open connection")
        assert str(two.publish(topics.status_topic(COUNTY, "st-02"), b"{}")) == "Not authorized"
        gallery.publish(topics.acks_topic(COUNTY, "st-02"), b"ack after")  # nothing reaches it either
        assert two.no_message(1.0)
        assert not one.publish(topics.records_topic(COUNTY, "st-01"), b"still fine").is_failure

        # every new connection of st-02 is refused at the TLS handshake (CRL); st-01 still gets in
        with pytest.raises(BrokerError):
            clients.append(MqttTestClient(broker, "st-02").connect(timeout=3))
        cert, key = pki.client("st-02")
        with pytest.raises(CheckFailed, match="refused this device's certificate|closed the connection"):
            mqtt_connect(broker.host, broker.port, pki.ca_cert, cert, key, "st-02", timeout=3)
        cert, key = pki.client("st-01")
        assert "MQTT CONNECT accepted" in mqtt_connect(broker.host, broker.port, pki.ca_cert, cert, key, "st-01")
    finally:
        for client in clients:
            client.close()
        broker.stop()
    with SQLiteStore(db) as store:
        assert not store.get_device("st-02").active and store.get_device("st-01").active  # type: ignore[union-attr]


def test_a_first_crl_means_a_restart_and_revoke_says_so(tmp_path: Path) -> None:
    ca = CountyCA.init(tmp_path / "ca", COUNTY)
    pki = county_pki(ca, tmp_path / "pki")
    cert = enrol(ca, pki, "st-02")
    out = tmp_path / "broker"
    r = run("broker-config", "--county", COUNTY, "--out", out, "--cafile", "/etc/mosquitto/ca.crt",
            "--certfile", "/etc/mosquitto/broker.crt", "--keyfile", "/etc/mosquitto/broker.key")
    assert r.exit_code == 0 and "no --crlfile" in r.output, r.output
    db = tmp_path / "g.db"
    with SQLiteStore(db) as store:
        store.register_device("st-02", COUNTY, _raw(2))

    warned = run("devices", "revoke", "--station", "st-02", "--db", db)
    assert warned.exit_code == 0 and "WARNING: the broker still lets st-02 connect" in warned.output

    first = run("devices", "revoke", "--station", "st-02", "--db", db, "--broker-dir", out, "--ca-dir", ca.directory)
    assert first.exit_code == 0, first.output
    assert "RESTART mosquitto" in first.output
    conf = (out / "mosquitto.conf").read_text()
    assert f"crlfile {(out / 'crl.pem').resolve()}" in conf
    assert "user st-02\ntopic deny #" in (out / "acl").read_text()
    assert [e.serial_number for e in x509.load_pem_x509_crl((out / "crl.pem").read_bytes())] == [cert.serial_number]
    assert load_settings(out).revoked_stations == ("st-02",)

    again = run("devices", "revoke", "--station", "st-02", "--db", db, "--broker-dir", out, "--ca-dir", ca.directory)
    assert again.exit_code == 0 and "RESTART" not in again.output and "reload mosquitto" in again.output

    # a fresh broker config for the same county picks the revoked stations up from the registry
    fresh = run("broker-config", "--county", COUNTY, "--out", tmp_path / "b2", "--cafile", "ca", "--certfile", "c",
                "--keyfile", "k", "--db", db)
    assert fresh.exit_code == 0 and "Denied (revoked): st-02." in fresh.output
    bad = run("broker-config", "--county", COUNTY, "--out", tmp_path / "b3", "--cafile", "ca", "--certfile", "c",
              "--keyfile", "k", "--revoked", "not/a/slug")
    assert bad.exit_code == 1 and "slug" in bad.output


# ---------------------------------------------------------------------------------- key rotation
def _ops_config(tmp_path: Path, broker: MosquittoBroker, cn: str) -> Path:
    cert, key = broker.pki.client(cn)
    path = tmp_path / f"{cn}.toml"
    path.write_text(tomli_w.dumps({
        "broker": {"host": broker.host, "port": broker.port, "ca_file": str(broker.pki.ca_cert),
                   "cert_file": str(cert), "key_file": str(key)},
        "gallery": {"county": COUNTY},
    }))
    return path


VERIFICATION_FAILURES = {"bad_signature", "unknown_kid", "expired", "not_yet_valid", "wrong_target", "malformed",
                         "bad_value", "unknown_action"}


def test_rotate_is_signed_with_the_county_key_and_verified_by_the_station(tmp_path: Path, pki: PKI) -> None:
    _need_mosquitto()
    ca = CountyCA.init(tmp_path / "ca", COUNTY)
    broker = MosquittoBroker(tmp_path / "broker", pki, COUNTY, extra_gallery_identities=(OPS,))
    broker.start()
    try:
        _rotate_against(broker, ca, pki, tmp_path)
    finally:
        broker.stop()


def _rotate_against(broker: MosquittoBroker, ca: CountyCA, pki: PKI, tmp_path: Path) -> None:
    station = factory.make_station(tmp_path / "st-01", pki, broker.host, broker.port, **factory.FAST)
    # provisioning gives the station the county's command key from the CA directory
    shutil.copy(ca.directory / "command-signing.pub", station.data_dir / "keys" / "county-command.pub")
    db = tmp_path / "g.db"
    with SQLiteStore(db) as gallery:
        for n, name in ((1, "st-01"), (9, "st-09"), (8, "st-08")):
            gallery.register_device(name, COUNTY, _raw(n))
        gallery.revoke_device("st-08")
    ops = _ops_config(tmp_path, broker, OPS)
    agent = factory.AgentThread(station).start()
    store = station.open_store()
    try:
        r = run("devices", "rotate", "--station", "st-01", "--ca-dir", ca.directory, "--config", ops, "--db", db)
        assert r.exit_code == 0, r.output
        sent = [line.split("command ")[1].split(",")[0] for line in r.output.splitlines() if line.startswith("Sent")]
        assert len(sent) == 2 and "rotate tls-certificate" in r.output and "rotate signing-key" in r.output

        def outcomes() -> dict[str, tuple[str, dict[str, Any]]]:
            return {e.details_dict.get("command_id"): (e.action, e.details_dict)
                    for e in audit.entries(store.conn) if e.action in ("command_applied", "command_refused")}

        factory.wait_for(lambda: set(sent) <= set(outcomes()), message="the station to handle both commands")
        for command_id in sent:
            audited, details = outcomes()[command_id]
            # verified as the county's (signature, kid, station, expiry); what it then does is the agent's call
            assert details.get("code") not in VERIFICATION_FAILURES, details
            assert details["kid"] == f"county:{COUNTY}" and details["action"] == "rotate", details
    finally:
        agent.close()
        store.close()
    # a station with no session on the broker would never get it: said, and exit 1
    r = run("devices", "rotate", "--station", "st-09", "--ca-dir", ca.directory, "--config", ops, "--db", db)
    assert r.exit_code == 1 and "will NOT get this command" in r.output
    # a running gallery worker's identity is refused (it would take over the worker's session)
    worker = _ops_config(tmp_path, broker, gallery_identity(COUNTY))
    r = run("devices", "rotate", "--station", "st-01", "--ca-dir", ca.directory, "--config", worker, "--db", db)
    assert r.exit_code == 1 and "gallery worker's identity" in r.output
    r = run("devices", "rotate", "--station", "st-08", "--ca-dir", ca.directory, "--out", tmp_path / "cmds", "--db", db)
    assert r.exit_code == 1 and "revoked" in r.output
    r = run("devices", "rotate", "--station", "st-77", "--ca-dir", ca.directory, "--out", tmp_path / "cmds", "--db", db)
    assert r.exit_code == 1 and "not registered" in r.output
    r = run("devices", "rotate", "--station", "st-01", "--ca-dir", ca.directory, "--db", db)
    assert r.exit_code == 2 and "--config" in r.output


def test_rotate_can_write_the_signed_command_for_later(tmp_path: Path) -> None:
    ca = CountyCA.init(tmp_path / "ca", COUNTY)
    db = tmp_path / "g.db"
    with SQLiteStore(db) as gallery:
        gallery.register_device("st-01", COUNTY, _raw(1))
    before = dt.datetime.now(dt.timezone.utc)
    r = run("devices", "rotate", "--station", "st-01", "--target", "tls-certificate", "--expires-in", "12",
            "--ca-dir", ca.directory, "--out", tmp_path / "cmds", "--db", db)
    assert r.exit_code == 0, r.output
    [path] = list((tmp_path / "cmds").iterdir())
    assert path.name.startswith("st-01-tls-certificate-") and "mosquitto_pub" in r.output
    county_key = ca.command_public_key
    command = wire.decode_command(path.read_bytes(), lambda kid: county_key if kid == f"county:{COUNTY}" else None,
                                  county=COUNTY, station="st-01")
    assert (command.action, command.args) == ("rotate", {"target": "tls-certificate"})
    assert dt.timedelta(hours=11.9) < command.expires_at - before < dt.timedelta(hours=12.1)
