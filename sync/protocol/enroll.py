"""The enrolment contract shared by the device (`firmware.provision`) and the county server.

One HTTPS request, ``POST /enroll`` with a JSON object::

    {"protocol": 1, "county": "king", "station": "desk-1", "token": "bst1-...",
     "csr": "-----BEGIN CERTIFICATE REQUEST-----...",          # for the device's EC P-256 TLS key
     "signing_public_key": "-----BEGIN PUBLIC KEY-----...",    # Ed25519 (PEM, or base64 of the raw 32 bytes)
     "signing_proof": "<base64 Ed25519 signature over signing_proof_message(...)>"}

answered ``200`` with ``{"protocol", "county", "station", "certificate", "ca_certificate",
"county_command_public_key", "not_after", "mqtt"}`` or an error status with
``{"error": <code>, "message": <a sentence for the person at the device>}``.

The CSR proves the device holds its TLS key (it is self-signed); ``signing_proof`` does the same for
the Ed25519 key and binds both keys to one request, so nobody can enrol a public key whose private half
they do not hold. Neither carries any private key material: only public keys and signatures go over
the wire.

The enrolment answer hands the station the county's command-verification key; both sides name that key
by :func:`default_command_kid` (the station when it verifies a command, the county when it signs one).

The files both sides write key material to are written by :mod:`sync.protocol.files`.
"""

from __future__ import annotations

import base64
import binascii
from urllib.parse import urlsplit, urlunsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

PROTOCOL_VERSION = 1
ENROLL_PATH = "/enroll"
#: Certificate rotation of an enrolled station, ordered by a county ``rotate`` command (see
#: :meth:`sync.county.enroll.service.EnrollmentService.rotate`): ``POST /rotate`` with
#: ``{"protocol", "county", "station", "csr", "rotate_command", "current_proof"}`` where ``rotate_command``
#: is the signed command payload (base64) and ``current_proof`` a base64 Ed25519 signature by the
#: station's *registered* signing key over :func:`rotation_proof_message`.
ROTATE_PATH = "/rotate"
#: A CSR and a public key fit in 4 KiB; anything much larger is not an enrolment request.
MAX_REQUEST_BYTES = 64 * 1024
PROOF_CONTEXT = b"booking-station enrolment v1\0"

#: error code -> HTTP status. 403 for every token problem: the caller may not enrol with it.
ERROR_STATUS: dict[str, int] = {
    "bad_request": 400,
    "csr_invalid": 400,
    "csr_cn_mismatch": 400,
    "signing_key_invalid": 400,
    "wrong_county": 403,
    "token_unknown": 403,
    "token_used": 403,
    "token_expired": 403,
    "token_wrong_station": 403,
    "station_conflict": 409,
    "command_invalid": 403,
    "proof_invalid": 403,
    "station_unknown": 403,
    "command_used": 409,
    "not_found": 404,
    "method_not_allowed": 405,
    "too_large": 413,
    "unsupported_media_type": 415,
    "internal": 500,
}


def signing_proof_message(county: str, station: str, csr_der: bytes) -> bytes:
    """What the device signs with its Ed25519 key: the request's identity and its whole CSR.

    The context prefix keeps the signature from ever being valid as a signature over a record or any
    other message the same key signs.
    """
    return PROOF_CONTEXT + county.encode() + b"\0" + station.encode() + b"\0" + csr_der


def rotation_proof_message(county: str, station: str, csr_der: bytes, command_id: str) -> bytes:
    """What a station signs with its *current* Ed25519 key to rotate its certificate: the enrolment proof
    message (:func:`signing_proof_message`) followed by the rotate command's id, so a proof answers one
    command and cannot be replayed for another."""
    return signing_proof_message(county, station, csr_der) + command_id.encode()


def rotate_url(enroll_url: str) -> str:
    """The ``/rotate`` endpoint of the enrolment server whose ``/enroll`` URL is ``enroll_url``."""
    parts = urlsplit(enroll_url)
    base = parts.path[: -len(ENROLL_PATH)] if parts.path.endswith(ENROLL_PATH) else parts.path.rstrip("/")
    return urlunsplit(parts._replace(path=base + ROTATE_PATH, query="", fragment=""))


def default_command_kid(county: str) -> str:
    """The key id a county command must carry when the station knows only the one provisioned county
    command key (``[keys] county_command_key``): ``county:{county}``. A county that rotates its command
    key lists each key under its own id in ``[sync] command_keys`` instead."""
    return f"county:{county}"


def load_ed25519_public_key(text: str) -> Ed25519PublicKey:
    """An Ed25519 public key given as PEM (SubjectPublicKeyInfo) or base64 of its raw 32 bytes.

    Raises ValueError with a sentence that says which form was expected.
    """
    text = text.strip()
    if text.startswith("-----BEGIN"):
        try:
            key = serialization.load_pem_public_key(text.encode())
        except (ValueError, TypeError) as exc:
            raise ValueError(f"not a PEM public key: {exc}") from exc
        if not isinstance(key, Ed25519PublicKey):
            raise ValueError(f"the key is {type(key).__name__.removeprefix('_')}, not Ed25519")
        return key
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValueError("neither a PEM public key nor base64 of a raw 32-byte Ed25519 key") from exc
    if len(raw) != 32:
        raise ValueError(f"a raw Ed25519 public key is 32 bytes, this one is {len(raw)}")
    return Ed25519PublicKey.from_public_bytes(raw)


def public_key_pem(key: Ed25519PublicKey) -> str:
    return key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
