"""The enrolment logic, separate from HTTP so it can be read, tested and reused on its own.

:meth:`EnrollmentService.handle` takes the raw request body and returns (HTTP status, JSON object).
Checks run from cheapest to most consequential, and nothing is written until all have passed:

1. the body is a JSON object with the fields of :mod:`sync.protocol.enroll`, for this county;
2. the CSR parses and the Ed25519 key parses and its proof signature verifies;
3. in one SQLite transaction: the token exists, is for this station, unused and unexpired; the CSR
   is acceptable (valid self-signature, P-256/P-384 key, CN = station); the registry accepts the
   signing key; the certificate is issued; the token is marked used. A failure at any step rolls
   back, so a refused CSR or a registry conflict leaves the token usable.

:meth:`EnrollmentService.rotate` (``POST /rotate``) gives an enrolled station a new certificate when a
county ``rotate`` command orders it: the command is verified with the county command key, the request
is proven with the station's registered signing key, and each command id pays for one certificate.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sync.county.enroll.ca import STATION_CERT_DAYS, CountyCA, CSRError, certificate_pem
from sync.county.enroll.registry import DeviceRegistry, JsonDeviceRegistry, RegistryConflict, RegistryError
from sync.county.enroll.tokens import TokenError, TokenStore
from sync.protocol.enroll import (
    ERROR_STATUS,
    PROTOCOL_VERSION,
    default_command_kid,
    load_ed25519_public_key,
    public_key_pem,
    rotation_proof_message,
    signing_proof_message,
)
from sync.protocol.topics import is_slug
from sync.protocol.wire import WireError, decode_command

log = logging.getLogger("booking.enroll")


class EnrollError(Exception):
    """A refused request: ``code`` (see protocol.ERROR_STATUS) and a message for the person at the device."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def status(self) -> int:
        return ERROR_STATUS.get(self.code, 400)

    def body(self) -> dict[str, str]:
        return {"error": self.code, "message": str(self)}


@dataclass(frozen=True)
class MqttEndpoint:
    """The broker address handed to enrolled devices, so county IT configures it once, here."""

    host: str
    port: int = 8883


@dataclass(frozen=True)
class EnrollmentRequest:
    """A request that passed the shape and signature checks (step 1 and 2)."""

    county: str
    station: str
    token: str
    csr: x509.CertificateSigningRequest
    signing_key: Ed25519PublicKey

    @property
    def key_fingerprint(self) -> str:
        """Identifies the pair of keys, so a retry with the same keys can be told from a second device."""
        tls = self.csr.public_key().public_bytes(serialization.Encoding.DER,
                                                 serialization.PublicFormat.SubjectPublicKeyInfo)
        signing = self.signing_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return hashlib.sha256(tls + b"\0" + signing).hexdigest()


def _field(data: dict[str, Any], name: str) -> str:
    value = data.get(name)
    if not isinstance(value, str) or not value.strip():
        raise EnrollError("bad_request", f"the request has no {name!r} (a non-empty string)")
    return value.strip()


class EnrollmentService:
    """Validates enrolment requests and issues station certificates from one county CA."""

    def __init__(self, ca: CountyCA, tokens: TokenStore, registry: DeviceRegistry, *,
                 cert_days: int = STATION_CERT_DAYS, mqtt: MqttEndpoint | None = None) -> None:
        self.ca = ca
        self.tokens = tokens
        self.registry = registry
        self.cert_days = cert_days
        self.mqtt = mqtt

    @classmethod
    def from_ca_dir(cls, ca_dir: Path | str, *, registry: DeviceRegistry | None = None,
                    cert_days: int = STATION_CERT_DAYS, mqtt: MqttEndpoint | None = None) -> EnrollmentService:
        """The service over a CA directory, with the default JSON registry unless another is given."""
        ca = CountyCA.load(ca_dir)
        return cls(ca, TokenStore.in_ca_dir(ca_dir), registry or JsonDeviceRegistry.in_ca_dir(ca_dir),
                   cert_days=cert_days, mqtt=mqtt)

    # -- entry point --------------------------------------------------------------------------------

    def handle(self, body: bytes, *, peer: str = "-") -> tuple[int, dict[str, Any]]:
        """(status, JSON object) for one raw request body. Never raises for a bad request."""
        station = "?"
        try:
            request = self.parse(body)
            station = request.station
            response = self.enroll(request)
        except EnrollError as exc:
            log.warning("enrolment refused: station %s from %s: %s (%s)", station, peer, exc.code, exc)
            return exc.status, exc.body()
        except Exception:  # a bug must cost one request, not the server
            log.exception("enrolment failed: station %s from %s", station, peer)
            error = EnrollError("internal", "the enrolment server failed; county IT can see why in its log")
            return error.status, error.body()
        return 200, response

    def handle_rotate(self, body: bytes, *, peer: str = "-") -> tuple[int, dict[str, Any]]:
        """(status, JSON object) for one raw ``POST /rotate`` body (see :meth:`rotate`). Never raises."""
        station = "?"
        try:
            data = self._json(body)
            station = str(data.get("station", "?"))[:63]
            response = self.rotate(data)
        except EnrollError as exc:
            log.warning("rotation refused: station %s from %s: %s (%s)", station, peer, exc.code, exc)
            return exc.status, exc.body()
        except Exception:
            log.exception("rotation failed: station %s from %s", station, peer)
            error = EnrollError("internal", "the enrolment server failed; county IT can see why in its log")
            return error.status, error.body()
        return 200, response

    def rotate(self, data: dict[str, Any], *, now: dt.datetime | None = None) -> dict[str, Any]:
        """A new certificate for an enrolled station, paid for by a county ``rotate`` command.

        Checked, cheapest first, before anything is written: the county and station; the CSR parses; the
        command verifies with this county's command key (the one in the CA directory), is a ``rotate`` of
        ``tls-certificate`` for this very station and has not expired; ``current_proof`` verifies with the
        signing key the registry holds for the station (so only the device that holds it can rotate, and
        a revoked station cannot); the CSR is acceptable (as at enrolment). Then, in one transaction, the
        command id is spent and the certificate issued (:meth:`TokenStore.rotate`).
        """
        now = now or dt.datetime.now(dt.timezone.utc)
        county, station, csr = self._station_csr(data, "protocol", "serves county")
        try:
            payload = base64.b64decode(_field(data, "rotate_command"), validate=True)
            proof = base64.b64decode(_field(data, "current_proof"), validate=True)
        except (binascii.Error, ValueError) as exc:
            raise EnrollError("bad_request", "rotate_command and current_proof must be base64") from exc
        kid = default_command_kid(self.ca.county)
        try:
            command = decode_command(payload, lambda k: self.ca.command_public_key if k == kid else None, now=now,
                                     county=county, station=station)
        except WireError as exc:
            raise EnrollError("command_invalid",
                              f"the rotate command is not valid ({exc.code}): {exc.message}") from exc
        if command.action != "rotate" or command.args.get("target") != "tls-certificate":
            raise EnrollError("command_invalid", f"the command is a {command.action} {command.args}, not a rotate of "
                                                 "the TLS certificate")
        registered = self.registry.get_public_key(county, station)
        if registered is None:
            raise EnrollError("station_unknown", f"station {station!r} is not registered (or is revoked) in county "
                                                 f"{county!r}; only an enrolled station rotates its certificate")
        try:
            load_ed25519_public_key(registered).verify(
                proof, rotation_proof_message(county, station, csr.public_bytes(serialization.Encoding.DER),
                                              command.command_id))
        except (ValueError, InvalidSignature) as exc:
            raise EnrollError("proof_invalid", "current_proof does not verify with the signing key this station is "
                                               "registered with") from exc
        fingerprint = hashlib.sha256(csr.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).hexdigest()

        def issue() -> tuple[str, str, dt.datetime, dt.datetime]:
            try:
                self.ca.check_station_csr(csr, station)
                cert = self.ca.issue_station_certificate(csr, station, days=self.cert_days)
            except CSRError as exc:
                raise EnrollError(exc.code, str(exc)) from exc
            return (format(cert.serial_number, "x"), certificate_pem(cert),
                    cert.not_valid_before_utc, cert.not_valid_after_utc)

        try:
            issued = self.tokens.rotate(command.command_id, county=county, station=station,
                                        key_fingerprint=fingerprint, command_expires_at=command.expires_at,
                                        issue=issue, now=now)
        except TokenError as exc:
            raise EnrollError(exc.code, str(exc)) from exc
        log.info("%s station %s (county %s) for rotate command %s: certificate serial %s valid until %s",
                 "re-sent rotated certificate to" if issued.repeated else "rotated the certificate of", station,
                 county, command.command_id, issued.serial, issued.not_after.isoformat(timespec="seconds"))
        return {
            "protocol": PROTOCOL_VERSION,
            "county": county,
            "station": station,
            "certificate": issued.certificate_pem,
            "ca_certificate": self.ca.certificate_pem,
            "county_command_public_key": self.ca.command_public_key_pem,
            "serial": issued.serial,
            "not_after": issued.not_after.isoformat(timespec="seconds"),
        }

    def _station_csr(self, data: dict[str, Any], protocol_name: str,
                     serves: str) -> tuple[str, str, x509.CertificateSigningRequest]:
        """County, station and CSR of a request, checked the same way for an enrolment and a rotation:
        the protocol version, this server's county, a station id that is a slug, a PEM CSR. The two requests
        only word the protocol and the county differently (``protocol_name``, ``serves``)."""
        protocol = data.get("protocol", PROTOCOL_VERSION)
        if protocol != PROTOCOL_VERSION:
            raise EnrollError("bad_request", f"{protocol_name} {protocol!r} is not supported (this server speaks "
                                             f"{PROTOCOL_VERSION})")
        county, station = _field(data, "county"), _field(data, "station")
        if county != self.ca.county:
            raise EnrollError("wrong_county", f"this enrolment server {serves} {self.ca.county!r}, not {county!r}")
        if not is_slug(station):
            raise EnrollError("bad_request", f"station {station!r} is not a valid id (1-63 of a-z, 0-9 and inner '-')")
        try:
            csr = x509.load_pem_x509_csr(_field(data, "csr").encode())
        except ValueError as exc:
            raise EnrollError("csr_invalid", f"the CSR is not a PEM certificate signing request: {exc}") from exc
        return county, station, csr

    @staticmethod
    def _json(body: bytes) -> dict[str, Any]:
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise EnrollError("bad_request", f"the request body is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise EnrollError("bad_request", "the request body must be a JSON object")
        return data

    # -- steps --------------------------------------------------------------------------------------

    def parse(self, body: bytes) -> EnrollmentRequest:
        """Step 1 and 2: shape, county, CSR and signing key with its proof."""
        data = self._json(body)
        county, station, csr = self._station_csr(data, "enrolment protocol", "enrols stations of county")
        token = _field(data, "token")
        try:
            signing_key = load_ed25519_public_key(_field(data, "signing_public_key"))
        except ValueError as exc:
            raise EnrollError("signing_key_invalid", f"signing_public_key: {exc}") from exc
        try:
            proof = base64.b64decode(_field(data, "signing_proof"), validate=True)
            csr_der = csr.public_bytes(serialization.Encoding.DER)
            signing_key.verify(proof, signing_proof_message(county, station, csr_der))
        except (binascii.Error, ValueError, InvalidSignature) as exc:
            raise EnrollError("signing_key_invalid", "signing_proof does not verify with signing_public_key: the "
                                                     "device must sign the request with the key it enrols") from exc
        return EnrollmentRequest(county, station, token, csr, signing_key)

    def enroll(self, request: EnrollmentRequest) -> dict[str, Any]:
        """Step 3: redeem the token and issue the certificate, atomically."""
        signing_pem = public_key_pem(request.signing_key)

        def issue() -> tuple[str, str, dt.datetime, dt.datetime]:
            try:
                self.ca.check_station_csr(request.csr, request.station)
                self.registry.register_device(request.county, request.station, signing_pem)
                cert = self.ca.issue_station_certificate(request.csr, request.station, days=self.cert_days)
            except CSRError as exc:
                raise EnrollError(exc.code, str(exc)) from exc
            except RegistryConflict as exc:
                raise EnrollError("station_conflict", str(exc)) from exc
            except RegistryError as exc:
                log.error("device registry failed for station %s: %s", request.station, exc)
                raise EnrollError("internal", "the device registry could not record this station; "
                                              "county IT can see why in the server log") from exc
            return (format(cert.serial_number, "x"), certificate_pem(cert),
                    cert.not_valid_before_utc, cert.not_valid_after_utc)

        try:
            issued = self.tokens.redeem(request.token, county=request.county, station=request.station,
                                        key_fingerprint=request.key_fingerprint, issue=issue)
        except TokenError as exc:
            raise EnrollError(exc.code, str(exc)) from exc
        log.info("%s station %s (county %s): certificate serial %s valid until %s",
                 "re-sent certificate to" if issued.repeated else "enrolled", request.station, request.county,
                 issued.serial, issued.not_after.isoformat(timespec="seconds"))
        return {
            "protocol": PROTOCOL_VERSION,
            "county": request.county,
            "station": request.station,
            "certificate": issued.certificate_pem,
            "ca_certificate": self.ca.certificate_pem,
            "county_command_public_key": self.ca.command_public_key_pem,
            "serial": issued.serial,
            "not_after": issued.not_after.isoformat(timespec="seconds"),
            "mqtt": None if self.mqtt is None else {"host": self.mqtt.host, "port": self.mqtt.port},
        }
