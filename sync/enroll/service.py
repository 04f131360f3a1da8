"""The enrolment logic, separate from HTTP so it can be read, tested and reused on its own.

:meth:`EnrollmentService.handle` takes the raw request body and returns (HTTP status, JSON object).
Checks run from cheapest to most consequential, and nothing is written until all have passed:

1. the body is a JSON object with the fields of :mod:`sync.enroll.protocol`, for this county;
2. the CSR parses and the Ed25519 key parses and its proof signature verifies;
3. in one SQLite transaction: the token exists, is for this station, unused and unexpired; the CSR
   is acceptable (valid self-signature, P-256/P-384 key, CN = station); the registry accepts the
   signing key; the certificate is issued; the token is marked used. A failure at any step rolls
   back, so a refused CSR or a registry conflict leaves the token usable.
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

from sync.enroll.ca import STATION_CERT_DAYS, CountyCA, CSRError, certificate_pem
from sync.enroll.protocol import (
    ERROR_STATUS,
    PROTOCOL_VERSION,
    load_ed25519_public_key,
    public_key_pem,
    signing_proof_message,
)
from sync.enroll.registry import DeviceRegistry, JsonDeviceRegistry, RegistryConflict, RegistryError
from sync.enroll.tokens import TokenError, TokenStore
from sync.topics import is_slug

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

    # -- steps --------------------------------------------------------------------------------------

    def parse(self, body: bytes) -> EnrollmentRequest:
        """Step 1 and 2: shape, county, CSR and signing key with its proof."""
        try:
            data = json.loads(body)
        except (UnicodeDecodeError, ValueError) as exc:
            raise EnrollError("bad_request", f"the request body is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise EnrollError("bad_request", "the request body must be a JSON object")
        protocol = data.get("protocol", PROTOCOL_VERSION)
        if protocol != PROTOCOL_VERSION:
            raise EnrollError("bad_request", f"enrolment protocol {protocol!r} is not supported "
                                             f"(this server speaks {PROTOCOL_VERSION})")
        county, station, token = _field(data, "county"), _field(data, "station"), _field(data, "token")
        if county != self.ca.county:
            raise EnrollError("wrong_county", f"this enrolment server enrols stations of county {self.ca.county!r}, "
                                              f"not {county!r}")
        if not is_slug(station):
            raise EnrollError("bad_request", f"station {station!r} is not a valid id (1-63 of a-z, 0-9 and inner '-')")
        try:
            csr = x509.load_pem_x509_csr(_field(data, "csr").encode())
        except ValueError as exc:
            raise EnrollError("csr_invalid", f"the CSR is not a PEM certificate signing request: {exc}") from exc
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
