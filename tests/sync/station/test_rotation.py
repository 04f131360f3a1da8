"""Certificate rotation by county command, with the real county CA, enrolment server and Mosquitto.

County IT runs ``devices rotate --target tls-certificate`` (signed with the county command key, published
as the operator identity); the provisioned station's sync agent verifies it, gets a new key and
certificate from the enrolment server's ``POST /rotate`` (proving itself with its current signing key),
installs them and reconnects with them. A refusal by the server keeps the old identity working, raises
``key_rotation_failed`` and is retried until it succeeds. The server-side checks (command, proof, reused
command id) are also tested directly, without a network.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.doctor import mqtt_connect
from appliance.store import audit
from firmware.provision import build_csr
from sync.county.enroll.ca import CountyCA
from sync.county.enroll.registry import JsonDeviceRegistry
from sync.county.enroll.service import EnrollmentService
from sync.county.enroll.tokens import TokenStore
from sync.county.gallery.devices import StoreDeviceRegistry, sign_rotate
from sync.protocol.enroll import public_key_pem, rotation_proof_message
from tests.sync import factory
from tests.sync.broker import start_gallery, stop_gallery
from tests.sync.county.test_fleet_provision import COUNTY, County, provision_station, running_county
from tests.sync.county.test_fleet_revoke import OPS, _ops_config
from tests.sync.county.test_fleet_revoke import run as gallery_cli

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@pytest.fixture
def county(tmp_path: Path) -> Iterator[County]:
    """The fleet proof's county, with the operator identity allowed to publish commands."""
    with running_county(tmp_path, "rotation proof", extra_gallery_identities=(OPS,)) as c:
        yield c


def _serial(path: Path) -> int:
    return x509.load_pem_x509_certificate(path.read_bytes()).serial_number


def _commands(store: Any) -> list[tuple[str, dict[str, Any]]]:
    return [(e.action, e.details_dict) for e in audit.entries(store.conn)
            if e.action in ("command_applied", "command_refused")]


def test_a_station_rotates_its_certificate_on_county_command(county: County, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    desk = provision_station(county, tmp_path / "desk-1", "desk-1")
    doc = tomllib.loads(desk.config_path.read_text())
    assert doc["station"]["enroll_url"] == county.url  # provision records where to rotate
    doc["sync"]["rotate_retry"] = 1.0
    desk.config_path.write_text(tomli_w.dumps(doc))
    keys = desk.data_dir / "keys"
    old_serial, old_key = _serial(keys / "tls.crt"), (keys / "tls.key").read_bytes()
    ops = _ops_config(tmp_path, county.broker, OPS)

    gallery = start_gallery(county.broker, county.db, {})
    store = desk.open_store()
    agent = factory.AgentThread(desk).start()
    try:
        first = factory.store_booking(store, 1, station="desk-1")
        factory.wait_for(lambda: gallery.store.get_record(first) is not None, timeout=20, message="first record")

        # 1. The enrolment server refuses (the registry holds another key: the proof does not verify).
        other = public_key_pem(Ed25519PrivateKey.generate().public_key())
        monkeypatch.setattr(StoreDeviceRegistry, "get_public_key", lambda self, county, station: other)
        r = gallery_cli("devices", "rotate", "--station", "desk-1", "--target", "tls-certificate", "--ca-dir",
                        county.ca.directory, "--config", ops, "--db", county.db)
        assert r.exit_code == 0, r.output
        [command_id] = [line.split("command ")[1].split(",")[0] for line in r.output.splitlines()
                        if line.startswith("Sent")]
        factory.wait_for(lambda: "key_rotation_failed" in {a.name for a in store.active_alarms()},
                         message="the key_rotation_failed alarm")
        refused = [d for a, d in _commands(store) if d.get("command_id") == command_id]
        assert refused and refused[0]["code"] == "rotation_failed" and "proof_invalid" in refused[0]["detail"]
        assert _serial(keys / "tls.crt") == old_serial and (keys / "tls.key").read_bytes() == old_key
        # ... and the old identity keeps delivering
        second = factory.store_booking(store, 2, station="desk-1")
        factory.wait_for(lambda: gallery.store.get_record(second) is not None, message="record on the old identity")
        assert (desk.data_dir / "sync" / "rotate-retry.cose").exists()

        # 2. The server is fixed; the agent's retry rotates: new key and certificate, audited, reconnected.
        generation = agent.agent._generation
        monkeypatch.undo()
        factory.wait_for(lambda: any(a == "command_applied" and d.get("command_id") == command_id
                                     for a, d in _commands(store)), timeout=15, message="the rotation applied")
        [applied] = [d for a, d in _commands(store) if a == "command_applied" and d.get("command_id") == command_id]
        new_serial = _serial(keys / "tls.crt")
        assert new_serial != old_serial and (keys / "tls.key").read_bytes() != old_key
        assert applied["result"]["old_serial"] == format(old_serial, "x")
        assert applied["result"]["new_serial"] == format(new_serial, "x")
        assert not (keys / "tls.key.pending").exists() and not (desk.data_dir / "sync" / "rotate-retry.cose").exists()
        assert (keys / "tls.key").stat().st_mode & 0o777 == 0o600
        assert "key_rotation_failed" not in {a.name for a in store.active_alarms()}
        factory.wait_for(lambda: agent.agent._generation > generation and agent.agent.ready.is_set(),
                         message="the agent reconnecting with the new certificate")
        third = factory.store_booking(store, 3, station="desk-1")
        factory.wait_for(lambda: gallery.store.get_record(third) is not None, message="record on the new certificate")
        assert "MQTT CONNECT accepted" in mqtt_connect(county.broker.host, county.broker.port, keys / "ca.crt",
                                                       keys / "tls.crt", keys / "tls.key", "desk-probe")
    finally:
        agent.close()
        stop_gallery(gallery)
        store.close()
    # the county logged the new certificate (so a later revocation puts it in the CRL too)
    serials = {c["serial"] for c in TokenStore.in_ca_dir(county.ca.directory).certificates("desk-1")}
    assert {format(old_serial, "x"), format(new_serial, "x")} <= serials


# ------------------------------------------------------------------------ the server's checks, directly
def _body(station: str, payload: bytes, command_id: str, signing: Ed25519PrivateKey,
          tls: ec.EllipticCurvePrivateKey | None = None) -> dict[str, Any]:
    from cryptography.hazmat.primitives import serialization

    csr = build_csr(COUNTY, station, tls or ec.generate_private_key(ec.SECP256R1()))
    der = csr.public_bytes(serialization.Encoding.DER)
    return {"protocol": 1, "county": COUNTY, "station": station,
            "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
            "rotate_command": base64.b64encode(payload).decode(),
            "current_proof": base64.b64encode(signing.sign(rotation_proof_message(COUNTY, station, der, command_id)))
            .decode()}


def _handle(service: EnrollmentService, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    import json

    return service.handle_rotate(json.dumps(body).encode())


def test_the_enrolment_server_checks_command_proof_and_reuse(tmp_path: Path) -> None:
    ca = CountyCA.init(tmp_path / "ca", COUNTY)
    registry = JsonDeviceRegistry.in_ca_dir(ca.directory)
    signing = Ed25519PrivateKey.generate()
    registry.register_device(COUNTY, "desk-1", public_key_pem(signing.public_key()))
    service = EnrollmentService(ca, TokenStore.in_ca_dir(ca.directory), registry)
    [tls_cmd] = sign_rotate(ca.directory, None, "desk-1", ["tls-certificate"])
    cid = tls_cmd.command.command_id
    tls = ec.generate_private_key(ec.SECP256R1())

    status, answer = _handle(service, _body("desk-1", tls_cmd.payload, cid, signing, tls))
    assert status == 200, answer
    cert = x509.load_pem_x509_certificate(answer["certificate"].encode())
    assert cert.public_key().public_numbers() == tls.public_key().public_numbers()
    # a retry with the same key (lost answer) gets the same certificate; another key is a reused command
    assert _handle(service, _body("desk-1", tls_cmd.payload, cid, signing, tls)) == (200, answer)
    status, answer = _handle(service, _body("desk-1", tls_cmd.payload, cid, signing))
    assert (status, answer["error"]) == (409, "command_used")

    [fresh] = sign_rotate(ca.directory, None, "desk-1", ["tls-certificate"])
    fid = fresh.command.command_id
    bad_proof = _handle(service, _body("desk-1", fresh.payload, fid, Ed25519PrivateKey.generate()))
    assert (bad_proof[0], bad_proof[1]["error"]) == (403, "proof_invalid")
    wrong_id = _handle(service, _body("desk-1", fresh.payload, cid, signing))  # proof for another command
    assert (wrong_id[0], wrong_id[1]["error"]) == (403, "proof_invalid")
    [signing_cmd] = sign_rotate(ca.directory, None, "desk-1", ["signing-key"])
    other = _handle(service, _body("desk-1", signing_cmd.payload, signing_cmd.command.command_id, signing))
    assert (other[0], other[1]["error"]) == (403, "command_invalid")
    [for_desk2] = sign_rotate(ca.directory, None, "desk-2", ["tls-certificate"])
    misdirected = _handle(service, _body("desk-1", for_desk2.payload, for_desk2.command.command_id, signing))
    assert (misdirected[0], misdirected[1]["error"]) == (403, "command_invalid")
    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(hours=2)
    [expired] = sign_rotate(ca.directory, None, "desk-1", ["tls-certificate"], lifetime=dt.timedelta(hours=1),
                            now=past)
    late = _handle(service, _body("desk-1", expired.payload, expired.command.command_id, signing))
    assert (late[0], late[1]["error"]) == (403, "command_invalid") and "expired" in late[1]["message"]
    forged_key = Ed25519PrivateKey.generate()
    from sync.protocol.wire import encode_command

    forged = encode_command(fresh.command, forged_key, kid=fresh.kid)
    bad_sig = _handle(service, _body("desk-1", forged, fid, signing))
    assert (bad_sig[0], bad_sig[1]["error"]) == (403, "command_invalid")
    # the request's shape is checked as at enrolment: protocol version, this county, a station slug, a PEM CSR
    genuine = _body("desk-1", fresh.payload, fid, signing)
    for change, code, words in (({"protocol": 2}, "bad_request", "protocol 2 is not supported"),
                                ({"county": "pierce"}, "wrong_county", f"serves county '{COUNTY}', not 'pierce'"),
                                ({"station": "Desk 1"}, "bad_request", "is not a valid id"),
                                ({"csr": "not a csr"}, "csr_invalid", "not a PEM certificate signing request")):
        status, refused = _handle(service, {**genuine, **change})
        assert (refused["error"], words in refused["message"]) == (code, True), refused
    assert _handle(service, genuine)[0] == 200  # the genuine one still works
