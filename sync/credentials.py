"""The sign-in rules both sides share: the PIN's format, its scrypt hash, and the TOTP code check.

The station's officer accounts (``appliance.ui.accounts``) and the county console's accounts
(``sync.county.console.accounts``) keep their own stores, roles and lockout, but a PIN and an authenticator
code must mean the same on both, so the rules live once, here, outside either side (the import contracts keep
the county off the station's UI). Each side turns :class:`CredentialError` into its own account error.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from datetime import datetime

import pyotp

PIN_MIN, PIN_MAX = 6, 16
PIN_RULE = f"The PIN is {PIN_MIN} to {PIN_MAX} digits, not all one digit and not a run like 123456."
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SCRYPT_DKLEN = 32
TOTP_VALID_WINDOW = 1  # steps of clock drift tolerated either way


class CredentialError(ValueError):
    """A PIN that breaks the rule (the message says which part, for the person choosing it)."""


def check_pin(pin: str) -> str:
    """``pin`` when it is 6-16 ASCII digits and not all one digit or a run like 123456."""
    if not isinstance(pin, str) or not pin.isascii() or not pin.isdigit() or not PIN_MIN <= len(pin) <= PIN_MAX:
        raise CredentialError(f"the PIN must be {PIN_MIN} to {PIN_MAX} digits")
    if len(set(pin)) == 1 or pin in "01234567890123456789" or pin in "98765432109876543210":
        raise CredentialError("the PIN is too easy to guess (all one digit, or a run like 123456); choose another")
    return pin


def hash_pin(pin: str, salt: bytes | None = None, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """``scrypt$n$r$p$salt_hex$hash_hex`` for a PIN (the parameters travel with the hash, so they can grow)."""
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(pin.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=SCRYPT_DKLEN,
                            maxmem=256 * r * n)
    return f"scrypt${n}${r}${p}${salt.hex()}${digest.hex()}"


def verify_pin(pin: str, stored: str) -> bool:
    """Constant-time comparison of a PIN with its stored hash; False for anything that is not one."""
    try:
        kind, n, r, p, salt_hex, digest_hex = stored.split("$")
        if kind != "scrypt":
            return False
        candidate = hash_pin(pin, bytes.fromhex(salt_hex), int(n), int(r), int(p))
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(candidate.rsplit("$", 1)[1], digest_hex)


def totp_step(secret: str, code: str, now: datetime) -> int | None:
    """The 30 s step whose code ``code`` is (within one step of drift either way), or None. Every step in the
    window is compared, whichever matched, so the time taken says nothing; callers refuse a step used before."""
    code = str(code).strip().replace(" ", "")
    if not code.isdigit() or len(code) != 6:
        return None
    totp = pyotp.TOTP(secret)
    current = int(now.timestamp()) // totp.interval
    found = None
    for step in range(current - TOTP_VALID_WINDOW, current + TOTP_VALID_WINDOW + 1):
        if hmac.compare_digest(totp.generate_otp(step), code):
            found = step
    return found
