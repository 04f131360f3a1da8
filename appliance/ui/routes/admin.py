"""The station admin's Officers screen: the accounts of this station, and enrolling an officer (PIN and
authenticator QR code) without a root shell. Only a signed-in `station-admin` may use it; every
enrolment is written to the audit log with the admin's officer id as actor."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, Field

from appliance.store.clock import utc_now
from appliance.ui.accounts import ROLES, AccountError, AccountStore, totp_issuer
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
            "officers": [{"officer_id": o.officer_id, "name": o.name, "role": o.role, "locked": o.locked(now),
                          "last_logon_at": o.last_logon_at.isoformat() if o.last_logon_at else None}
                         for o in rows]}


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
