"""One-time enrolment tokens and the log of issued station certificates (SQLite, in the CA directory).

Token format: ``bst1-`` followed by 160 random bits in base32, grouped by four for reading aloud or
typing at a booking desk (``bst1-K7QD-3M2A-...``). Matching ignores case, spaces and hyphens. Only
``SHA-256(token)`` is stored: a copy of ``enroll.db`` does not let anyone enrol a device. A fast hash
is enough because the token is 160 random bits, not a password a person chose; there is nothing to
brute-force.

A token is bound to one county and one station, expires (24 h by default) and works once. It is
marked used in the same SQLite transaction that records the certificate it paid for, so two
concurrent requests with one token cannot both get a certificate. A device whose answer was lost in
transit may send the *same* request again (same keys) and gets the same certificate back; a different
key with a used token is refused.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import os
import secrets
import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from sync.county.intake import IMPORT_STATION

TOKEN_PREFIX = "bst1"
TOKEN_BYTES = 20
DEFAULT_TTL = dt.timedelta(hours=24)
DB_NAME = "enroll.db"

SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    hash TEXT PRIMARY KEY,              -- sha256 hex of the normalized token
    county TEXT NOT NULL,
    station TEXT NOT NULL,
    issued_at TEXT NOT NULL,
    expires_at TEXT NOT NULL,
    used_at TEXT,
    used_by_key TEXT,                   -- fingerprint of the keys that redeemed it
    certificate_serial TEXT
);
CREATE TABLE IF NOT EXISTS certificates (
    serial TEXT PRIMARY KEY,            -- hex
    county TEXT NOT NULL,
    station TEXT NOT NULL,
    not_before TEXT NOT NULL,
    not_after TEXT NOT NULL,
    key_fingerprint TEXT NOT NULL,
    certificate TEXT NOT NULL,          -- PEM
    issued_at TEXT NOT NULL,
    token_hash TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS certificates_station ON certificates (station);
CREATE TABLE IF NOT EXISTS rotations (
    command_id TEXT PRIMARY KEY,        -- the county rotate command that paid for the certificate
    county TEXT NOT NULL,
    station TEXT NOT NULL,
    key_fingerprint TEXT NOT NULL,      -- sha256 of the new TLS public key (a retry sends the same)
    certificate_serial TEXT NOT NULL,
    used_at TEXT NOT NULL,
    command_expires_at TEXT NOT NULL
);
"""


class TokenError(Exception):
    """A token the server refuses. ``code`` is the protocol error code (see protocol.ERROR_STATUS)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


class RotationUsed(TokenError):
    """The rotate command was already used, for another key."""

    def __init__(self, message: str) -> None:
        super().__init__("command_used", message)


@dataclass(frozen=True)
class IssuedToken:
    """A freshly issued token: the only time its clear text exists outside the device."""

    token: str
    token_id: str
    county: str
    station: str
    expires_at: dt.datetime


@dataclass(frozen=True)
class TokenInfo:
    """A token as `tokens list` shows it: never its clear text (which is not stored)."""

    token_id: str
    county: str
    station: str
    issued_at: dt.datetime
    expires_at: dt.datetime
    used_at: dt.datetime | None
    certificate_serial: str | None


@dataclass(frozen=True)
class IssuedCertificate:
    """What redeeming a token produced: the certificate, and whether it was a repeat of an earlier answer."""

    serial: str
    certificate_pem: str
    not_after: dt.datetime
    repeated: bool = False


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _ts(value: dt.datetime) -> str:
    return value.astimezone(dt.timezone.utc).isoformat(timespec="seconds")


def _parse_ts(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value)


def normalize_token(token: str) -> str:
    """Canonical form: upper case, no separators, no prefix. Typing errors in case or spacing are forgiven."""
    text = "".join(ch for ch in token.upper() if ch.isalnum())
    prefix = TOKEN_PREFIX.upper()
    return text[len(prefix):] if text.startswith(prefix) else text


def token_hash(token: str) -> str:
    return hashlib.sha256(f"{TOKEN_PREFIX}:{normalize_token(token)}".encode()).hexdigest()


def new_token() -> str:
    body = base64.b32encode(secrets.token_bytes(TOKEN_BYTES)).decode().rstrip("=")
    return TOKEN_PREFIX + "-" + "-".join(body[i:i + 4] for i in range(0, len(body), 4))


class TokenStore:
    """Tokens and the issued-certificate log in one SQLite file (0600) in the CA directory.

    Each call opens its own connection, so one store can serve the HTTP server's threads and a
    `tokens issue` run in another process at the same time; SQLite's write lock serializes them.
    """

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        if not self.path.exists():
            fd = os.open(self.path, os.O_WRONLY | os.O_CREAT, 0o600)
            os.close(fd)
        with self._connect() as conn:
            conn.executescript(SCHEMA)

    @classmethod
    def in_ca_dir(cls, directory: Path | str) -> TokenStore:
        return cls(Path(directory) / DB_NAME)

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            yield conn
        finally:
            conn.close()

    @contextlib.contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def issue(self, county: str, station: str, *, ttl: dt.timedelta = DEFAULT_TTL,
              now: dt.datetime | None = None) -> IssuedToken:
        """Create a token for one station. Its clear text is returned once and never stored."""
        if ttl <= dt.timedelta(0):
            raise ValueError("a token's lifetime must be positive")
        if station == IMPORT_STATION:
            raise ValueError(f"{IMPORT_STATION!r} is reserved for the county's own imported records")
        now = now or _utcnow()
        token = new_token()
        digest = token_hash(token)
        expires = now + ttl
        with self._write() as conn:
            conn.execute(
                "INSERT INTO tokens (hash, county, station, issued_at, expires_at) VALUES (?, ?, ?, ?, ?)",
                (digest, county, station, _ts(now), _ts(expires)),
            )
        return IssuedToken(token, digest[:8], county, station, expires)

    def list(self) -> list[TokenInfo]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT hash, county, station, issued_at, expires_at, used_at, certificate_serial FROM tokens "
                "ORDER BY issued_at, hash"
            ).fetchall()
        return [TokenInfo(r[0][:8], r[1], r[2], _parse_ts(r[3]), _parse_ts(r[4]),
                          _parse_ts(r[5]) if r[5] else None, r[6]) for r in rows]

    def certificates(self, station: str | None = None) -> list[dict]:
        """The issued-certificate log (for audits), oldest first."""
        query = "SELECT serial, county, station, not_before, not_after, issued_at FROM certificates"
        args: tuple = ()
        if station is not None:
            query += " WHERE station = ?"
            args = (station,)
        with self._connect() as conn:
            rows = conn.execute(query + " ORDER BY issued_at, serial", args).fetchall()
        keys = ("serial", "county", "station", "not_before", "not_after", "issued_at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def redeem(self, token: str, *, county: str, station: str, key_fingerprint: str,
               issue: Callable[[], tuple[str, str, dt.datetime, dt.datetime]],
               now: dt.datetime | None = None) -> IssuedCertificate:
        """Check the token and, inside the same transaction, call ``issue`` and mark the token used.

        ``issue()`` returns (serial hex, certificate PEM, not_before, not_after); if it raises, nothing is
        written and the token stays usable (a CSR refused for a typo must not burn the token).
        """
        now = now or _utcnow()
        digest = token_hash(token)
        with self._write() as conn:
            row = conn.execute(
                "SELECT county, station, expires_at, used_at, used_by_key, certificate_serial FROM tokens "
                "WHERE hash = ?", (digest,)
            ).fetchone()
            if row is None:
                raise TokenError("token_unknown",
                                 "the enrolment token is not valid: it was mistyped, or it was not issued by this "
                                 "county's enrolment server. Ask county IT for a token for this station.")
            t_county, t_station, expires_at, used_at, used_by_key, serial = row
            if t_county != county or t_station != station:
                raise TokenError("token_wrong_station",
                                 f"the enrolment token was issued for station {t_station!r} of county {t_county!r}, "
                                 f"not for station {station!r} of county {county!r}")
            if used_at is not None:
                if used_by_key == key_fingerprint and serial:
                    cert = conn.execute("SELECT certificate, not_after FROM certificates WHERE serial = ?",
                                        (serial,)).fetchone()
                    if cert is not None:
                        return IssuedCertificate(serial, cert[0], _parse_ts(cert[1]), repeated=True)
                raise TokenError("token_used",
                                 f"the enrolment token was already used at {used_at} to enrol station "
                                 f"{t_station!r}; a token works once. Ask county IT for a new token "
                                 f"(booking-gallery tokens issue --station {t_station}).")
            if _parse_ts(expires_at) <= now:
                raise TokenError("token_expired",
                                 f"the enrolment token expired at {expires_at}; ask county IT for a new token "
                                 f"(booking-gallery tokens issue --station {t_station}).")
            serial, pem, not_before, not_after = issue()
            conn.execute(
                "INSERT INTO certificates (serial, county, station, not_before, not_after, key_fingerprint, "
                "certificate, issued_at, token_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (serial, county, station, _ts(not_before), _ts(not_after), key_fingerprint, pem, _ts(now), digest),
            )
            conn.execute("UPDATE tokens SET used_at = ?, used_by_key = ?, certificate_serial = ? WHERE hash = ?",
                         (_ts(now), key_fingerprint, serial, digest))
        return IssuedCertificate(serial, pem, not_after)

    def rotate(self, command_id: str, *, county: str, station: str, key_fingerprint: str,
               command_expires_at: dt.datetime, issue: Callable[[], tuple[str, str, dt.datetime, dt.datetime]],
               now: dt.datetime | None = None) -> IssuedCertificate:
        """Spend a verified ``rotate`` command on one certificate, like :meth:`TokenStore.redeem` spends a token.

        Each command id pays for one certificate. The same command with the same key again (a station whose
        answer was lost) gets the same certificate back; with another key it raises :class:`RotationUsed`.
        The certificate is logged in ``certificates`` (``token_hash`` = ``rotate:{command_id}``), so a later
        revocation puts it in the CRL like every enrolment certificate.
        """
        now = now or _utcnow()
        with self._write() as conn:
            row = conn.execute("SELECT key_fingerprint, certificate_serial, used_at FROM rotations "
                               "WHERE command_id = ?", (command_id,)).fetchone()
            if row is not None:
                if row[0] == key_fingerprint:
                    cert = conn.execute("SELECT certificate, not_after FROM certificates WHERE serial = ?",
                                        (row[1],)).fetchone()
                    if cert is not None:
                        return IssuedCertificate(row[1], cert[0], _parse_ts(cert[1]), repeated=True)
                raise RotationUsed(f"rotate command {command_id} was already used at {row[2]} for another key; "
                                   "each rotate command pays for one certificate (county IT: devices rotate again)")
            serial, pem, not_before, not_after = issue()
            conn.execute(
                "INSERT INTO certificates (serial, county, station, not_before, not_after, key_fingerprint, "
                "certificate, issued_at, token_hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (serial, county, station, _ts(not_before), _ts(not_after), key_fingerprint, pem, _ts(now),
                 f"rotate:{command_id}"),
            )
            conn.execute(
                "INSERT INTO rotations (command_id, county, station, key_fingerprint, certificate_serial, used_at, "
                "command_expires_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (command_id, county, station, key_fingerprint, serial, _ts(now), _ts(command_expires_at)),
            )
        return IssuedCertificate(serial, pem, not_after)
