"""Provisioning end to end: a real county CA, a real HTTPS enrolment server on a free loopback port
(its certificate issued by that CA), the device-side `provision` over `requests`, and the issued
certificate checked by OpenSSL and used against a real Mosquitto with the county's generated config.

Over 500 lines because every test uses the same real county CA and enrolment server (the `county` fixture).

The server keeps every raw request body it received, so the tests can assert that no private key
material ever left the "device".
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import shutil
import stat
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from click.testing import CliRunner
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from firmware import provision as device
from firmware.provision import ProvisionError, StationPaths, provision
from firmware.provision_cli import provision as provision_cli
from sync.county.enroll.ca import CountyCA, generate_tls_key, private_key_pem
from sync.county.enroll.cli import ca as ca_cli
from sync.county.enroll.cli import tokens as tokens_cli
from sync.county.enroll.registry import JsonDeviceRegistry
from sync.county.enroll.server import EnrollmentHTTPServer, make_server
from sync.county.enroll.service import EnrollmentService, MqttEndpoint
from sync.county.enroll.tokens import TokenStore, token_hash
from sync.protocol.enroll import signing_proof_message

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

COUNTY = "test-county"
STATION = "desk-1"


class RecordingService(EnrollmentService):
    """The real service, keeping each raw request body as it arrived over TLS."""

    bodies: list[bytes]

    def handle(self, body: bytes, *, peer: str = "-") -> tuple[int, dict[str, Any]]:
        self.bodies.append(body)
        return super().handle(body, peer=peer)


@dataclass
class County:
    ca_dir: Path
    ca: CountyCA
    service: RecordingService
    server: EnrollmentHTTPServer
    url: str
    tokens: TokenStore
    registry: JsonDeviceRegistry

    @property
    def ca_file(self) -> Path:
        return self.ca_dir / "ca.crt"

    def token(self, station: str = STATION, **kwargs: Any) -> str:
        return self.tokens.issue(COUNTY, station, **kwargs).token


def _write_server_cert(ca: CountyCA, directory: Path) -> tuple[Path, Path]:
    key = generate_tls_key()
    cert = ca.issue_server_certificate(key.public_key(), ["127.0.0.1", "localhost"])
    cert_path, key_path = directory / "enroll.crt", directory / "enroll.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(private_key_pem(key))
    return cert_path, key_path


@pytest.fixture
def county(tmp_path: Path) -> Iterator[County]:
    """County CA + enrolment server over HTTPS on 127.0.0.1:<free port>, served from a thread."""
    ca_dir = tmp_path / "county-ca"
    ca = CountyCA.init(ca_dir, COUNTY)
    cert, key = _write_server_cert(ca, tmp_path)
    registry = JsonDeviceRegistry.in_ca_dir(ca_dir)
    tokens = TokenStore.in_ca_dir(ca_dir)
    service = RecordingService(ca, tokens, registry, mqtt=MqttEndpoint("broker.test-county.example", 8883))
    service.bodies = []
    server = make_server(service, "127.0.0.1", 0, cert, key)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        yield County(ca_dir, ca, service, server, server.url, tokens, registry)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def _device(tmp_path: Path, name: str = "device") -> StationPaths:
    return StationPaths(tmp_path / name / "etc", tmp_path / name / "var")


def _provision(county: County, paths: StationPaths, token: str, station: str = STATION, **kwargs: Any):
    lines: list[str] = []
    result = provision(COUNTY, station, county.url, token, county.ca_file, paths.config_dir, paths.data_dir,
                       echo=lines.append, service_user=None, **kwargs)
    return result, lines


def _snapshot(paths: StationPaths) -> dict[str, tuple[bytes, int]]:
    files = [p for p in (paths.config_dir, paths.data_dir) for p in sorted(p.rglob("*")) if p.is_file()]
    return {str(p): (p.read_bytes(), p.stat().st_mtime_ns) for p in files}


# --- the happy path -----------------------------------------------------------------------------------


def test_provision_enrols_station_with_a_client_certificate_from_the_county_ca(county: County, tmp_path: Path) -> None:
    paths = _device(tmp_path)
    result, lines = _provision(county, paths, county.token())

    assert result.status == "enrolled" and result.new_keys
    assert any("enrolled station desk-1 of county test-county" in line for line in lines), lines

    ca_cert = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
    cert = x509.load_pem_x509_certificate(paths.tls_cert.read_bytes())
    assert ca_cert == county.ca.certificate
    cert.verify_directly_issued_by(ca_cert)
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == STATION
    assert cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)[0].value == COUNTY
    assert list(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    tls_key = serialization.load_pem_private_key(paths.tls_key.read_bytes(), None)
    assert isinstance(tls_key, ec.EllipticCurvePrivateKey) and tls_key.curve.name == "secp256r1"
    assert cert.public_key() == tls_key.public_key()

    # OpenSSL itself (the library Mosquitto uses) accepts it as a TLS client certificate.
    verify = subprocess.run(["openssl", "verify", "-CAfile", str(paths.ca_cert), "-purpose", "sslclient",
                             str(paths.tls_cert)], capture_output=True, text=True)
    assert verify.returncode == 0 and verify.stdout.strip().endswith(": OK"), verify.stdout + verify.stderr

    # Private keys: 0600 in a 0700 directory. Nothing is group- or world-readable.
    assert stat.S_IMODE(paths.keys_dir.stat().st_mode) == 0o700
    for key_file in (paths.tls_key, paths.signing_key):
        assert stat.S_IMODE(key_file.stat().st_mode) == 0o600, key_file
    assert not list(paths.keys_dir.glob("*.pending")) and not list(paths.keys_dir.glob(".*"))

    # The county command key and the station's signing key are where they belong.
    command = serialization.load_pem_public_key(paths.command_key.read_bytes())
    assert command == county.ca.command_public_key
    signing = serialization.load_pem_private_key(paths.signing_key.read_bytes(), None)
    assert isinstance(signing, Ed25519PrivateKey)
    assert stat.S_IMODE((county.ca_dir / "devices.json").stat().st_mode) == 0o600
    registered = county.registry.get(STATION)
    assert registered is not None and registered["county"] == COUNTY
    assert serialization.load_pem_public_key(registered["public_key"].encode()) == signing.public_key()

    config = tomllib.loads(paths.config_file.read_text())
    assert config["station"] == {"county": COUNTY, "station": STATION, "enroll_url": county.url,
                                 "data_dir": str(paths.data_dir)}
    assert Path(config["station"]["data_dir"]).is_absolute()
    assert config["mqtt"] == {"host": "broker.test-county.example", "port": 8883}
    assert config["keys"] == paths.keys_table()
    assert all(Path(p).is_file() for p in config["keys"].values())


def test_no_private_key_material_is_ever_sent(county: County, tmp_path: Path) -> None:
    paths = _device(tmp_path)
    _provision(county, paths, county.token())

    assert len(county.service.bodies) == 1
    body = county.service.bodies[0]
    request = json.loads(body)
    assert set(request) == {"protocol", "county", "station", "token", "csr", "signing_public_key", "signing_proof"}
    assert b"PRIVATE" not in body

    tls = serialization.load_pem_private_key(paths.tls_key.read_bytes(), None)
    signing = serialization.load_pem_private_key(paths.signing_key.read_bytes(), None)
    assert isinstance(tls, ec.EllipticCurvePrivateKey) and isinstance(signing, Ed25519PrivateKey)
    secrets = [
        tls.private_numbers().private_value.to_bytes(32, "big"),
        signing.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                              serialization.NoEncryption()),
        tls.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    ]
    decoded = [body] + [base64.b64decode("".join(line for line in value.splitlines() if not line.startswith("-----")))
                        for value in request.values() if isinstance(value, str) and value.startswith("-----")]
    decoded.append(base64.b64decode(request["signing_proof"]))
    for secret in secrets:
        for form in (secret, secret.hex().encode(), base64.b64encode(secret), base64.urlsafe_b64encode(secret)):
            assert all(form not in blob for blob in decoded)


# --- re-running ---------------------------------------------------------------------------------------


def test_rerun_on_a_provisioned_station_changes_nothing(county: County, tmp_path: Path) -> None:
    paths = _device(tmp_path)
    token = county.token()
    first, _ = _provision(county, paths, token)
    before = _snapshot(paths)

    again, lines = _provision(county, paths, token)  # the token is used by now: it must not even be sent

    assert again.status == "already_provisioned" and again.serial == first.serial
    assert "already provisioned" in lines[0] and "nothing changed" in lines[0]
    assert _snapshot(paths) == before
    assert len(county.service.bodies) == 1


def test_force_renews_the_certificate_for_the_same_keys(county: County, tmp_path: Path) -> None:
    paths = _device(tmp_path)
    first, _ = _provision(county, paths, county.token())
    key_before = paths.tls_key.read_bytes()

    renewed, _ = _provision(county, paths, county.token(), force=True)

    assert renewed.status == "enrolled" and not renewed.new_keys and renewed.serial != first.serial
    assert paths.tls_key.read_bytes() == key_before
    assert len(county.tokens.certificates(STATION)) == 2


def test_a_lost_answer_is_recovered_by_retrying_with_the_same_token(county: County, tmp_path: Path) -> None:
    """The server issued the certificate and used the token, but the answer never arrived."""
    paths = _device(tmp_path)
    token = county.token()
    paths.keys_dir.mkdir(parents=True)
    keys = device._choose_keys(paths, identity_changes=False, new_keys=False)  # what provision does first
    lost = requests.post(county.url, json=device.build_request(COUNTY, STATION, token, keys),
                         verify=str(county.ca_file), timeout=10)
    assert lost.status_code == 200
    assert not paths.tls_cert.exists()

    result, lines = _provision(county, paths, token)

    assert result.status == "enrolled"
    assert "re-using the keys of an unfinished enrolment" in lines[0]
    assert result.serial == lost.json()["serial"]
    assert len(county.tokens.certificates(STATION)) == 1


# --- refusals -----------------------------------------------------------------------------------------


def test_a_used_token_is_refused_with_a_clear_message(county: County, tmp_path: Path) -> None:
    token = county.token()
    _provision(county, _device(tmp_path, "first"), token)
    second = _device(tmp_path, "second")

    with pytest.raises(ProvisionError) as caught:
        _provision(county, second, token)

    assert caught.value.code == "token_used" and caught.value.refused
    assert "already used" in str(caught.value) and "a token works once" in str(caught.value)
    assert not second.tls_cert.exists() and not second.config_file.exists()


def test_a_wrong_token_is_refused_and_nothing_is_issued(county: County, tmp_path: Path) -> None:
    county.token()
    paths = _device(tmp_path)
    with pytest.raises(ProvisionError) as caught:
        _provision(county, paths, "bst1-AAAA-BBBB-CCCC-DDDD-EEEE-FFFF-GGGG-HHHH")
    assert caught.value.code == "token_unknown"
    assert "token is not valid" in str(caught.value)
    assert county.tokens.certificates() == [] and county.registry.stations() == {}
    assert not paths.config_file.exists()


def test_a_token_for_another_station_or_an_expired_token_is_refused(county: County, tmp_path: Path) -> None:
    with pytest.raises(ProvisionError) as caught:
        _provision(county, _device(tmp_path, "a"), county.token("desk-2"))
    assert caught.value.code == "token_wrong_station" and "issued for station 'desk-2'" in str(caught.value)

    past = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=2)
    with pytest.raises(ProvisionError) as caught:
        _provision(county, _device(tmp_path, "b"), county.token(now=past))
    assert caught.value.code == "token_expired" and "expired" in str(caught.value)


def test_typing_the_token_loosely_still_works(county: County, tmp_path: Path) -> None:
    token = county.token()
    result, _ = _provision(county, _device(tmp_path), " " + token.lower().replace("-", " ") + "\n")
    assert result.status == "enrolled"


def test_a_csr_whose_cn_is_not_the_station_is_refused_and_the_token_stays_usable(county: County,
                                                                                  tmp_path: Path) -> None:
    token = county.token()
    tls, signing = ec.generate_private_key(ec.SECP256R1()), Ed25519PrivateKey.generate()
    csr = (x509.CertificateSigningRequestBuilder()
           .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "desk-9")]))
           .sign(tls, hashes.SHA256()))
    csr_der = csr.public_bytes(serialization.Encoding.DER)
    body = {
        "county": COUNTY, "station": STATION, "token": token,
        "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
        "signing_public_key": base64.b64encode(signing.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode(),
        "signing_proof": base64.b64encode(signing.sign(signing_proof_message(COUNTY, STATION, csr_der))).decode(),
    }

    answer = requests.post(county.url, json=body, verify=str(county.ca_file), timeout=10)

    assert answer.status_code == 400
    assert answer.json()["error"] == "csr_cn_mismatch"
    assert "'desk-9'" in answer.json()["message"] and "'desk-1'" in answer.json()["message"]
    assert county.tokens.certificates() == [] and county.registry.stations() == {}
    result, _ = _provision(county, _device(tmp_path), token)
    assert result.status == "enrolled"


def test_a_signing_key_the_device_cannot_prove_is_refused(county: County, tmp_path: Path) -> None:
    paths = _device(tmp_path)
    paths.keys_dir.mkdir(parents=True)
    keys = device._choose_keys(paths, identity_changes=False, new_keys=False)
    body = device.build_request(COUNTY, STATION, county.token(), keys)
    other = Ed25519PrivateKey.generate().public_key()
    body["signing_public_key"] = other.public_bytes(serialization.Encoding.PEM,
                                                    serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    answer = requests.post(county.url, json=body, verify=str(county.ca_file), timeout=10)
    assert answer.status_code == 400 and answer.json()["error"] == "signing_key_invalid"


def test_a_second_device_cannot_take_over_an_enrolled_station(county: County, tmp_path: Path) -> None:
    _provision(county, _device(tmp_path, "first"), county.token())
    token = county.token()
    with pytest.raises(ProvisionError) as caught:
        _provision(county, _device(tmp_path, "second"), token)
    assert caught.value.code == "station_conflict"
    assert "already registered with another signing key" in str(caught.value)
    unused = {t.token_id: t.used_at for t in county.tokens.list()}[token_hash(token)[:8]]
    assert unused is None  # the refused request did not burn the token


def test_wrong_county_is_refused(county: County, tmp_path: Path) -> None:
    with pytest.raises(ProvisionError) as caught:
        provision("other-county", STATION, county.url, county.token(), county.ca_file,
                  tmp_path / "etc", tmp_path / "var", echo=lambda _: None, service_user=None)
    assert caught.value.code == "wrong_county" and "'test-county'" in str(caught.value)


def test_an_unreachable_server_is_a_clear_error_and_leaves_no_half_identity(county: County, tmp_path: Path) -> None:
    port = county.server.server_address[1]
    county.server.shutdown()
    county.server.server_close()
    paths = _device(tmp_path)
    with pytest.raises(ProvisionError) as caught:
        provision(COUNTY, STATION, f"https://127.0.0.1:{port}/enroll", "bst1-XXXX", county.ca_file,
                  paths.config_dir, paths.data_dir, echo=lambda _: None, service_user=None)
    assert caught.value.code == "unreachable" and not caught.value.refused
    assert "cannot reach the enrolment server" in str(caught.value)
    assert not paths.config_file.exists() and not paths.tls_cert.exists()


def test_a_server_the_ca_file_does_not_vouch_for_is_refused(county: County, tmp_path: Path) -> None:
    stranger = CountyCA.init(tmp_path / "other-ca", "other-county")
    with pytest.raises(ProvisionError) as caught:
        provision(COUNTY, STATION, county.url, county.token(), stranger.directory / "ca.crt",
                  tmp_path / "etc", tmp_path / "var", echo=lambda _: None, service_user=None)
    assert caught.value.code == "tls" and "does not verify" in str(caught.value)
    assert county.service.bodies == []  # the token never reached an untrusted server


def test_an_unwritable_config_dir_is_found_before_the_token_is_spent(county: County, tmp_path: Path) -> None:
    token = county.token()
    (tmp_path / "etc").write_text("a file where the config directory should be")
    with pytest.raises(ProvisionError) as caught:
        provision(COUNTY, STATION, county.url, token, county.ca_file, tmp_path / "etc", tmp_path / "var",
                  echo=lambda _: None, service_user=None)
    assert caught.value.code == "setup" and str(tmp_path / "etc") in str(caught.value)
    assert county.service.bodies == []
    assert [t.used_at for t in county.tokens.list()] == [None]


def test_plain_http_urls_are_refused_before_anything_is_sent(county: County, tmp_path: Path) -> None:
    with pytest.raises(ProvisionError, match="must be https://"):
        provision(COUNTY, STATION, county.url.replace("https", "http"), county.token(), county.ca_file,
                  tmp_path / "etc", tmp_path / "var", echo=lambda _: None, service_user=None)


def test_http_layer_answers_every_bad_request_with_json(county: County) -> None:
    verify = str(county.ca_file)
    base = county.url.removesuffix("/enroll")
    cases = [
        requests.get(county.url, verify=verify, timeout=10),
        requests.post(base + "/nope", json={}, verify=verify, timeout=10),
        requests.post(county.url, data=b"x", headers={"Content-Type": "text/plain"}, verify=verify, timeout=10),
        requests.post(county.url, data=b"{not json", headers={"Content-Type": "application/json"}, verify=verify,
                      timeout=10),
        requests.post(county.url, data=b"x" * 70_000, headers={"Content-Type": "application/json"}, verify=verify,
                      timeout=10),
        requests.post(county.url, json={"county": COUNTY}, verify=verify, timeout=10),
    ]
    assert [(r.status_code, r.json()["error"]) for r in cases] == [
        (405, "method_not_allowed"), (404, "not_found"), (415, "unsupported_media_type"), (400, "bad_request"),
        (413, "too_large"), (400, "bad_request")]
    health = requests.get(base + "/healthz", verify=verify, timeout=10)
    assert health.json() == {"status": "ok", "county": COUNTY}


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_the_server_refuses_tls_below_1_2(county: County) -> None:
    import socket
    import ssl

    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(county.ca_file)
    context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
    with socket.create_connection(county.server.server_address[:2], timeout=5) as raw, pytest.raises(ssl.SSLError):
        context.wrap_socket(raw, server_hostname="127.0.0.1")


# --- the commands -------------------------------------------------------------------------------------


def test_county_and_device_commands_work_together(tmp_path: Path) -> None:
    runner = CliRunner()
    ca_dir = tmp_path / "ca"
    result = runner.invoke(ca_cli, ["init", "--ca-dir", str(ca_dir), "--county", COUNTY])
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    for name in ("ca.key", "command-signing.key"):
        assert stat.S_IMODE((ca_dir / name).stat().st_mode) == 0o600, name
    again = runner.invoke(ca_cli, ["init", "--ca-dir", str(ca_dir), "--county", COUNTY])
    assert again.exit_code == 2 and "refusing to overwrite" in again.output

    server_cert = runner.invoke(ca_cli, ["server-cert", "--ca-dir", str(ca_dir), "--name", "127.0.0.1",
                                         "--out-cert", str(tmp_path / "s.crt"), "--out-key", str(tmp_path / "s.key")])
    assert server_cert.exit_code == 0, server_cert.output
    assert stat.S_IMODE((tmp_path / "s.key").stat().st_mode) == 0o600

    gallery = runner.invoke(ca_cli, ["client-cert", "--ca-dir", str(ca_dir), "--name", f"gallery.{COUNTY}",
                                     "--out-cert", str(tmp_path / "g.crt"), "--out-key", str(tmp_path / "g.key")])
    assert gallery.exit_code == 0, gallery.output
    g_cert = x509.load_pem_x509_certificate((tmp_path / "g.crt").read_bytes())
    assert g_cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == f"gallery.{COUNTY}"
    assert list(g_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH]

    issued = runner.invoke(tokens_cli, ["issue", "--ca-dir", str(ca_dir), "--station", STATION, "--json"])
    assert issued.exit_code == 0, issued.output
    token = json.loads(issued.output)["token"]
    assert token.startswith("bst1-")
    assert token not in (ca_dir / "enroll.db").read_bytes().decode("latin-1")  # stored hashed only
    assert stat.S_IMODE((ca_dir / "enroll.db").stat().st_mode) == 0o600
    bad = runner.invoke(tokens_cli, ["issue", "--ca-dir", str(ca_dir), "--station", "Desk 1"])
    assert bad.exit_code == 2 and "not a slug" in bad.output

    service = EnrollmentService.from_ca_dir(ca_dir)
    server = make_server(service, "127.0.0.1", 0, tmp_path / "s.crt", tmp_path / "s.key")
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True)
    thread.start()
    try:
        token_file = tmp_path / "token"
        token_file.write_text(token + "\n")
        device_args = ["--county", COUNTY, "--station", STATION, "--enroll-url", server.url,
                       "--token-file", str(token_file), "--ca-bundle", str(ca_dir / "ca.crt"),
                       "--config-dir", str(tmp_path / "etc"), "--data-dir", str(tmp_path / "var"),
                       "--mqtt-host", "mqtt.local", "--device-profile", "replay", "--user", ""]
        done = runner.invoke(provision_cli, device_args)
        assert done.exit_code == 0, done.output
        assert "enrolled station desk-1" in done.output
        config = tomllib.loads((tmp_path / "etc" / "station.toml").read_text())
        assert config["station"]["device_profile"] == "replay" and config["mqtt"]["host"] == "mqtt.local"

        noop = runner.invoke(provision_cli, device_args)
        assert noop.exit_code == 0 and "already provisioned" in noop.output
        without_token = [a for a in device_args if a not in ("--token-file", str(token_file))]
        noop = runner.invoke(provision_cli, without_token)  # a re-run needs no token
        assert noop.exit_code == 0 and "already provisioned" in noop.output
        no_token = runner.invoke(provision_cli, [*without_token, "--force"])
        assert no_token.exit_code == 2 and "no enrolment token" in no_token.output

        elsewhere = [*device_args[:-6], "--data-dir", str(tmp_path / "var2"), "--config-dir", str(tmp_path / "etc2"),
                     "--json"]
        used = runner.invoke(provision_cli, elsewhere)
        assert used.exit_code == 1
        assert json.loads(used.stdout.splitlines()[-1])["error"] == "token_used"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)

    listed = runner.invoke(tokens_cli, ["list", "--ca-dir", str(ca_dir), "--json"])
    assert [token["state"] for token in json.loads(listed.output)["tokens"]] == ["used"]


def test_provision_hands_the_keys_to_the_service_user(county: County, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("chown to another user needs root")
    import pwd

    user = next((u for u in ("nobody", "daemon") if _has_user(u)), None)
    assert user is not None
    paths = _device(tmp_path)
    provision(COUNTY, STATION, county.url, county.token(), county.ca_file, paths.config_dir, paths.data_dir,
              echo=lambda _: None, service_user=user)
    uid = pwd.getpwnam(user).pw_uid
    assert paths.keys_dir.stat().st_uid == uid
    assert all(p.stat().st_uid == uid for p in paths.keys_dir.iterdir())


def _has_user(name: str) -> bool:
    import pwd

    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


# --- the certificate in use -------------------------------------------------------------------------


def test_the_provisioned_certificate_connects_to_the_county_broker_as_its_station(county: County,
                                                                                  tmp_path: Path) -> None:
    """Real Mosquitto with the county's generated config and ACL: the broker maps the certificate CN to
    the station, so the station may publish its own status and the gallery receives it."""
    from sync.county.broker_config import gallery_identity
    from sync.protocol.topics import status_topic
    from tests.sync.broker import INSTALL_HINT, PKI, MosquittoBroker, MqttTestClient, mosquitto_binary

    if mosquitto_binary() is None or shutil.which("openssl") is None:
        pytest.fail(f"Mosquitto is needed for this test: {INSTALL_HINT}")
    paths = _device(tmp_path)
    _provision(county, paths, county.token())

    broker_cert, broker_key = _write_server_cert(county.ca, tmp_path / "county-ca")
    pki = PKI(tmp_path / "pki", county.ca_file, broker_cert, broker_key, county.ca.key, county.ca.certificate)
    pki.directory.mkdir()
    pki._issued[STATION] = (paths.tls_cert, paths.tls_key)  # the station connects with what provision made
    broker = MosquittoBroker(tmp_path / "broker", pki, COUNTY)
    broker.start()
    gallery = station = None
    try:
        gallery = MqttTestClient(broker, gallery_identity(COUNTY)).connect()
        gallery.subscribe(f"booking/v1/{COUNTY}/+/status")
        station = MqttTestClient(broker, STATION).connect()
        assert not getattr(station.publish(status_topic(COUNTY, STATION), b"online"), "is_failure", False)
        message = gallery.next_message(timeout=10)
        assert (message.topic, message.payload) == (status_topic(COUNTY, STATION), b"online")
        # ...and the ACL keyed on the CN stops it writing as another station.
        denied = station.publish(status_topic(COUNTY, "desk-2"), b"spoof")
        assert getattr(denied, "is_failure", False)
        assert gallery.no_message(0.5)
    finally:
        for client in (station, gallery):
            if client is not None:
                client.close()
        broker.stop()


def test_command_key_signatures_from_the_county_verify_on_the_device(county: County, tmp_path: Path) -> None:
    paths = _device(tmp_path)
    _provision(county, paths, county.token())
    county_key = serialization.load_pem_private_key((county.ca_dir / "command-signing.key").read_bytes(), None)
    assert isinstance(county_key, Ed25519PrivateKey)
    assert stat.S_IMODE((county.ca_dir / "command-signing.key").stat().st_mode) == 0o600
    device_copy = serialization.load_pem_public_key(paths.command_key.read_bytes())
    assert isinstance(device_copy, Ed25519PublicKey)
    device_copy.verify(county_key.sign(b"purge booking 42"), b"purge booking 42")


def test_a_relative_data_dir_is_recorded_absolute_and_later_commands_use_it(county: County, tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from appliance.cli import main as station_cli
    from appliance.store import Store

    monkeypatch.delenv("BOOKING_STATION_DATA_DIR", raising=False)
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    done = runner.invoke(provision_cli, ["--county", COUNTY, "--station", STATION, "--enroll-url", county.url,
                                         "--token", county.token(), "--ca-bundle", str(county.ca_file),
                                         "--config-dir", "etc", "--data-dir", "var", "--user", ""])
    assert done.exit_code == 0, done.output
    data_dir = tmp_path / "var"
    config = tomllib.loads((tmp_path / "etc" / "station.toml").read_text())
    assert config["station"]["data_dir"] == str(data_dir)
    assert all(Path(p).is_absolute() and Path(p).is_file() for p in config["keys"].values())

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    toml = str(tmp_path / "etc" / "station.toml")
    checks = runner.invoke(station_cli, ["--config", toml, "doctor", "--json"])
    disk = next(c for c in json.loads(checks.stdout)["checks"] if c["check"] == "disk")
    assert str(data_dir) in disk["detail"], disk
    missing = runner.invoke(station_cli, ["--config", toml, "queue"])  # provisioned, never started: no station.db
    assert missing.exit_code == 2 and str(data_dir / "station.db") in missing.output
    with Store.open_data_dir(data_dir):
        pass
    queue = runner.invoke(station_cli, ["--config", toml, "queue", "--json"])
    assert queue.exit_code == 0 and json.loads(queue.stdout)["counts"]["pending"] == 0
    assert list(elsewhere.iterdir()) == []


def test_a_piped_token_and_the_agency_ori_are_taken_and_recorded(county: County, tmp_path: Path) -> None:
    """`echo "$TOKEN" | booking-station provision --agency ORI ...`: no prompt, and officers need not type the ORI."""
    runner = CliRunner()
    args = ["--county", COUNTY, "--station", STATION, "--enroll-url", county.url, "--ca-bundle", str(county.ca_file),
            "--config-dir", str(tmp_path / "etc"), "--data-dir", str(tmp_path / "var"), "--user", ""]
    bad = runner.invoke(provision_cli, [*args, "--agency", "King County"], input=county.token() + "\n")
    assert bad.exit_code == 2 and "--agency" in bad.output and "WA0170000" in bad.output
    assert not (tmp_path / "etc" / "station.toml").exists()

    done = runner.invoke(provision_cli, [*args, "--agency", "wa0170000"], input=county.token() + "\n")
    assert done.exit_code == 0, done.output
    station_toml = tmp_path / "etc" / "station.toml"
    assert tomllib.loads(station_toml.read_text())["station"]["agency_ori"] == "WA0170000"

    again = runner.invoke(provision_cli, [*args, "--agency", "WA0170001"], input="")  # re-run: only the ORI changes
    assert again.exit_code == 0 and "already provisioned" in again.output, again.output
    config = tomllib.loads(station_toml.read_text())
    assert config["station"]["agency_ori"] == "WA0170001" and config["station"]["station"] == STATION
    assert station_toml.read_text().startswith("# Booking station configuration.")
    kept = runner.invoke(provision_cli, [*args, "--force"], input=county.token() + "\n")  # no --agency: kept
    assert kept.exit_code == 0, kept.output
    assert tomllib.loads(station_toml.read_text())["station"]["agency_ori"] == "WA0170001"
