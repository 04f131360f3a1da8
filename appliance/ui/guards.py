"""The officer UI's guards (see `appliance.ui.server` for the order a request meets them): the CSRF check
and security headers (`GuardMiddleware`), and the session / JMS-token dependencies the routes declare."""

from __future__ import annotations

import re

from fastapi import Depends, Request, Response
from fastapi.responses import JSONResponse
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint

from appliance.ui.auth import AuthError, WebSession
from appliance.ui.context import Context, context

COOKIE = "bs_session"
CSRF_HEADER = "x-booking-station"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
CSP = ("default-src 'self'; img-src 'self' blob:; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
BEARER = re.compile(r"Bearer\s+(\S+)", re.IGNORECASE)


class GuardMiddleware(BaseHTTPMiddleware):
    """CSRF check on state-changing requests, and the security headers on every response."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.method not in SAFE_METHODS and request.url.path.startswith("/api/"):
            bearer = BEARER.fullmatch(request.headers.get("authorization", "").strip())
            if bearer is None:
                problem = csrf_problem(request)
                if problem is not None:
                    return security_headers(JSONResponse({"error": problem, "code": "csrf"}, status_code=403))
        return security_headers(await call_next(request))


def csrf_problem(request: Request) -> str | None:
    """Why a state-changing, cookie-authenticated request is refused as possibly cross-site, or None."""
    if request.headers.get(CSRF_HEADER) != "1":
        return f"Refused: the request lacks the {CSRF_HEADER} header (possible cross-site request)."
    origin = request.headers.get("origin")
    if origin is None:
        return None  # same-origin GET-less fetches from older browsers; the header check above still holds
    if origin == "null" or origin.split("://", 1)[-1] != request.headers.get("host", ""):
        return "Refused: the request comes from another site."
    return None


def security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    return response


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def officer_action(request: Request, ctx: Context = Depends(context)) -> WebSession:
    """The signed-in officer, for an action (refreshes the idle timer)."""
    return ctx.auth.session(request.cookies.get(COOKIE), action=True)


def officer_poll(request: Request, ctx: Context = Depends(context)) -> WebSession:
    """The signed-in officer, for a poll (leaves the idle timer alone)."""
    return ctx.auth.session(request.cookies.get(COOKIE), action=False)


def jms_or_officer(ctx: Context, request: Request) -> tuple[str, WebSession | None]:
    """("jms", None) for a valid JMS bearer token, ("officer", session) for a signed-in officer. Called by
    the handler, after its body was validated (not a dependency)."""
    bearer = BEARER.fullmatch(request.headers.get("authorization", "").strip())
    if bearer is not None:
        if ctx.settings.jms_token_matches(bearer.group(1)):
            return "jms", None
        ctx.auth.audit("jms", "api_auth_failed", {"client": client_of(request)})
        raise AuthError("Refused: the API token is wrong or JMS access is not configured.", "bad_token")
    return "officer", ctx.auth.session(request.cookies.get(COOKIE), action=request.method not in SAFE_METHODS)
