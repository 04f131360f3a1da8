"""Officer accounts: individual sign-in with a PIN and a TOTP second factor, and the lockout rule.

Where: ``DATA_DIR/accounts.db``, a small SQLite file of its own (mode 0600, WAL, ``secure_delete``).
Not in the station database because accounts are not part of any record, are never synced, and a county
that restores the station database from backup must not resurrect old PINs or unlocked accounts; and the
store offers no place for them. Every sign-in, failure and lock is written to the store's hash-chained
audit log by `appliance.ui.auth`, not here: this module keeps state, the audit log keeps history.

Why these choices (FBI CJIS Security Policy, "Identification and Authentication"):

* **Individual accounts**, each with a PIN (6-16 digits) and a TOTP secret (RFC 6238, 30 s, 6 digits,
  SHA-1 - what every authenticator app understands). The PIN alone is not enough; the code alone is not
  enough.
* **PIN hashing: stdlib ``hashlib.scrypt``** (n=2**14, r=8, p=1: ~16 MiB and ~50 ms on a Pi 4) with a
  random 16-byte salt per account. A memory-hard KDF makes an offline guess of a 6-digit PIN cost real
  work, and it needs no compiled dependency on the device. The parameters are stored with each hash so
  they can be raised later without invalidating old PINs.
* **TOTP secrets are encrypted at rest** with the store's AES-256-GCM key (``DATA_DIR/keys/store.key``,
  via `appliance.store.crypto.BlobCipher`), bound to the officer id: a copied ``accounts.db`` alone
  yields neither PINs nor second factors.
* **A code is accepted once.** The last accepted 30 s step is kept per account; a code from that step or
  an earlier one is refused, so a code read over the officer's shoulder cannot be replayed. One step of
  clock drift either way is tolerated (the device may boot without an RTC before NTP answers).
* **Lockout: 5 consecutive failed sign-ins lock the account for 10 minutes.** Failures are counted in the
  database inside one ``BEGIN IMMEDIATE`` transaction, so parallel attempts cannot slip past the count.
  While locked, even the right PIN and code are refused (and not counted). The station admin can unlock
  early (`booking-station users unlock`).
"""

from __future__ import annotations

import os
import re
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pyotp

from appliance.store.clock import from_text, to_text, utc_now
from appliance.store.crypto import BlobCipher
from appliance.store.transactions import write_transaction
from sync import credentials
from sync.credentials import check_unknown_account, hash_pin, judge_attempt

ACCOUNTS_FILE = "accounts.db"
MAX_FAILURES = 5
"""Consecutive failed sign-ins that lock an account (CJIS: at most 5)."""
LOCK_MINUTES = 10
"""How long a locked account stays locked (CJIS: at least 10 minutes, unless an admin unlocks it)."""
OFFICER_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
NAME_MAX = 100
TOTP_ISSUER = "Booking station"
ROLES = ("officer", "station-admin")
"""An officer books; a station admin also enrols officers from the desk's Officers screen."""


class AccountError(Exception):
    """An account operation cannot be done; the message says why, for the admin or the officer."""


class UnknownOfficerError(AccountError, LookupError):
    """No account with this officer id."""


@dataclass(frozen=True)
class Officer:
    """An account as people see it (no secrets)."""

    officer_id: str
    name: str
    created_at: datetime
    failed_count: int
    locked_until: datetime | None
    last_logon_at: datetime | None
    role: str = "officer"

    def locked(self, now: datetime) -> bool:
        return self.locked_until is not None and self.locked_until > now


@dataclass(frozen=True)
class NewSecret:
    """A freshly made TOTP secret: shown once to the admin, who enrols it in the officer's app."""

    officer_id: str
    secret: str
    uri: str


class Verdict:
    """Outcomes of `AccountStore.verify`."""

    OK = "ok"
    WRONG = "wrong"  # wrong PIN or code (counted)
    LOCKED = "locked"  # the account is locked (attempt not counted)
    UNKNOWN = "unknown"  # no such officer


@dataclass(frozen=True)
class Attempt:
    """What one sign-in attempt came to. `just_locked`: this failure locked the account."""

    verdict: str
    officer: Officer | None
    reason: str  # for the audit log: "pin", "code", "code_reused", "locked", "unknown"
    failures: int = 0
    just_locked: bool = False
    locked_until: datetime | None = None


def check_officer_id(value: str) -> str:
    """An officer id: 1-64 of letters, digits, '.', '_' or '-' (it goes into every record as operator id)."""
    if not isinstance(value, str) or not OFFICER_ID_PATTERN.fullmatch(value):
        raise AccountError(f"officer id {value!r} must be 1-64 letters, digits, '.', '_' or '-', "
                           f"starting with a letter or digit")
    return value


def check_pin(pin: str) -> str:
    """A PIN by the rule both sides share (`sync.credentials`), refused as an `AccountError`."""
    try:
        return credentials.check_pin(pin)
    except credentials.CredentialError as exc:
        raise AccountError(str(exc)) from None


SCHEMA = """
CREATE TABLE IF NOT EXISTS officers (
    officer_id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    pin_hash TEXT NOT NULL,
    totp_secret BLOB NOT NULL,
    totp_last_step INTEGER NOT NULL DEFAULT 0,
    failed_count INTEGER NOT NULL DEFAULT 0 CHECK (failed_count >= 0),
    locked_until TEXT,
    created_at TEXT NOT NULL,
    last_logon_at TEXT,
    role TEXT NOT NULL DEFAULT 'officer'
)
"""
_COLUMNS = "officer_id, name, created_at, failed_count, locked_until, last_logon_at, role"


def totp_issuer(county: str, station: str) -> str:
    """The name an authenticator app shows for the account: which county and which station it opens."""
    where = " ".join(part for part in (county, station) if part)
    return f"{TOTP_ISSUER} {where}".strip()


class AccountStore:
    """The accounts file. One instance per thread (it holds one SQLite connection).

    cipher: the store's `BlobCipher` (TOTP secrets are encrypted with it). clock: current UTC time.
    """

    def __init__(self, path: Path | str, cipher: BlobCipher, *, clock: Callable[[], datetime] = utc_now) -> None:
        self.path = Path(path)
        self.cipher = cipher
        self.clock = clock
        _create_private(self.path)
        self.conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
        try:
            self.conn.execute("PRAGMA secure_delete = ON")
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute("PRAGMA synchronous = FULL")
            self.conn.execute(SCHEMA)
            columns = {row[1] for row in self.conn.execute("PRAGMA table_info(officers)")}
            if "role" not in columns:  # an accounts file from before roles: everyone is an officer
                self.conn.execute("ALTER TABLE officers ADD COLUMN role TEXT NOT NULL DEFAULT 'officer'")
        except sqlite3.Error as exc:
            self.conn.close()
            raise AccountError(f"accounts file {self.path} cannot be used: {exc}") from None

    @classmethod
    def open_data_dir(cls, data_dir: Path | str, cipher: BlobCipher, *,
                      clock: Callable[[], datetime] = utc_now) -> AccountStore:
        """The accounts file of a data directory (``DATA_DIR/accounts.db``)."""
        return cls(Path(data_dir) / ACCOUNTS_FILE, cipher, clock=clock)

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> AccountStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with write_transaction(self.conn) as conn:
            yield conn

    # --- admin -------------------------------------------------------------------------------------

    def add(self, officer_id: str, name: str, pin: str, *, role: str = "officer",
            issuer: str = TOTP_ISSUER) -> NewSecret:
        """Create an account; returns its TOTP secret and provisioning URI (show them once)."""
        check_officer_id(officer_id)
        if role not in ROLES:
            raise AccountError(f"the role must be one of {', '.join(ROLES)}")
        name = (name or officer_id).strip()
        if not name.isprintable() or len(name) > NAME_MAX:
            raise AccountError(f"the name must be printable and at most {NAME_MAX} characters")
        check_pin(pin)
        secret = pyotp.random_base32()
        now = to_text(self.clock())
        with self._write() as conn:
            if conn.execute("SELECT 1 FROM officers WHERE officer_id = ?", (officer_id,)).fetchone():
                raise AccountError(f"officer {officer_id} already has an account (use reset-totp or unlock)")
            conn.execute("INSERT INTO officers (officer_id, name, pin_hash, totp_secret, created_at, role) "
                         "VALUES (?, ?, ?, ?, ?, ?)",
                         (officer_id, name, hash_pin(pin), self._seal(officer_id, secret), now, role))
        return NewSecret(officer_id, secret, provisioning_uri(officer_id, secret, issuer))

    def reset_totp(self, officer_id: str, *, issuer: str = TOTP_ISSUER) -> NewSecret:
        """Give the account a new TOTP secret (lost phone); the old one stops working at once."""
        secret = pyotp.random_base32()
        with self._write() as conn:
            cursor = conn.execute("UPDATE officers SET totp_secret = ?, totp_last_step = 0 WHERE officer_id = ?",
                                  (self._seal(officer_id, secret), officer_id))
            if cursor.rowcount == 0:
                raise UnknownOfficerError(f"no account for officer {officer_id}")
        return NewSecret(officer_id, secret, provisioning_uri(officer_id, secret, issuer))

    def unlock(self, officer_id: str) -> Officer:
        """Clear the lock and the failure count."""
        with self._write() as conn:
            cursor = conn.execute("UPDATE officers SET failed_count = 0, locked_until = NULL WHERE officer_id = ?",
                                  (officer_id,))
            if cursor.rowcount == 0:
                raise UnknownOfficerError(f"no account for officer {officer_id}")
        return self.get(officer_id)

    def officers(self) -> list[Officer]:
        """Every account, by officer id."""
        rows = self.conn.execute(f"SELECT {_COLUMNS} FROM officers ORDER BY officer_id").fetchall()
        return [_officer(r) for r in rows]

    def get(self, officer_id: str) -> Officer:
        """One account; `UnknownOfficerError` if there is none."""
        row = self.conn.execute(f"SELECT {_COLUMNS} FROM officers WHERE officer_id = ?", (officer_id,)).fetchone()
        if row is None:
            raise UnknownOfficerError(f"no account for officer {officer_id}")
        return _officer(row)

    # --- sign-in -----------------------------------------------------------------------------------

    def verify(self, officer_id: str, pin: str, code: str) -> Attempt:
        """Check a sign-in attempt and update the failure count and lock in one transaction."""
        now = self.clock()
        if not isinstance(officer_id, str) or not OFFICER_ID_PATTERN.fullmatch(officer_id):
            check_unknown_account(pin)
            return Attempt(Verdict.UNKNOWN, None, "unknown")
        with self._write() as conn:
            row = conn.execute("SELECT pin_hash, totp_secret, totp_last_step, failed_count, locked_until "
                               "FROM officers WHERE officer_id = ?", (officer_id,)).fetchone()
            if row is None:
                check_unknown_account(pin)
                return Attempt(Verdict.UNKNOWN, None, "unknown")
            pin_hash, sealed, last_step, failures, locked_text = row
            judged = judge_attempt(str(pin), str(code), now, pin_hash=pin_hash,
                                   secret=lambda: self._open(officer_id, sealed), last_step=last_step,
                                   failures=failures, locked_until=from_text(locked_text) if locked_text else None,
                                   max_failures=MAX_FAILURES, lock_minutes=LOCK_MINUTES)
            if judged.verdict == "locked":
                return Attempt(Verdict.LOCKED, None, "locked", judged.failures, False, judged.locked_until)
            if judged.verdict == "wrong":
                lock = judged.locked_until
                conn.execute("UPDATE officers SET failed_count = ?, locked_until = ? WHERE officer_id = ?",
                             (judged.stored_failures, to_text(lock) if lock else None, officer_id))
                return Attempt(Verdict.WRONG, None, judged.reason, judged.failures, judged.just_locked, lock)
            conn.execute("UPDATE officers SET failed_count = 0, locked_until = NULL, totp_last_step = ?, "
                         "last_logon_at = ? WHERE officer_id = ?", (judged.step, to_text(now), officer_id))
        return Attempt(Verdict.OK, self.get(officer_id), "ok")

    # --- secrets -----------------------------------------------------------------------------------

    def _seal(self, officer_id: str, secret: str) -> bytes:
        return self.cipher.encrypt(secret.encode("ascii"), f"officer:{officer_id}", "totp", b"accounts-v1")

    def _open(self, officer_id: str, sealed: bytes) -> str:
        return self.cipher.decrypt(sealed, f"officer:{officer_id}", "totp", b"accounts-v1").decode("ascii")


def provisioning_uri(officer_id: str, secret: str, issuer: str = TOTP_ISSUER) -> str:
    """The ``otpauth://`` URI an authenticator app enrols (as a QR code or typed in)."""
    return pyotp.TOTP(secret).provisioning_uri(name=officer_id, issuer_name=issuer)


def _officer(row: tuple) -> Officer:
    officer_id, name, created, failures, locked, last, role = row
    return Officer(officer_id, name, from_text(created), failures, from_text(locked) if locked else None,
                   from_text(last) if last else None, role)


def _create_private(path: Path) -> None:
    """Create the file with mode 0600 before SQLite does (it would use the umask)."""
    if not path.parent.is_dir():
        raise AccountError(f"data directory {path.parent} does not exist")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return
    os.fchmod(fd, 0o600)
    os.close(fd)
