"""Request plumbing the console's pages and API share: the body size cap, form and multipart parsing,
the session lookup, the CSRF checks and the security headers.

No python-multipart is installed on the county server (the officer UI never needed it), so multipart
bodies are read with the standard library's e-mail parser, after the size cap: the whole body is in memory
and never larger than ``max_upload_mb``.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from email.parser import BytesParser
from email.policy import HTTP
from urllib.parse import parse_qs

from fastapi import Request, Response
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.responses import JSONResponse

from sync.county.console.auth import Authenticator, ConsoleSession
from sync.county.console.service import ConsoleService

COOKIE = "bg_console"
CSRF_HEADER = "x-booking-gallery"
DRAIN_FACTOR = 4
CSP = ("default-src 'self'; img-src 'self'; style-src 'self'; script-src 'none'; object-src 'none'; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")


class BodyTooLarge(Exception):
    """The request body is over the console's cap (HTTP 413)."""


class BadForm(Exception):
    """A form body the console cannot read (HTTP 400)."""


@dataclass
class Console:
    """What every handler needs: the service, the authenticator, the limits, and each session's CSRF token."""

    service: ConsoleService
    auth: Authenticator
    max_body: int
    idle_seconds: float
    csrf: dict[str, str] = field(default_factory=dict)

    def csrf_token(self, session_token: str) -> str:
        return self.csrf.setdefault(session_token, secrets.token_urlsafe(24))


def console_of(request: Request) -> Console:
    return request.app.state.console


def token_of(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip() or None
    return request.cookies.get(COOKIE)


def session_of(request: Request) -> ConsoleSession:
    """The signed-in user of a request (an action: it resets the idle timer); raises ``AuthError``."""
    return console_of(request).auth.session(token_of(request))


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


async def read_body(request: Request) -> bytes:
    """The body, at most ``max_body`` bytes, else ``BodyTooLarge``. A body somewhat over the cap (up to
    ``DRAIN_FACTOR`` times) is read to its end and dropped before the 413 goes out: a browser that is still
    sending when the server answers shows "connection reset" instead of the console's message."""
    limit = console_of(request).max_body
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > DRAIN_FACTOR * limit:
        raise BodyTooLarge()
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > DRAIN_FACTOR * limit:
            break
        if size <= limit:
            chunks.append(chunk)
    if size > limit:
        raise BodyTooLarge()
    return b"".join(chunks)


def parse_urlencoded(body: bytes) -> dict[str, str]:
    try:
        pairs = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False)
    except UnicodeDecodeError:
        raise BadForm("the form is not UTF-8") from None
    return {k: v[0] for k, v in pairs.items()}


def parse_multipart(content_type: str, body: bytes) -> tuple[dict[str, str], dict[str, bytes]]:
    """(text fields, file fields) of a ``multipart/form-data`` body."""
    if "boundary=" not in content_type:
        raise BadForm("a multipart body needs a boundary")
    message = BytesParser(policy=HTTP).parsebytes(
        b"Content-Type: " + content_type.encode("latin-1") + b"\r\nMIME-Version: 1.0\r\n\r\n" + body)
    if not message.is_multipart():
        raise BadForm("the multipart body cannot be read")
    fields: dict[str, str] = {}
    files: dict[str, bytes] = {}
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        data = part.get_payload(decode=True) or b""
        if part.get_param("filename", header="content-disposition") is not None:
            if data:
                files[name] = data
        else:
            try:
                fields[name] = data.decode("utf-8")
            except UnicodeDecodeError:
                raise BadForm(f"the form field {name!r} is not UTF-8") from None
    return fields, files


async def read_form(request: Request) -> tuple[dict[str, str], dict[str, bytes]]:
    body = await read_body(request)
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        return parse_multipart(content_type, body)
    if content_type.startswith("application/x-www-form-urlencoded") or not body:
        return parse_urlencoded(body), {}
    raise BadForm("send the form as multipart/form-data or application/x-www-form-urlencoded")


def cross_site(request: Request) -> bool:
    """True when a browser says the request comes from another origin."""
    origin = request.headers.get("origin")
    if origin is None:
        return False
    return origin == "null" or origin.split("://", 1)[-1] != request.headers.get("host", "")


class GuardMiddleware(BaseHTTPMiddleware):
    """Refuses cross-site state changes and cookie-authenticated API writes without the custom header;
    adds the security headers to every answer."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.method not in ("GET", "HEAD", "OPTIONS"):
            bearer = request.headers.get("authorization", "").lower().startswith("bearer ")
            api_cookie = request.url.path.startswith("/api/") and not bearer \
                and request.url.path != "/api/v1/session" and request.headers.get(CSRF_HEADER) != "1"
            if cross_site(request) or api_cookie:
                response: Response = JSONResponse(
                    {"error": "Refused: a possible cross-site request (send the X-Booking-Gallery: 1 header or "
                              "a bearer token).", "code": "csrf"}, status_code=403)
                return security_headers(response)
        return security_headers(await call_next(request))


def security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")  # no-referrer makes a form's Origin "null"
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Cache-Control", "no-store")
    return response
