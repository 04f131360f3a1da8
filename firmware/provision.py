"""Device-side provisioning: give a booking station its identity, once, from a one-time token.

It stays one module (over 500 lines) because provisioning and certificate rotation must run exactly the
same key, request and certificate checks, which live here once for both.

``provision(...)`` runs on the station itself (as root, by the installer or county IT):

1. Generates the station's EC P-256 TLS key and Ed25519 record-signing key *on the device*, as 0600
   files under ``DATA_DIR/keys`` (a 0700 directory). Only public keys, a CSR and a proof signature
   are sent; the private keys never leave the device.
2. POSTs the enrolment request over HTTPS, trusting only the county CA file it is given (never the
   system store: a station must not enrol with whoever holds any public certificate for that name).
3. Checks the answer (the certificate is for *our* key, CN = station, client-auth EKU, signed by the
   returned CA) and stores the certificate, the county CA certificate and the county command key.
4. Writes ``CONFIG_DIR/station.toml``: ``[station]``, ``[mqtt]`` and ``[keys]``; other sections of an
   existing file (``[vision]``, ...) are kept.

Re-running is safe. A station whose config, keys and certificate agree and are valid is left
untouched unless ``force``. New keys wait as ``*.pending`` files until the certificate for them has
arrived, so a lost answer, a crash or a refused token never destroys a working identity, and a retry
after a lost answer re-sends the same keys (the server then returns the same certificate instead of
calling the token used).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import os
import pwd
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import requests
import tomli_w
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sync.protocol.enroll import (
    PROTOCOL_VERSION,
    public_key_pem,
    rotate_url,
    rotation_proof_message,
    signing_proof_message,
)
from sync.protocol.files import make_private_dir, write_file_atomic, write_private_file, write_public_file
from sync.protocol.topics import TopicError, check_slug

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

DEFAULT_CONFIG_DIR = Path("/etc/booking-station")
DEFAULT_DATA_DIR = Path("/var/lib/booking-station")
SERVICE_USER = "booking-station"
DEFAULT_MQTT_PORT = 8883
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 30.0

Echo = Callable[[str], None]


class ProvisionError(Exception):
    """Provisioning failed; the message names the cause and the fix. ``code`` is machine-readable:
    a server error code (``token_used``, ``token_unknown``, ...) or ``unreachable``, ``tls``,
    ``bad_response``, ``setup``, ``already_provisioned``."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def refused(self) -> bool:
        """True when the server refused the request (as opposed to the device or network failing)."""
        return self.code not in {"unreachable", "tls", "bad_response", "setup", "already_provisioned"}


@dataclass(frozen=True)
class StationPaths:
    """Where a station's identity lives. ``[keys]`` in station.toml records the same paths."""

    config_dir: Path
    data_dir: Path

    @property
    def config_file(self) -> Path:
        return self.config_dir / "station.toml"

    @property
    def keys_dir(self) -> Path:
        return self.data_dir / "keys"

    @property
    def tls_key(self) -> Path:
        return self.keys_dir / "tls.key"

    @property
    def tls_cert(self) -> Path:
        return self.keys_dir / "tls.crt"

    @property
    def ca_cert(self) -> Path:
        return self.keys_dir / "ca.crt"

    @property
    def signing_key(self) -> Path:
        return self.keys_dir / "signing.key"

    @property
    def signing_pub(self) -> Path:
        return self.keys_dir / "signing.pub"

    @property
    def command_key(self) -> Path:
        return self.keys_dir / "county-command.pub"

    def pending(self, path: Path) -> Path:
        return path.with_name(path.name + ".pending")

    def keys_table(self) -> dict[str, str]:
        return {
            "tls_key": str(self.tls_key),
            "tls_cert": str(self.tls_cert),
            "ca_cert": str(self.ca_cert),
            "signing_key": str(self.signing_key),
            "county_command_key": str(self.command_key),
        }


@dataclass(frozen=True)
class Identity:
    """A station's current, checked identity on disk."""

    county: str
    station: str
    serial: str
    not_after: dt.datetime


@dataclass(frozen=True)
class ProvisionResult:
    status: Literal["enrolled", "already_provisioned"]
    county: str
    station: str
    serial: str
    not_after: dt.datetime
    paths: StationPaths
    new_keys: bool = False


@dataclass
class _Keys:
    tls: ec.EllipticCurvePrivateKey
    signing: Ed25519PrivateKey
    origin: Literal["new", "pending", "current"]  # made now / by an unfinished attempt / the installed pair

    @property
    def pending(self) -> bool:
        """Not yet paired with a certificate: kept as ``*.pending`` files until one arrives."""
        return self.origin != "current"


# --- reading what is on disk -----------------------------------------------------------------------


def read_station_table(path: Path) -> dict[str, Any]:
    """``[station]`` of an existing station.toml; {} when there is none or it cannot be read (provision says so)."""
    try:
        table = _read_config(path).get("station", {})
    except ProvisionError:
        return {}
    return table if isinstance(table, dict) else {}


def _read_config(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ProvisionError("setup", f"cannot read {path}: {exc}") from exc


def _load_private(path: Path) -> Any:
    return serialization.load_pem_private_key(path.read_bytes(), password=None)


def _cn(cert: x509.Certificate) -> str | None:
    values = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return values[0].value if len(values) == 1 and isinstance(values[0].value, str) else None


def _same_public(a: Any, b: Any) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return bool(a.public_bytes(*fmt) == b.public_bytes(*fmt))


def _certificate_problem(cert: x509.Certificate, ca: x509.Certificate, tls_public: Any, station: str,
                         now: dt.datetime) -> str | None:
    """Why ``cert`` is not a usable station certificate for our key, or None when it is."""
    if not _same_public(cert.public_key(), tls_public):
        return "the certificate is not for this device's TLS key"
    if _cn(cert) != station:
        return f"the certificate's CN is {_cn(cert)!r}, not the station id {station!r}"
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        return "the certificate has no extended key usage (clientAuth is needed)"
    if ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        return "the certificate is not valid for TLS client authentication"
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        return "the certificate is not signed by the county CA certificate"
    if now >= cert.not_valid_after_utc:
        return f"the certificate expired at {cert.not_valid_after_utc.isoformat(timespec='seconds')}"
    return None


def current_identity(paths: StationPaths, now: dt.datetime | None = None) -> Identity | None:
    """The identity on disk if config, keys and a valid certificate all agree; else None.

    Anything missing, unreadable, expired or mismatched means "not provisioned", never an exception:
    the answer decides whether to enrol, and enrolling is the fix for all of those.
    """
    now = now or dt.datetime.now(dt.timezone.utc)
    station_table = _read_config(paths.config_file).get("station", {})
    county, station = station_table.get("county"), station_table.get("station")
    if not (isinstance(county, str) and isinstance(station, str)):
        return None
    try:
        tls = _load_private(paths.tls_key)
        _load_private(paths.signing_key)
        cert = x509.load_pem_x509_certificate(paths.tls_cert.read_bytes())
        ca = x509.load_pem_x509_certificate(paths.ca_cert.read_bytes())
        command = serialization.load_pem_public_key(paths.command_key.read_bytes())
    except (OSError, ValueError, TypeError):
        return None
    if not isinstance(command, Ed25519PublicKey):
        return None
    if _certificate_problem(cert, ca, tls.public_key(), station, now) is not None:
        return None
    return Identity(county, station, format(cert.serial_number, "x"), cert.not_valid_after_utc)


# --- the steps -------------------------------------------------------------------------------------


def _private_pem(key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _choose_keys(paths: StationPaths, *, identity_changes: bool, new_keys: bool) -> _Keys:
    """Keys for this enrolment: a pending pair from an unfinished attempt, else the current pair, else new.

    New keys are written as ``*.pending`` before anything is sent, so a retry after a lost answer sends
    the same keys; the current pair stays in place until the new certificate has arrived.
    """
    pending_tls, pending_signing = paths.pending(paths.tls_key), paths.pending(paths.signing_key)
    if not new_keys and pending_tls.exists() and pending_signing.exists():
        with contextlib.suppress(OSError, ValueError, TypeError):
            tls, signing = _load_private(pending_tls), _load_private(pending_signing)
            if isinstance(tls, ec.EllipticCurvePrivateKey) and isinstance(signing, Ed25519PrivateKey):
                return _Keys(tls, signing, "pending")
    if not (new_keys or identity_changes) and paths.tls_key.exists() and paths.signing_key.exists():
        try:
            tls, signing = _load_private(paths.tls_key), _load_private(paths.signing_key)
        except (OSError, ValueError, TypeError) as exc:
            raise ProvisionError("setup", f"the keys in {paths.keys_dir} are unreadable ({exc}); "
                                          "re-run with --new-keys to replace them") from exc
        if isinstance(tls, ec.EllipticCurvePrivateKey) and isinstance(signing, Ed25519PrivateKey):
            return _Keys(tls, signing, "current")
    tls, signing = ec.generate_private_key(ec.SECP256R1()), Ed25519PrivateKey.generate()
    write_private_file(pending_tls, _private_pem(tls))
    write_private_file(pending_signing, _private_pem(signing))
    return _Keys(tls, signing, "new")


def build_csr(county: str, station: str, tls_key: ec.EllipticCurvePrivateKey) -> x509.CertificateSigningRequest:
    """The station's CSR (O = county, CN = station), self-signed by its TLS key."""
    return (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, county),
            x509.NameAttribute(NameOID.COMMON_NAME, station),
        ]))
        .sign(tls_key, hashes.SHA256())
    )


def build_request(county: str, station: str, token: str, keys: _Keys) -> dict[str, Any]:
    """The enrolment request body: a CSR, the Ed25519 public key and a proof signature. No private key."""
    csr = build_csr(county, station, keys.tls)
    csr_der = csr.public_bytes(serialization.Encoding.DER)
    proof = keys.signing.sign(signing_proof_message(county, station, csr_der))
    return {
        "protocol": PROTOCOL_VERSION,
        "county": county,
        "station": station,
        "token": token,
        "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
        "signing_public_key": public_key_pem(keys.signing.public_key()),
        "signing_proof": base64.b64encode(proof).decode(),
    }


def _post(url: str, body: dict[str, Any], ca_bundle: Path) -> dict[str, Any]:
    try:
        response = requests.post(url, json=body, verify=str(ca_bundle), timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                                 allow_redirects=False)
    except requests.exceptions.SSLError as exc:
        raise ProvisionError("tls", f"no trusted TLS connection to {url}: the server's certificate does not verify "
                                    f"against {ca_bundle} (is it the county CA file, and the right address?): "
                                    f"{_reason(exc)}") from exc
    except requests.exceptions.Timeout as exc:
        raise ProvisionError("unreachable", f"the enrolment server at {url} did not answer in time; check the "
                                            "address and that this device can reach it") from exc
    except requests.exceptions.ConnectionError as exc:
        raise ProvisionError("unreachable", f"cannot reach the enrolment server at {url}: {_reason(exc)}. Check the "
                                            "address, that the server is running and that this device can reach "
                                            "it.") from exc
    except requests.exceptions.RequestException as exc:
        raise ProvisionError("unreachable", f"the request to {url} failed: {_reason(exc)}") from exc
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ProvisionError("bad_response", f"{url} did not answer like an enrolment server (HTTP "
                                             f"{response.status_code}, {response.headers.get('Content-Type', '?')})")
    if response.status_code != 200:
        code = str(data.get("error") or f"http_{response.status_code}")
        message = str(data.get("message") or response.reason)
        raise ProvisionError(code, f"the enrolment server refused this station ({code}): {message}")
    return data


def _reason(exc: BaseException) -> str:
    """The innermost useful sentence of a requests/urllib3 error chain (they nest four deep)."""
    text = str(exc)
    for marker in ("Caused by ", "] "):
        if marker in text:
            text = text.rsplit(marker, 1)[-1]
    text = re.sub(r"\s*\(_ssl\.c:\d+\)", "", text)
    return text.strip("()'\" ") or type(exc).__name__


def _check_response(data: dict[str, Any], keys: _Keys, county: str, station: str) -> tuple[
        x509.Certificate, x509.Certificate, Ed25519PublicKey]:
    try:
        cert = x509.load_pem_x509_certificate(str(data["certificate"]).encode())
        ca = x509.load_pem_x509_certificate(str(data["ca_certificate"]).encode())
        command = serialization.load_pem_public_key(str(data["county_command_public_key"]).encode())
    except (KeyError, ValueError, TypeError) as exc:
        raise ProvisionError("bad_response",
                             f"the enrolment server's answer is incomplete or unreadable: {exc}") from exc
    if data.get("county") not in (None, county) or data.get("station") not in (None, station):
        raise ProvisionError("bad_response", "the enrolment server answered for another county or station")
    if not isinstance(command, Ed25519PublicKey):
        raise ProvisionError("bad_response", "the county command key is not an Ed25519 key")
    try:
        is_ca = ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        is_ca = False
    if not is_ca:
        raise ProvisionError("bad_response", "the returned CA certificate is not a CA certificate")
    problem = _certificate_problem(cert, ca, keys.tls.public_key(), station, dt.datetime.now(dt.timezone.utc))
    if problem:
        raise ProvisionError("bad_response", f"the enrolment server's certificate is unusable: {problem}")
    return cert, ca, command


def _write_config(paths: StationPaths, county: str, station: str, mqtt: dict[str, Any],
                  device_profile: str | None, enroll_url: str = "", agency_ori: str | None = None) -> None:
    data = _read_config(paths.config_file)
    station_table: dict[str, Any] = {"county": county, "station": station, "data_dir": str(paths.data_dir)}
    if enroll_url:  # where the sync agent asks for a new certificate when the county orders a rotation
        station_table["enroll_url"] = enroll_url
    previous = data.get("station", {})
    old_device_profile = previous.get("device_profile", previous.get("profile"))  # "profile": the old key name
    if device_profile or old_device_profile:
        station_table["device_profile"] = device_profile or old_device_profile
    agency = agency_ori or previous.get("agency_ori")
    if agency:  # given now, or kept from an earlier run
        station_table["agency_ori"] = agency
    data["station"] = station_table
    data["mqtt"] = mqtt
    data["keys"] = paths.keys_table()
    _save_config(paths, data)


def _save_config(paths: StationPaths, data: dict[str, Any]) -> None:
    # [station], [mqtt], [keys] first, then whatever sections the file already had.
    ordered = {k: data[k] for k in ("station", "mqtt", "keys") if k in data} | {
        k: v for k, v in data.items() if k not in ("station", "mqtt", "keys")}
    header = ("# Booking station configuration. [station], [mqtt] and [keys] are written by\n"
              "# `booking-station provision`; other sections are yours and are kept when it runs again.\n")
    paths.config_dir.mkdir(parents=True, exist_ok=True)
    write_file_atomic(paths.config_file, (header + tomli_w.dumps(ordered)).encode(), 0o644)


def _record_agency(paths: StationPaths, agency_ori: str | None, echo: Echo) -> None:
    """`--agency` on an already provisioned station: only the ORI changes, the identity stays."""
    data = _read_config(paths.config_file)
    if not agency_ori or data.get("station", {}).get("agency_ori") == agency_ori:
        return
    data.setdefault("station", {})["agency_ori"] = agency_ori
    _save_config(paths, data)
    echo(f"recorded agency ORI {agency_ori} in {paths.config_file}")


def _hand_over(paths: StationPaths, user: str | None, echo: Echo) -> None:
    """Give the key directory to the service user, so the station services (not root) can read it."""
    if not user or os.geteuid() != 0:
        return
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        echo(f"note: user {user} does not exist yet (install the systemd units first, then re-run provision); "
             f"{paths.keys_dir} stays owned by root")
        return
    try:
        for path in [paths.keys_dir, *paths.keys_dir.iterdir()]:
            os.chown(path, entry.pw_uid, entry.pw_gid)
    except OSError as exc:
        echo(f"warning: cannot give {paths.keys_dir} to user {user} ({exc}); the station services need to read "
             f"it: chown -R {user}: {paths.keys_dir}")


# --- the whole job ---------------------------------------------------------------------------------


def provision(county: str, station: str, enroll_url: str, token: str, ca_bundle: Path | str,
              config_dir: Path | str = DEFAULT_CONFIG_DIR, data_dir: Path | str = DEFAULT_DATA_DIR, *,
              force: bool = False, new_keys: bool = False, mqtt_host: str | None = None,
              mqtt_port: int | None = None, device_profile: str | None = None, agency_ori: str | None = None,
              service_user: str | None = SERVICE_USER, echo: Echo = print) -> ProvisionResult:
    """Enrol this device as ``station`` of ``county`` (see the module docstring). Raises ProvisionError."""
    try:
        check_slug(county, "county")
        check_slug(station, "station")
    except TopicError as exc:
        raise ProvisionError("setup", str(exc)) from exc
    if urlsplit(enroll_url).scheme != "https":
        raise ProvisionError("setup", f"the enrolment URL must be https:// (the token must not travel in the clear), "
                                      f"got {enroll_url!r}")
    ca_bundle = Path(ca_bundle)
    if not ca_bundle.is_file():
        raise ProvisionError("setup", f"the CA file to trust the enrolment server, {ca_bundle}, does not exist")
    # Absolute: station.toml records data_dir and the key paths, read later from any working directory.
    paths = StationPaths(Path(config_dir), Path(data_dir).absolute())

    identity = current_identity(paths)
    if identity is not None and not force:
        if (identity.county, identity.station) == (county, station):
            echo(f"already provisioned: station {station} of county {county}, certificate serial {identity.serial} "
                 f"valid until {identity.not_after:%Y-%m-%d}; nothing changed (--force enrols again)")
            _record_agency(paths, agency_ori, echo)
            if paths.pending(paths.tls_key).exists():
                echo(f"note: {paths.keys_dir} holds keys of an unfinished enrolment (*.pending); --force finishes it")
            return ProvisionResult("already_provisioned", county, station, identity.serial, identity.not_after,
                                   paths)
        raise ProvisionError("already_provisioned",
                             f"this device is already provisioned as station {identity.station} of county "
                             f"{identity.county} (certificate valid until {identity.not_after:%Y-%m-%d}); re-run "
                             f"with --force to enrol it as station {station} of county {county} with new keys")
    if not token.strip():
        raise ProvisionError("setup", "no enrolment token: county IT issues one per station "
                                      "(booking-gallery tokens issue --station ID)")
    old = _read_config(paths.config_file).get("station", {})
    identity_changes = bool(old) and (old.get("county"), old.get("station")) != (county, station)

    # Everything this run will write must be writable *before* the token is spent.
    try:
        make_private_dir(paths.keys_dir)
        paths.config_dir.mkdir(parents=True, exist_ok=True)
        if not os.access(paths.config_dir, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied", str(paths.config_dir))
        keys = _choose_keys(paths, identity_changes=identity_changes, new_keys=new_keys)
    except OSError as exc:
        raise ProvisionError("setup", f"cannot write {exc.filename or paths.keys_dir}: {exc.strerror or exc} "
                                      "(run provision as root)") from exc
    origin = {"new": "generated new keys", "pending": "re-using the keys of an unfinished enrolment",
              "current": "re-using this station's keys"}[keys.origin]
    echo(f"{origin} in {paths.keys_dir}: EC P-256 (TLS) and Ed25519 (record signing), 0600; private keys never "
         "leave this device")

    data = _post(enroll_url, build_request(county, station, token.strip(), keys), ca_bundle)
    cert, ca, command = _check_response(data, keys, county, station)

    try:
        # The certificate, then the keys it belongs to, then drop the pending copies: a crash at any point
        # leaves either the old identity or pending keys that a re-run completes with the same token.
        write_public_file(paths.ca_cert, ca.public_bytes(serialization.Encoding.PEM))
        write_public_file(paths.command_key, public_key_pem(command).encode())
        write_public_file(paths.tls_cert, cert.public_bytes(serialization.Encoding.PEM))
        write_public_file(paths.signing_pub, public_key_pem(keys.signing.public_key()).encode())
        if keys.pending:
            write_private_file(paths.tls_key, _private_pem(keys.tls))
            write_private_file(paths.signing_key, _private_pem(keys.signing))
            for path in (paths.pending(paths.tls_key), paths.pending(paths.signing_key)):
                with contextlib.suppress(FileNotFoundError):
                    path.unlink()

        mqtt_from_server = data.get("mqtt") if isinstance(data.get("mqtt"), dict) else {}
        old_mqtt = _read_config(paths.config_file).get("mqtt", {})
        mqtt = {
            "host": mqtt_host or mqtt_from_server.get("host") or old_mqtt.get("host") or "",
            "port": int(mqtt_port or mqtt_from_server.get("port") or old_mqtt.get("port") or DEFAULT_MQTT_PORT),
        }
        _write_config(paths, county, station, mqtt, device_profile, enroll_url, agency_ori)
    except OSError as exc:
        raise ProvisionError("setup", f"the certificate was issued but cannot be stored: {exc}. Fix that and run "
                                      "provision again with the same token: it returns the same certificate, "
                                      "because the keys are kept") from exc
    _hand_over(paths, service_user, echo)

    serial = format(cert.serial_number, "x")
    echo(f"enrolled station {station} of county {county}: certificate serial {serial} (CN={station}, clientAuth), "
         f"valid until {cert.not_valid_after_utc:%Y-%m-%d}")
    echo(f"wrote {paths.tls_cert}, {paths.ca_cert}, {paths.command_key} and {paths.config_file}")
    if mqtt["host"]:
        echo(f"MQTT broker: {mqtt['host']}:{mqtt['port']}")
    else:
        echo(f"MQTT broker not set: put its address in [mqtt] host of {paths.config_file} (or re-run with --mqtt-host)")
    return ProvisionResult("enrolled", county, station, serial, cert.not_valid_after_utc, paths, keys.pending)


# --- certificate rotation (a county `rotate` command, run by the sync agent) ----------------------


@dataclass(frozen=True)
class RotationResult:
    """A rotated TLS identity: the certificate serials before and after (hex)."""

    old_serial: str | None
    new_serial: str
    not_after: dt.datetime


def _serial_of(path: Path) -> str | None:
    try:
        return format(x509.load_pem_x509_certificate(path.read_bytes()).serial_number, "x")
    except (OSError, ValueError):
        return None


def finish_rotation(tls_key: Path, tls_cert: Path) -> bool:
    """Complete a rotation a crash interrupted between installing the certificate and its key: when
    ``tls.key.pending`` holds the key of the installed certificate, install it. True when it did."""
    pending = tls_key.with_name(tls_key.name + ".pending")
    try:
        key = _load_private(pending)
        cert = x509.load_pem_x509_certificate(tls_cert.read_bytes())
    except (OSError, ValueError, TypeError):
        return False
    if not isinstance(key, ec.EllipticCurvePrivateKey) or not _same_public(cert.public_key(), key.public_key()):
        return False
    write_private_file(tls_key, _private_pem(key))
    with contextlib.suppress(FileNotFoundError):
        pending.unlink()
    return True


def rotate_certificate(county: str, station: str, enroll_url: str, command_payload: bytes, command_id: str, *,
                       tls_key: Path, tls_cert: Path, ca_cert: Path, signing_key: Path) -> RotationResult:
    """Replace the station's TLS key and certificate, as a verified county ``rotate`` command orders.

    The same steps and order as :func:`provision`: a new EC P-256 key as ``tls.key.pending`` (0600; one left
    by an unfinished attempt is re-used, so a retry after a lost answer gets the same certificate back),
    ``POST /rotate`` to the enrolment server over HTTPS trusting only ``ca_cert``, with the CSR, the signed
    command and a proof by the station's *current* signing key; the answer is checked like an enrolment
    answer (our key, CN = station, clientAuth, signed by the county CA we already trust); then the
    certificate is installed, then its key, then the pending copy dropped. Until the answer is checked
    nothing current is touched, so every failure (raised as :class:`ProvisionError`) keeps the old identity.
    """
    tls_key, tls_cert, ca_cert = Path(tls_key), Path(tls_cert), Path(ca_cert)
    if urlsplit(enroll_url).scheme != "https":
        raise ProvisionError("setup", f"no https:// enrolment URL to rotate with (got {enroll_url!r}); "
                                      "re-provision the station so [station] enroll_url is recorded")
    try:
        signing = _load_private(Path(signing_key))
        trusted_ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    except (OSError, ValueError, TypeError) as exc:
        raise ProvisionError("setup", f"cannot read the station's signing key or CA certificate: {exc}") from exc
    if not isinstance(signing, Ed25519PrivateKey):
        raise ProvisionError("setup", f"{signing_key} is not an Ed25519 private key")
    pending = tls_key.with_name(tls_key.name + ".pending")
    tls: ec.EllipticCurvePrivateKey | None = None
    with contextlib.suppress(OSError, ValueError, TypeError):
        loaded = _load_private(pending)
        if isinstance(loaded, ec.EllipticCurvePrivateKey):
            tls = loaded
    if tls is None:
        tls = ec.generate_private_key(ec.SECP256R1())
        try:
            write_private_file(pending, _private_pem(tls))
        except OSError as exc:
            raise ProvisionError("setup", f"cannot write {pending}: {exc}") from exc
    keys = _Keys(tls, signing, "pending")
    csr = build_csr(county, station, tls)
    proof = signing.sign(rotation_proof_message(county, station, csr.public_bytes(serialization.Encoding.DER),
                                                command_id))
    body = {
        "protocol": PROTOCOL_VERSION,
        "county": county,
        "station": station,
        "csr": csr.public_bytes(serialization.Encoding.PEM).decode(),
        "rotate_command": base64.b64encode(command_payload).decode(),
        "current_proof": base64.b64encode(proof).decode(),
    }
    data = _post(rotate_url(enroll_url), body, ca_cert)
    cert, ca, _ = _check_response(data, keys, county, station)
    if ca.public_bytes(serialization.Encoding.DER) != trusted_ca.public_bytes(serialization.Encoding.DER):
        raise ProvisionError("bad_response", "the enrolment server answered with another county CA than this "
                                             "station trusts; a rotation never changes the CA (re-provision)")
    old_serial = _serial_of(tls_cert)
    try:
        write_public_file(tls_cert, cert.public_bytes(serialization.Encoding.PEM))
        write_private_file(tls_key, _private_pem(tls))
        with contextlib.suppress(FileNotFoundError):
            pending.unlink()
    except OSError as exc:
        raise ProvisionError("setup", f"the new certificate was issued but cannot be stored: {exc}") from exc
    return RotationResult(old_serial, format(cert.serial_number, "x"), cert.not_valid_after_utc)
