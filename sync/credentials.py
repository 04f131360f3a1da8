"""The sign-in rules both sides share: the PIN's format, its scrypt hash, the TOTP code check and the lockout.

The station's officer accounts (``appliance.ui.accounts``) and the county console's accounts
(``sync.county.console.accounts``) keep their own stores, roles and lockout figures, but a PIN, an
authenticator code and what a wrong attempt does (:func:`judge_attempt`) must mean the same on both, so the
rules live once, here, outside either side (the import contracts keep the county off the station's UI).
Each side turns :class:`CredentialError` into its own account error.
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

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


@functools.lru_cache(maxsize=1)
def _dummy_hash() -> str:
    return hash_pin("0", b"no-such-account")


def check_unknown_account(pin: str) -> None:
    """Spend on a sign-in for an account that does not exist the time a real PIN check takes (one scrypt of
    the same cost), so that the answer's timing does not tell which accounts exist; the result is ignored."""
    verify_pin(str(pin), _dummy_hash())


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


@dataclass(frozen=True)
class Judgement:
    """What one sign-in attempt on an existing account comes to; the caller stores it and reports it.

    ``verdict`` is ``locked`` (refused unchecked: the lock still runs), ``wrong`` or ``ok``; ``reason`` is
    ``locked``, ``pin``, ``code``, ``code_reused`` or ``ok``, for the audit log. ``failures`` is the count to
    report; ``stored_failures`` the one to write (0 once a lock starts, which takes its place). ``locked_until``
    is the lock that still runs (``locked``) or the one this attempt starts (``wrong``, ``just_locked``), and
    ``step`` the TOTP step to remember on ``ok``, so that the same code cannot sign in twice.
    """

    verdict: str
    reason: str
    failures: int = 0
    stored_failures: int = 0
    just_locked: bool = False
    locked_until: datetime | None = None
    step: int | None = None


def judge_attempt(pin: str, code: str, now: datetime, *, pin_hash: str, secret: Callable[[], str], last_step: int,
                  failures: int, locked_until: datetime | None, max_failures: int,
                  lock_minutes: float) -> Judgement:
    """The sign-in rule both account stores apply to a stored account: a running lock refuses unchecked; a
    lock that ran out starts the count afresh; the PIN, then the code (which must be newer than the last one
    used) are checked; ``max_failures`` wrong attempts in a row lock the account for ``lock_minutes``.

    ``secret`` is called only once the PIN is right, so a wrong PIN never decrypts the TOTP secret. The caller
    keeps its own store, lockout figures and account error, and runs this inside its write transaction.
    """
    if locked_until is not None and locked_until > now:
        return Judgement("locked", "locked", failures, failures, False, locked_until)
    if locked_until is not None:  # the lock ran out: start counting afresh
        failures = 0
    step = None
    if not verify_pin(pin, pin_hash):
        reason = "pin"
    else:
        step = totp_step(secret(), code, now)
        reason = "code" if step is None else ("code_reused" if step <= last_step else "ok")
    if reason == "ok":
        return Judgement("ok", "ok", step=step)
    failures += 1
    just_locked = failures >= max_failures
    lock = now + timedelta(minutes=lock_minutes) if just_locked else None
    return Judgement("wrong", reason, failures, 0 if just_locked else failures, just_locked, lock)
