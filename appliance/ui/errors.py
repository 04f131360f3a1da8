"""How the officer UI answers errors: sign-in and desk refusals with their status and code, invalid
bodies with the first three problems, and anything unexpected as a 500 that names no internals."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from appliance.ui.auth import AuthError
from appliance.ui.body_limit import BodyTooLarge, body_too_large
from appliance.ui.desk import DeskError
from appliance.ui.guards import COOKIE, security_headers

log = logging.getLogger("appliance.ui.server")  # the server's log: one logger for the whole web side


async def auth_error(request: Request, exc: AuthError) -> JSONResponse:
    response = JSONResponse({"error": str(exc), "code": exc.code, **exc.extra}, status_code=exc.status)
    if exc.code in ("signed_out", "session_locked"):
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


async def desk_error(request: Request, exc: DeskError) -> JSONResponse:
    body: dict[str, Any] = {"error": str(exc), "code": exc.code}
    if exc.detail:
        body["detail"] = exc.detail
    return JSONResponse(body, status_code=exc.status)


async def unexpected(request: Request, exc: Exception) -> Response:
    log.exception("unexpected error in %s %s", request.method, request.url.path)
    return security_headers(JSONResponse(
        {"error": f"Something went wrong on the station ({type(exc).__name__}). Try again; if it keeps "
                  f"happening, call county IT.", "code": "internal"}, status_code=500))


async def bad_body(request: Request, exc: RequestValidationError) -> JSONResponse:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
        parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
    return JSONResponse({"error": "Invalid request: " + "; ".join(parts), "code": "invalid"}, status_code=422)


#: Exception class -> handler, installed by `appliance.ui.server.create_app`.
ERROR_HANDLERS: dict[type[Exception], Callable[..., Any]] = {
    AuthError: auth_error,
    DeskError: desk_error,
    Exception: unexpected,
    RequestValidationError: bad_body,
    BodyTooLarge: body_too_large,
}
