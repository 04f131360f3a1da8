"""Sign-in (officer id, PIN and TOTP code), who is signed in, and sign-out: the session cookie."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field

from appliance.ui.auth import WebSession
from appliance.ui.context import Context, context
from appliance.ui.guards import COOKIE, client_of, officer_action, officer_poll

router = APIRouter()


class SignInBody(BaseModel):
    officer_id: str = Field(max_length=64)
    pin: str = Field(max_length=32)
    code: str = Field(max_length=16)


@router.post("/api/v1/session")
def sign_in(body: SignInBody, request: Request, response: Response,
            ctx: Context = Depends(context)) -> dict[str, Any]:
    token, session = ctx.auth.sign_in(body.officer_id, body.pin, body.code, client_of(request))
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/",
                        secure=ctx.settings.cookie_secure or request.url.scheme == "https")
    return _me(ctx, session)


@router.get("/api/v1/session")
def whoami(session: WebSession = Depends(officer_poll), ctx: Context = Depends(context)) -> dict[str, Any]:
    return _me(ctx, session)


@router.post("/api/v1/session/alive")
def still_here(session: WebSession = Depends(officer_action), ctx: Context = Depends(context)) -> dict[str, Any]:
    """The officer answered the idle warning: an action, so the idle timer starts again."""
    return _me(ctx, session)


@router.delete("/api/v1/session")
def sign_out(request: Request, response: Response, ctx: Context = Depends(context)) -> dict[str, Any]:
    ctx.auth.sign_out(request.cookies.get(COOKIE))
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return {"ok": True}


def _me(ctx: Context, session: WebSession) -> dict[str, Any]:
    return {"officer_id": session.officer_id, "name": session.name, "role": session.role,
            "station_id": ctx.settings.station_id,
            "default_agency": ctx.settings.agency_ori, "idle_seconds": ctx.auth.idle_seconds,
            "idle_left_seconds": ctx.auth.idle_left(session)}
