"""County console accounts: PIN + TOTP, lockout after repeated failures, one small SQLite file.

The same rules as the station's officer accounts (the county may not import the station's UI, and the two
sides keep separate account files: a county user is not an officer at any station):

* a PIN of 6-16 digits, hashed with stdlib scrypt (random salt, parameters kept with the hash);
* a TOTP secret (RFC 6238, 30 s, 6 digits) sealed with AES-256-GCM under a key file beside the accounts
  file (``<accounts>.key``, mode 0600), bound to the user id, so a copied accounts file alone yields
  no second factor; a code is accepted once (the last accepted step is kept), one step of drift allowed;
* 5 failed sign-ins in a row lock the account for 10 minutes; a locked account refuses even the right
  PIN and code; ``booking-gallery users unlock`` ends the lock early.

History (sign-ins, failures, locks) goes to the gallery's audit log, written by the console's session
code: this module keeps state only.
"""

from __future__ import annotations

import os
import re
import secrets
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pyotp
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from sync import credentials
from sync.credentials import check_unknown_account, hash_pin, judge_attempt

MAX_FAILURES = 5
LOCK_MINUTES = 10
USER_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY NOT NULL,
    name TEXT NOT NULL,
    pin_hash TEXT NOT NULL,
    totp_secret BLOB NOT NULL,
    totp_last_step INTEGER NOT NULL DEFAULT 0,
    failed_count INTEGER NOT NULL DEFAULT 0,
    locked_until TEXT,
    created_at TEXT NOT NULL,
    last_logon_at TEXT
)
"""


class AccountError(Exception):
    """An account operation cannot be done; the message says why (one line)."""


class UnknownUserError(AccountError, LookupError):
    """No account with this user id."""


@dataclass(frozen=True)
class User:
    """An account as people see it (no secrets)."""

    user_id: str
    name: str
    created_at: datetime
    failed_count: int
    locked_until: datetime | None
    last_logon_at: datetime | None

    def locked(self, now: datetime) -> bool:
        return self.locked_until is not None and self.locked_until > now

    def to_json(self, now: datetime) -> dict[str, object]:
        def iso(v: datetime | None) -> str | None:
            return None if v is None else v.isoformat()

        return {"user_id": self.user_id, "name": self.name, "created_at": iso(self.created_at),
                "failed_count": self.failed_count, "locked": self.locked(now),
                "locked_until": iso(self.locked_until), "last_logon_at": iso(self.last_logon_at)}


@dataclass(frozen=True)
class NewSecret:
    """A fresh TOTP secret, shown once to the admin who enrols it in the user's authenticator app."""

    user_id: str
    secret: str
    uri: str


@dataclass(frozen=True)
class Attempt:
    """One sign-in attempt. ``verdict``: ok, wrong, locked or unknown; ``reason`` for the audit log."""

    verdict: str
    user: User | None
    reason: str
    failures: int = 0
    just_locked: bool = False
    locked_until: datetime | None = None


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def check_user_id(value: str) -> str:
    if not isinstance(value, str) or not USER_ID_PATTERN.fullmatch(value):
        raise AccountError(f"user id {value!r} must be 1-64 letters, digits, '.', '_' or '-', "
                           "starting with a letter or digit")
    return value


def check_pin(pin: str) -> str:
    """A PIN by the rule both sides share (`sync.credentials`), refused as an `AccountError`."""
    try:
        return credentials.check_pin(pin)
    except credentials.CredentialError as exc:
        raise AccountError(str(exc)) from None


def _private_file(path: Path) -> None:
    """Create ``path`` with mode 0600 before anyone writes it (SQLite would use the umask)."""
    if not path.parent.is_dir():
        raise AccountError(f"the accounts folder {path.parent} does not exist")
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def _load_key(path: Path) -> bytes:
    if not path.exists():
        _private_file(path)
        with open(path, "wb") as fh:
            fh.write(AESGCM.generate_key(bit_length=256))
            fh.flush()
            os.fsync(fh.fileno())
    key = path.read_bytes()
    if len(key) != 32:
        raise AccountError(f"the accounts key {path} is not a 32-byte key")
    return key


class AccountStore:
    """The accounts file; one instance per thread (one SQLite connection)."""

    def __init__(self, path: str | os.PathLike[str], *, issuer: str,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.path = Path(path)
        self.issuer = issuer
        self.clock = clock
        _private_file(self.path)
        self._aead = AESGCM(_load_key(self.path.with_name(self.path.name + ".key")))
        self.conn = sqlite3.connect(str(self.path), isolation_level=None, timeout=30.0)
        try:
            self.conn.execute("PRAGMA secure_delete = ON")
            self.conn.execute("PRAGMA journal_mode = WAL")
            self.conn.execute(SCHEMA)
        except sqlite3.Error as exc:
            self.conn.close()
            raise AccountError(f"accounts file {self.path} cannot be used: {exc}") from None

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> AccountStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _seal(self, user_id: str, secret: str) -> bytes:
        nonce = secrets.token_bytes(12)
        return nonce + self._aead.encrypt(nonce, secret.encode(), f"console-user:{user_id}".encode())

    def _open(self, user_id: str, sealed: bytes) -> str:
        return self._aead.decrypt(bytes(sealed[:12]), bytes(sealed[12:]), f"console-user:{user_id}".encode()).decode()

    def uri(self, user_id: str, secret: str) -> str:
        return pyotp.TOTP(secret).provisioning_uri(name=user_id, issuer_name=self.issuer)

    # -- admin
    def add(self, user_id: str, name: str, pin: str) -> NewSecret:
        check_user_id(user_id)
        name = (name or user_id).strip()
        if not name.isprintable() or len(name) > 100:
            raise AccountError("the name must be printable and at most 100 characters")
        check_pin(pin)
        secret = pyotp.random_base32()
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            if self.conn.execute("SELECT 1 FROM users WHERE user_id = ?", (user_id,)).fetchone():
                raise AccountError(f"user {user_id} already has an account")
            self.conn.execute("INSERT INTO users (user_id, name, pin_hash, totp_secret, created_at) VALUES "
                              "(?, ?, ?, ?, ?)", (user_id, name, hash_pin(pin), self._seal(user_id, secret),
                                                  self.clock().isoformat()))
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return NewSecret(user_id, secret, self.uri(user_id, secret))

    def unlock(self, user_id: str) -> User:
        cur = self.conn.execute("UPDATE users SET failed_count = 0, locked_until = NULL WHERE user_id = ?", (user_id,))
        if cur.rowcount == 0:
            raise UnknownUserError(f"no account for user {user_id}")
        return self.get(user_id)

    def users(self) -> list[User]:
        rows = self.conn.execute("SELECT user_id, name, created_at, failed_count, locked_until, last_logon_at "
                                 "FROM users ORDER BY user_id").fetchall()
        return [_user(r) for r in rows]

    def get(self, user_id: str) -> User:
        row = self.conn.execute("SELECT user_id, name, created_at, failed_count, locked_until, last_logon_at "
                                "FROM users WHERE user_id = ?", (user_id,)).fetchone()
        if row is None:
            raise UnknownUserError(f"no account for user {user_id}")
        return _user(row)

    # -- sign-in
    def verify(self, user_id: str, pin: str, code: str) -> Attempt:
        """Check an attempt; count failures and lock in one ``BEGIN IMMEDIATE`` transaction."""
        now = self.clock()
        if not isinstance(user_id, str) or not USER_ID_PATTERN.fullmatch(user_id):
            check_unknown_account(pin)
            return Attempt("unknown", None, "unknown")
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            attempt = self._verify(user_id, str(pin), str(code), now)
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")
        return attempt if attempt.verdict != "ok" else Attempt("ok", self.get(user_id), "ok")

    def _verify(self, user_id: str, pin: str, code: str, now: datetime) -> Attempt:
        row = self.conn.execute("SELECT pin_hash, totp_secret, totp_last_step, failed_count, locked_until "
                                "FROM users WHERE user_id = ?", (user_id,)).fetchone()
        if row is None:
            check_unknown_account(pin)
            return Attempt("unknown", None, "unknown")
        pin_hash, sealed, last_step, failures, locked_text = row
        judged = judge_attempt(pin, code, now, pin_hash=pin_hash, secret=lambda: self._open(user_id, sealed),
                               last_step=last_step, failures=failures,
                               locked_until=datetime.fromisoformat(locked_text) if locked_text else None,
                               max_failures=MAX_FAILURES, lock_minutes=LOCK_MINUTES)
        if judged.verdict == "locked":
            return Attempt("locked", None, "locked", judged.failures, False, judged.locked_until)
        if judged.verdict == "wrong":
            lock = judged.locked_until
            self.conn.execute("UPDATE users SET failed_count = ?, locked_until = ? WHERE user_id = ?",
                              (judged.stored_failures, lock.isoformat() if lock else None, user_id))
            return Attempt("wrong", None, judged.reason, judged.failures, judged.just_locked, lock)
        self.conn.execute("UPDATE users SET failed_count = 0, locked_until = NULL, totp_last_step = ?, "
                          "last_logon_at = ? WHERE user_id = ?", (judged.step, now.isoformat(), user_id))
        return Attempt("ok", None, "ok")


def _user(row: tuple) -> User:
    user_id, name, created, failures, locked, last = row
    return User(user_id, name, datetime.fromisoformat(created), failures,
                datetime.fromisoformat(locked) if locked else None, datetime.fromisoformat(last) if last else None)
