"""The county certificate authority and the county's command-signing key.

Key types, chosen for what every party must accept:

* CA and station TLS keys are **EC P-256** (ECDSA with SHA-256). Mosquitto, OpenSSL 1.1/3.x, paho-mqtt
  on every Python we support, Java and .NET brokers and cloud IoT brokers all accept P-256 client
  certificates; Ed25519 certificates are still refused by several of them (and by TLS 1.2 stacks that
  predate RFC 8422), so they are not used for TLS.
* The county **command-signing key** is **Ed25519**, like the devices' record-signing keys: it signs
  MQTT command payloads, never TLS, so only our own code has to verify it.

Station certificates carry ``CN = {station}`` (the station slug, which is what the broker ACL
substitutes for ``%u``/``%c`` with ``use_identity_as_username``), ``O = {county}``, the ``clientAuth``
extended key usage only, ``digitalSignature`` key usage and ``CA:FALSE``. The subject and extensions are
built here from the validated request, never copied from the CSR, so a device cannot ask for a CA bit,
a server EKU or another station's name.

Layout of a CA directory (0700; private keys 0600)::

    ca.key  ca.crt  command-signing.key  command-signing.pub  county.json  enroll.db  devices.json
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from sync.protocol.enroll import public_key_pem
from sync.protocol.files import make_private_dir, write_private_file, write_public_file
from sync.protocol.topics import TopicError, check_slug

CA_KEY = "ca.key"
CA_CERT = "ca.crt"
COMMAND_KEY = "command-signing.key"
COMMAND_PUB = "command-signing.pub"
COUNTY_FILE = "county.json"

CA_DAYS = 3650
STATION_CERT_DAYS = 730
SERVER_CERT_DAYS = 397
#: Stations may boot with a wrong clock until NTP syncs (a Pi 4 has no RTC); backdating notBefore by an
#: hour keeps a fresh certificate usable on a device whose clock is slightly behind.
BACKDATE = dt.timedelta(hours=1)
ACCEPTED_CURVES = (ec.SECP256R1, ec.SECP384R1)


class CAError(Exception):
    """The CA cannot be created, loaded or used; the message says what to do."""


class CSRError(ValueError):
    """A certificate signing request the CA will not sign. ``code`` is the protocol error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _name(common_name: str, county: str) -> x509.Name:
    return x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, county),
        x509.NameAttribute(NameOID.COMMON_NAME, common_name),
    ])


def common_name(name: x509.Name) -> str | None:
    """The single CN of a name, or None when it has none or several (both are refused)."""
    values = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    if len(values) != 1:
        return None
    value = values[0].value
    return value if isinstance(value, str) else None


def _key_pem(key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def certificate_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


@dataclass(frozen=True)
class CountyCA:
    """A loaded county CA: issues station (client) and server certificates."""

    directory: Path
    county: str
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate
    command_public_key: Ed25519PublicKey

    # -- creation and loading -----------------------------------------------------------------------

    @classmethod
    def init(cls, directory: Path | str, county: str, *, days: int = CA_DAYS,
             now: dt.datetime | None = None) -> CountyCA:
        """Create the CA key and self-signed certificate and the command-signing key in ``directory``.

        Refuses to touch a directory that already holds a CA: overwriting its key would orphan every
        station certificate it has issued.
        """
        try:
            check_slug(county, "county")
        except TopicError as exc:
            raise CAError(str(exc)) from exc
        directory = Path(directory)
        existing = [n for n in (CA_KEY, CA_CERT, COMMAND_KEY, COMMAND_PUB, COUNTY_FILE) if (directory / n).exists()]
        if existing:
            raise CAError(f"{directory} already holds a CA ({', '.join(existing)}); refusing to overwrite it. "
                          "Use another directory, or move the old one away deliberately.")
        make_private_dir(directory)
        now = now or _utcnow()
        key = ec.generate_private_key(ec.SECP256R1())
        subject = _name(f"{county} booking-station CA", county)
        ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True,
                                         crl_sign=True, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(ski, critical=False)
            .sign(key, hashes.SHA256())
        )
        command_key = Ed25519PrivateKey.generate()
        # Private halves first: if we die half-way, the directory holds no certificate that suggests a
        # usable CA, and the "already holds a CA" check above still protects what was written.
        write_private_file(directory / CA_KEY, _key_pem(key))
        write_private_file(directory / COMMAND_KEY, _key_pem(command_key))
        write_public_file(directory / COMMAND_PUB, public_key_pem(command_key.public_key()).encode())
        write_public_file(directory / CA_CERT, cert.public_bytes(serialization.Encoding.PEM))
        write_public_file(directory / COUNTY_FILE, (json.dumps({
            "county": county,
            "created": now.isoformat(timespec="seconds"),
            "ca_key": "EC P-256",
            "command_key": "Ed25519",
        }, indent=2) + "\n").encode())
        return cls(directory, county, key, cert, command_key.public_key())

    @classmethod
    def load(cls, directory: Path | str) -> CountyCA:
        """Load the CA from ``directory``; every missing or mismatched file is a clear CAError."""
        directory = Path(directory)
        if not (directory / COUNTY_FILE).is_file():
            raise CAError(f"{directory} is not a county CA directory (no {COUNTY_FILE}); "
                          "create one with `booking-gallery ca init --ca-dir DIR --county ID`")
        try:
            county = json.loads((directory / COUNTY_FILE).read_text(encoding="utf-8"))["county"]
            check_slug(county, "county")
            key = serialization.load_pem_private_key((directory / CA_KEY).read_bytes(), password=None)
            cert = x509.load_pem_x509_certificate((directory / CA_CERT).read_bytes())
            command_public = serialization.load_pem_public_key((directory / COMMAND_PUB).read_bytes())
        except PermissionError as exc:
            raise CAError(f"cannot read the CA in {directory}: {exc.strerror} ({exc.filename}); "
                          "run as the user that owns it") from exc
        except (OSError, KeyError, ValueError, TypeError, TopicError) as exc:
            raise CAError(f"the CA in {directory} is unreadable or incomplete: {exc}") from exc
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise CAError(f"{directory / CA_KEY} is not an EC key")
        if key.public_key().public_numbers() != cert.public_key().public_numbers():  # type: ignore[union-attr]
            raise CAError(f"{directory / CA_KEY} does not belong to {directory / CA_CERT}")
        if not isinstance(command_public, Ed25519PublicKey):
            raise CAError(f"{directory / COMMAND_PUB} is not an Ed25519 public key")
        return cls(directory, county, key, cert, command_public)

    # -- issuing ------------------------------------------------------------------------------------

    @property
    def certificate_pem(self) -> str:
        return certificate_pem(self.certificate)

    @property
    def command_public_key_pem(self) -> str:
        return public_key_pem(self.command_public_key)

    def check_station_csr(self, csr: x509.CertificateSigningRequest, station: str) -> None:
        """Refuse a CSR that is forged, uses a key type brokers may reject, or names another station."""
        if not csr.is_signature_valid:
            raise CSRError("csr_invalid", "the CSR's self-signature is invalid (it was altered, or not made "
                                          "with the key it contains)")
        key = csr.public_key()
        if not (isinstance(key, ec.EllipticCurvePublicKey) and isinstance(key.curve, ACCEPTED_CURVES)):
            raise CSRError("csr_invalid", "the CSR's key must be an EC P-256 (or P-384) key, "
                                          f"not {type(key).__name__.removeprefix('_')}")
        cn = common_name(csr.subject)
        if cn != station:
            raise CSRError("csr_cn_mismatch",
                           f"the CSR's common name is {cn!r} but the request is for station {station!r}; "
                           "the certificate's CN must be the station id")

    def issue_station_certificate(self, csr: x509.CertificateSigningRequest, station: str, *,
                                  days: int = STATION_CERT_DAYS, now: dt.datetime | None = None) -> x509.Certificate:
        """A client certificate for ``station`` on the CSR's key. Checks the CSR first."""
        check_slug(station, "station")
        self.check_station_csr(csr, station)
        return self._issue(csr.public_key(), _name(station, self.county),  # type: ignore[arg-type]
                           [ExtendedKeyUsageOID.CLIENT_AUTH], [], days, now)

    def issue_client_certificate(self, public_key: ec.EllipticCurvePublicKey, name: str, *,
                                 days: int = SERVER_CERT_DAYS, now: dt.datetime | None = None) -> x509.Certificate:
        """A client certificate for a county service, e.g. a gallery worker (CN ``gallery.{county}``, see
        ``sync.county.broker_config.gallery_identity``). Stations get theirs through enrolment instead."""
        if not name or any(ch in name for ch in "/+#\0") or name != name.strip():
            raise CAError(f"{name!r} cannot be an MQTT identity (no '/', '+', '#', NUL or surrounding spaces)")
        return self._issue(public_key, _name(name, self.county), [ExtendedKeyUsageOID.CLIENT_AUTH], [], days, now)

    def issue_server_certificate(self, public_key: ec.EllipticCurvePublicKey, names: Sequence[str], *,
                                 days: int = SERVER_CERT_DAYS, now: dt.datetime | None = None) -> x509.Certificate:
        """A TLS server certificate (broker, enrolment server) for DNS names and/or IP addresses."""
        if not names:
            raise CAError("a server certificate needs at least one DNS name or IP address")
        alt: list[x509.GeneralName] = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        return self._issue(public_key, _name(names[0], self.county), [ExtendedKeyUsageOID.SERVER_AUTH], alt,
                           days, now)

    def _issue(self, public_key: ec.EllipticCurvePublicKey, subject: x509.Name, usages: list[x509.ObjectIdentifier],
               alt_names: list[x509.GeneralName], days: int, now: dt.datetime | None) -> x509.Certificate:
        now = now or _utcnow()
        not_after = min(now + dt.timedelta(days=days), self.certificate.not_valid_after_utc)
        builder = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - BACKDATE)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=False,
                                         crl_sign=False, encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
        )
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        return builder.sign(self.key, hashes.SHA256())


def generate_tls_key() -> ec.EllipticCurvePrivateKey:
    """A fresh EC P-256 key for a TLS endpoint (see the module docstring for why P-256)."""
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: ec.EllipticCurvePrivateKey | Ed25519PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM: services start unattended, so the protection is the 0600 file mode."""
    return _key_pem(key)


def verify_issued_by(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    """True if ``issuer``'s key signed ``cert`` (and the names chain)."""
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True
