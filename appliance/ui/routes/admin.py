"""The station admin's Officers screen: the accounts of this station, enrolling an officer (PIN and
authenticator QR code), unlocking a locked account and giving an officer a new authenticator entry (lost
or replaced phone), all without a root shell. Only a signed-in `station-admin` may use it; each change goes
to the audit log with the admin's officer id as actor and the same action names the CLI writes
(`account_create`, `account_unlock`, `totp_reset`), plus ``via: desk``. The account functions are the
ones `booking-station users add|unlock|reset-totp` call, so desk and CLI cannot drift apart."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from appliance.store.clock import utc_now
from appliance.ui.accounts import ROLES, AccountError, AccountStore, Officer, UnknownOfficerError, totp_issuer
from appliance.ui.auth import AuthError, WebSession
from appliance.ui.context import Context, context
from appliance.ui.enrolment import qr_svg
from appliance.ui.guards import officer_action, officer_poll
from sync.credentials import PIN_RULE

router = APIRouter()


class EnrolBody(BaseModel):
    officer_id: str = Field(max_length=64)
    name: str = Field(default="", max_length=100)
    pin: str = Field(max_length=32)
    role: str = Field(default="officer", max_length=32)


def _admin(session: WebSession) -> WebSession:
    if session.role != "station-admin":
        raise AuthError("Only a station admin can manage officers. Ask your station admin.", "not_admin", 403)
    return session


def admin_poll(session: WebSession = Depends(officer_poll)) -> WebSession:
    return _admin(session)


def admin_action(session: WebSession = Depends(officer_action)) -> WebSession:
    return _admin(session)


def _accounts(ctx: Context) -> AccountStore:
    return ctx.auth.open_accounts()


def _issuer(ctx: Context) -> str:
    return totp_issuer(ctx.settings.county, ctx.settings.station_id)


@router.get("/api/v1/admin/officers")
def officers(session: WebSession = Depends(admin_poll), ctx: Context = Depends(context)) -> dict[str, Any]:
    now = utc_now()
    with _accounts(ctx) as accounts:
        rows = accounts.officers()
    return {"pin_rule": PIN_RULE, "roles": list(ROLES), "issuer": _issuer(ctx),
            "officers": [_officer_row(o, now) for o in rows]}


def _officer_row(officer: Officer, now: datetime) -> dict[str, Any]:
    return {"officer_id": officer.officer_id, "name": officer.name, "role": officer.role,
            "locked": officer.locked(now),
            "last_logon_at": officer.last_logon_at.isoformat() if officer.last_logon_at else None}


@router.post("/api/v1/admin/officers", status_code=201)
def enrol(body: EnrolBody, session: WebSession = Depends(admin_action),
          ctx: Context = Depends(context)) -> dict[str, Any]:
    """Create the account; the answer carries the TOTP enrolment (URI, secret, QR code) once."""
    name = body.name.strip() or body.officer_id
    with _accounts(ctx) as accounts:
        try:
            secret = accounts.add(body.officer_id.strip(), name, body.pin, role=body.role, issuer=_issuer(ctx))
        except AccountError as exc:
            message = str(exc)
            raise AuthError(message[0].upper() + message[1:] + ".", "invalid", 422) from None
    ctx.auth.audit(session.officer_id, "account_create", {"officer_id": secret.officer_id, "name": name,
                                                         "role": body.role, "via": "desk"})
    return {"officer_id": secret.officer_id, "name": name, "role": body.role, "issuer": _issuer(ctx),
            "totp_uri": secret.uri, "totp_secret": secret.secret, "qr_svg": qr_svg(secret.uri)}


def _unknown(officer_id: str) -> AuthError:
    return AuthError(f"There is no account for officer {officer_id} at this station.", "unknown_officer", 404)


@router.post("/api/v1/admin/officers/{officer_id}/unlock")
def unlock(officer_id: str, session: WebSession = Depends(admin_action),
           ctx: Context = Depends(context)) -> dict[str, Any]:
    """End the lock of an account (5 failed sign-ins) and clear its failure count, as `users unlock` does."""
    with _accounts(ctx) as accounts:
        try:
            officer = accounts.unlock(officer_id)
        except UnknownOfficerError:
            raise _unknown(officer_id) from None
    ctx.auth.audit(session.officer_id, "account_unlock", {"officer_id": officer_id, "via": "desk"})
    return {**_officer_row(officer, utc_now()), "unlocked": True}


@router.post("/api/v1/admin/officers/{officer_id}/reset-totp")
def reset_totp(officer_id: str, session: WebSession = Depends(admin_action),
               ctx: Context = Depends(context)) -> dict[str, Any]:
    """A new authenticator secret (lost or replaced phone), as `users reset-totp` does: the old secret stops
    working at once, and the answer carries the new enrolment (URI, secret, QR code) once."""
    with _accounts(ctx) as accounts:
        try:
            secret = accounts.reset_totp(officer_id, issuer=_issuer(ctx))
            officer = accounts.get(officer_id)
        except UnknownOfficerError:
            raise _unknown(officer_id) from None
    ctx.auth.audit(session.officer_id, "totp_reset", {"officer_id": officer_id, "via": "desk"})
    return {"officer_id": secret.officer_id, "name": officer.name, "role": officer.role, "issuer": _issuer(ctx),
            "totp_uri": secret.uri, "totp_secret": secret.secret, "qr_svg": qr_svg(secret.uri)}
