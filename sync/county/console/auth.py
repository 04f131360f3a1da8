"""Signing county staff in and out, the idle lock, and the audit of every step.

The station's rules, on the county's side: PIN + TOTP (`sync.county.console.accounts`), 5 failures lock the
account for 10 minutes, a session locks after ``idle_minutes`` without a user action (page views, searches
and API calls count; nothing polls), and ends after 12 hours whatever the activity. Sign-ins (``console_logon``),
failures (``console_logon_failed``), locks (``console_account_lock``, ``console_session_lock``) and sign-outs
(``console_logoff``) go to the gallery's audit log.

Session tokens are 256-bit random values in an HttpOnly, SameSite=Strict cookie (or an ``Authorization:
Bearer`` header for API clients); the server keeps only their SHA-256, in memory, so a restart signs
everyone out: the safe direction.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sync.county.console.accounts import LOCK_MINUTES, MAX_FAILURES, AccountError, AccountStore
from sync.county.gallery.store import GalleryStoreError, open_store

log = logging.getLogger(__name__)
MAX_SESSION_HOURS = 12


class AuthError(Exception):
    """Sign-in refused or no valid session; ``code`` for the page and the API, the message for the user."""

    def __init__(self, message: str, code: str, status: int = 401) -> None:
        super().__init__(message)
        self.code = code
        self.status = status


@dataclass
class ConsoleSession:
    user_id: str
    name: str
    started: float
    last_action: float
    client: str


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Authenticator:
    def __init__(self, accounts: Path, issuer: str, db_url: str, *, idle_seconds: float,
                 monotonic: Callable[[], float] = time.monotonic) -> None:
        self.accounts_path = accounts
        self.issuer = issuer
        self.db_url = db_url
        self.idle_seconds = idle_seconds
        self.monotonic = monotonic
        self._sessions: dict[str, ConsoleSession] = {}
        self._ended: dict[str, str] = {}
        self._lock = threading.Lock()

    def audit(self, actor: str, action: str, subject: str, details: dict[str, Any]) -> None:
        """Write to the gallery's audit log; a failure is logged loudly (the sign-in itself is not refused)."""
        try:
            with open_store(self.db_url, create=False) as store:
                store.audit(actor, action, subject, details)
        except (GalleryStoreError, OSError) as exc:
            log.error("audit entry %s/%s NOT written: %s", actor, action, exc)

    def sign_in(self, user_id: str, pin: str, code: str, client: str) -> tuple[str, ConsoleSession]:
        user_id = user_id.strip() if isinstance(user_id, str) else ""
        actor = user_id if user_id and user_id.isprintable() and len(user_id) <= 64 else "unknown"
        try:
            with AccountStore(self.accounts_path, issuer=self.issuer) as accounts:
                attempt = accounts.verify(user_id, pin, code)
        except AccountError as exc:
            log.error("console accounts unusable: %s", exc)
            raise AuthError("Sign-in is not possible: the server's accounts file cannot be used.",
                            "accounts_unusable", 503) from None
        if attempt.verdict == "ok" and attempt.user is not None:
            token = secrets.token_urlsafe(32)
            now = self.monotonic()
            session = ConsoleSession(attempt.user.user_id, attempt.user.name, now, now, client)
            with self._lock:
                self._sessions[digest(token)] = session
            self.audit(actor, "console_logon", actor, {"client": client, "second_factor": "totp"})
            return token, session
        if attempt.verdict == "locked":
            self.audit(actor, "console_logon_failed", actor, {"reason": "locked", "client": client})
            raise AuthError(f"This account is locked after {MAX_FAILURES} failed sign-ins. Try again in "
                            f"{LOCK_MINUTES} minutes or ask an administrator to unlock it.", "account_locked", 403)
        self.audit(actor, "console_logon_failed", actor, {"reason": attempt.reason, "client": client,
                                                          "failures": attempt.failures})
        if attempt.just_locked:
            self.audit(actor, "console_account_lock", actor, {"failures": attempt.failures, "client": client})
            raise AuthError(f"This account is now locked for {LOCK_MINUTES} minutes after {MAX_FAILURES} failed "
                            "sign-ins.", "account_locked", 403)
        why = ("That code was already used: wait for the next code in your app." if attempt.reason == "code_reused"
               else "Sign-in refused: the user id, PIN or code is wrong.")
        raise AuthError(why, "wrong_credentials")

    def session(self, token: str | None) -> ConsoleSession:
        """The session of a token; every use is a user action and resets the idle timer."""
        self.sweep()
        if not token:
            raise AuthError("Please sign in.", "signed_out")
        key = digest(token)
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                if self._ended.get(key) == "idle":
                    raise AuthError(f"Your session was locked after {self.idle_seconds / 60:g} minutes without "
                                    "activity. Sign in again.", "session_locked")
                raise AuthError("Please sign in.", "signed_out")
            session.last_action = self.monotonic()
            return session

    def sweep(self) -> None:
        now = self.monotonic()
        ended: list[tuple[ConsoleSession, str]] = []
        with self._lock:
            for key, s in list(self._sessions.items()):
                why = "idle" if now - s.last_action >= self.idle_seconds else (
                    "max_age" if now - s.started >= MAX_SESSION_HOURS * 3600 else None)
                if why is not None:
                    del self._sessions[key]
                    self._ended[key] = why
                    ended.append((s, why))
            while len(self._ended) > 1000:
                del self._ended[next(iter(self._ended))]
        for s, why in ended:
            self.audit(s.user_id, "console_session_lock", s.user_id, {"reason": why, "client": s.client})

    def sign_out(self, token: str | None) -> None:
        if not token:
            return
        with self._lock:
            session = self._sessions.pop(digest(token), None)
        if session is not None:
            self.audit(session.user_id, "console_logoff", session.user_id, {"client": session.client})
