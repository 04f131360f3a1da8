"""Signing officers in and out of the web UI, and locking idle sessions; every step audited.

The rules (after the CJIS Security Policy's advanced authentication, lockout and session-lock requirements):

* sign-in needs the officer id, the PIN and the current TOTP code (`appliance.ui.accounts`); 5 failures
  in a row lock the account for 10 minutes, and a locked account refuses even the right PIN and code;
* a web session locks after `idle_seconds` (at most 30 minutes) without an officer action. Only actions
  count: the page's own polling (live preview, queue refresh) reads state but does not keep a session
  alive, otherwise a kiosk left on the booking screen would never lock;
* sessions also end after `MAX_SESSION_HOURS` whatever the activity (a shift), and on sign-out;
* every sign-in (`logon`), failure (`logon_failed`), account lock (`account_lock`), idle lock
  (`session_lock`) and sign-out (`logoff`) goes to the store's hash-chained audit log.

Session tokens are 256-bit random values handed to the browser in an HttpOnly, SameSite=Strict cookie;
the server keeps only their SHA-256, in memory. A server restart therefore signs everybody out, which is
the safe direction (the booking in progress survives: see `appliance.ui.drafts`).
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from appliance.store import StationStoreError, Store
from appliance.store.clock import utc_now
from appliance.ui.accounts import LOCK_MINUTES, MAX_FAILURES, AccountStore, Officer, Verdict

log = logging.getLogger(__name__)

MAX_IDLE_SECONDS = 30 * 60
"""CJIS: a session locks after at most 30 minutes of inactivity."""
MAX_SESSION_HOURS = 12
TOKEN_BYTES = 32
MAX_ENDED_REMEMBERED = 1000


class AuthError(Exception):
    """A sign-in or session problem. `code` is a short machine code for the page; the message is for
    the officer. `status` is the HTTP status to answer with."""

    def __init__(self, message: str, code: str, status: int = 401, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        self.extra = extra


@dataclass
class WebSession:
    """One signed-in browser. Times are `time.monotonic()` seconds (immune to wall-clock steps)."""

    officer_id: str
    name: str
    started: float
    last_action: float
    client: str
    role: str = "officer"


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def local_clock_text(moment: datetime) -> str:
    """`14:32` in the station's local time zone: what an officer reads on the wall clock."""
    return moment.astimezone().strftime("%H:%M")


class Authenticator:
    """Sign-in, the session table and the idle lock.

    open_accounts / open_store: return a new `AccountStore` / `Store` (each thread opens its own; SQLite
    connections belong to the thread that made them). monotonic / wall: clocks, replaceable in tests.
    """

    def __init__(self, open_accounts: Callable[[], AccountStore], open_store: Callable[[], Store], *,
                 idle_seconds: float = MAX_IDLE_SECONDS, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = utc_now) -> None:
        if not 0 < idle_seconds <= MAX_IDLE_SECONDS:
            raise ValueError(f"the idle lock must be more than 0 and at most {MAX_IDLE_SECONDS // 60} minutes")
        self.open_accounts = open_accounts
        self.open_store = open_store
        self.idle_seconds = float(idle_seconds)
        self.monotonic = monotonic
        self.wall = wall
        self._sessions: dict[str, WebSession] = {}
        self._ended: dict[str, str] = {}  # digest -> why, so a locked page can be told why
        self._lock = threading.Lock()

    # --- audit -------------------------------------------------------------------------------------

    def audit(self, actor: str, action: str, details: dict[str, Any]) -> None:
        """Append to the station's audit log. A failure to audit is logged loudly but does not stop the
        desk: a full disk must not also lock every officer out of the queue screen that shows the alarm."""
        try:
            with self.open_store() as store:
                store.append_audit(actor, action, details)
        except StationStoreError as exc:
            log.error("audit entry %s/%s NOT written: %s", actor, action, exc)

    # --- sign-in -----------------------------------------------------------------------------------

    def sign_in(self, officer_id: str, pin: str, code: str, client: str) -> tuple[str, WebSession]:
        """Check the attempt; on success return (token, session). Raises `AuthError` with the officer's
        message otherwise. The attempt is audited whatever its outcome."""
        officer_id = officer_id.strip() if isinstance(officer_id, str) else ""
        actor = officer_id if officer_id and officer_id.isprintable() and len(officer_id) <= 64 else "unknown"
        with self.open_accounts() as accounts:
            attempt = accounts.verify(officer_id, pin, code)
        if attempt.verdict == Verdict.OK:
            officer = attempt.officer
            assert officer is not None
            return self._start(officer, client)
        if attempt.verdict == Verdict.LOCKED:
            until = attempt.locked_until
            assert until is not None
            self.audit(actor, "logon_failed", {"reason": "locked", "client": client,
                                               "locked_until": until.isoformat()})
            raise AuthError(self._locked_message(until), "account_locked", 403,
                            locked_until=until.isoformat())
        if attempt.verdict == Verdict.UNKNOWN:
            self.audit(actor, "logon_failed", {"reason": "unknown_officer", "client": client})
            raise AuthError("Sign-in refused: the officer id, PIN or code is wrong.", "wrong_credentials")
        self.audit(actor, "logon_failed", {"reason": attempt.reason, "failures": attempt.failures,
                                           "client": client})
        if attempt.just_locked:
            until = attempt.locked_until
            assert until is not None
            self.audit(actor, "account_lock", {"failures": attempt.failures, "minutes": LOCK_MINUTES,
                                               "locked_until": until.isoformat(), "client": client})
            raise AuthError(self._locked_message(until), "account_locked", 403, locked_until=until.isoformat())
        left = MAX_FAILURES - attempt.failures
        if attempt.reason == "code_reused":
            why = "That code was already used: wait for the next code in your app and try again."
        else:
            why = "Sign-in refused: the officer id, PIN or code is wrong."
        raise AuthError(f"{why} {left} attempt{'s' if left != 1 else ''} left before the account locks for "
                        f"{LOCK_MINUTES} minutes.", "wrong_credentials", attempts_left=left)

    def _locked_message(self, until: datetime) -> str:
        minutes = max(1, round((until - self.wall()).total_seconds() / 60))
        return (f"This account is locked after {MAX_FAILURES} failed sign-ins. Try again after "
                f"{local_clock_text(until)} (in about {minutes} minute{'s' if minutes != 1 else ''}), "
                f"or ask the station admin to unlock it.")

    def _start(self, officer: Officer, client: str) -> tuple[str, WebSession]:
        token = secrets.token_urlsafe(TOKEN_BYTES)
        now = self.monotonic()
        session = WebSession(officer.officer_id, officer.name, now, now, client, officer.role)
        with self._lock:
            self._sessions[token_digest(token)] = session
        self.audit(officer.officer_id, "logon", {"client": client, "second_factor": "totp"})
        return token, session

    # --- sessions ----------------------------------------------------------------------------------

    def session(self, token: str | None, *, action: bool) -> WebSession:
        """The session of a request's token. `action`: an officer action, which resets the idle timer
        (a poll does not). Raises `AuthError`: `session_locked` for a session that was just locked (so the
        page can say why), `signed_out` otherwise."""
        self.sweep()
        if not token:
            raise AuthError("Please sign in.", "signed_out")
        digest = token_digest(token)
        with self._lock:
            session = self._sessions.get(digest)
            if session is None:
                why = self._ended.get(digest)
                if why == "idle":
                    raise AuthError(f"Your session was locked after {self.idle_text()} without activity. "
                                    f"Sign in again; the booking in progress is kept.", "session_locked")
                if why == "max_age":
                    raise AuthError(f"Your session ended after {MAX_SESSION_HOURS} hours. Sign in again; the "
                                    f"booking in progress is kept.", "session_locked")
                raise AuthError("Please sign in.", "signed_out")
            if action:
                session.last_action = self.monotonic()
            return session

    def sweep(self) -> None:
        """Lock (end and audit) every session idle for too long or older than a shift."""
        now = self.monotonic()
        ended: list[tuple[WebSession, str]] = []
        with self._lock:
            for digest, session in list(self._sessions.items()):
                if now - session.last_action >= self.idle_seconds:
                    why = "idle"
                elif now - session.started >= MAX_SESSION_HOURS * 3600:
                    why = "max_age"
                else:
                    continue
                del self._sessions[digest]
                self._ended[digest] = why
                ended.append((session, why))
            while len(self._ended) > MAX_ENDED_REMEMBERED:  # oldest first (dicts keep insertion order)
                del self._ended[next(iter(self._ended))]
        for session, why in ended:
            self.audit(session.officer_id, "session_lock", {
                "reason": why, "idle_seconds": round(now - session.last_action), "client": session.client})

    def sign_out(self, token: str | None) -> None:
        if not token:
            return
        with self._lock:
            session = self._sessions.pop(token_digest(token), None)
        if session is not None:
            self.audit(session.officer_id, "logoff", {"client": session.client})

    def active(self) -> list[WebSession]:
        with self._lock:
            return list(self._sessions.values())

    def idle_left(self, session: WebSession) -> float:
        """Seconds before `session` locks for inactivity (the page counts down from it)."""
        return max(0.0, round(self.idle_seconds - (self.monotonic() - session.last_action), 1))

    def idle_text(self) -> str:
        if self.idle_seconds < 60:
            return f"{self.idle_seconds:g} seconds"
        minutes = self.idle_seconds / 60
        return f"{minutes:g} minute{'s' if minutes != 1 else ''}"
