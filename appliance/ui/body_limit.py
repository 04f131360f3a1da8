"""The request body limit of the officer UI, for every route, before any of the body is read.

The JSON API's bodies are tiny (a booking number, a pose, a PIN), and nothing uploads files. Without a
limit, FastAPI reads a body whole before validating it, so one unauthenticated 50 MB ``POST`` costs the
station 50 MB of memory before its 422. The limit is ``[ui] max_body_bytes`` (64 KiB unless set; see
`appliance.config.UIConfig` for its range). This ASGI middleware (outermost, so it runs before the host
check, the guards and any route) answers 413:

* at once when ``Content-Length`` is over the limit (the body is never read), and
* as soon as a body sent without a length (chunked) has streamed more than the limit: the bytes are
  counted as they arrive, the 413 goes out there, and the route sees only a client that went away.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from appliance.config import UI_MAX_BODY_BYTES

MAX_BODY_BYTES = UI_MAX_BODY_BYTES
"""The default limit (``[ui] max_body_bytes``; the biggest real body, a booking with its SMT notes, is ~2 kB)."""


class BodyTooLarge(HTTPException):
    """A body over the limit, for code that checks a body itself (the middleware answers on its own)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"Refused: the request body is larger than {limit} bytes.")


class BodyLimitMiddleware:
    """See the module docstring. ``max_bytes`` defaults to :data:`MAX_BODY_BYTES`."""

    def __init__(self, app: ASGIApp, max_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is None:
            await _refuse(send, 400, "Refused: the Content-Length header is not a number.", "bad_length")
            return
        if declared > self.max_bytes:
            await _refuse(send, 413, str(BodyTooLarge(self.max_bytes).detail), "too_large")
            return
        state = {"seen": 0, "started": False, "refused": False}

        async def counting_receive() -> Message:
            if state["refused"]:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                state["seen"] += len(message.get("body", b""))
                if state["seen"] > self.max_bytes:
                    # Answer now, from here: the route (or FastAPI's body parser) only learns that the client
                    # went away, and whatever it tries to send afterwards is dropped.
                    state["refused"] = True
                    if not state["started"]:
                        state["started"] = True
                        await _refuse(send, 413, str(BodyTooLarge(self.max_bytes).detail), "too_large")
                    return {"type": "http.disconnect"}
            return message

        async def tracking_send(message: Message) -> None:
            if state["refused"]:
                return
            state["started"] = state["started"] or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting_receive, tracking_send)
        except Exception:
            if not state["refused"]:
                raise  # not ours: the app's own error handling applies


def _content_length(scope: Scope) -> int | None:
    """The declared body length (0 when none is declared), or None when the header is not a number."""
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdigit() and len(text) <= 18 else None
    return 0


async def _refuse(send: Send, status: int, message: str, code: str) -> None:
    body = json.dumps({"error": message, "code": code}).encode()
    headers: list[tuple[bytes, bytes]] = [
        (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"), (b"cache-control", b"no-store"), (b"x-content-type-options", b"nosniff"),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def body_too_large(request: Any, exc: BodyTooLarge) -> Any:
    """The exception handler for a streamed body cut off inside a route (same answer as the middleware's)."""
    from fastapi.responses import JSONResponse

    return JSONResponse({"error": exc.detail, "code": "too_large"}, status_code=413, headers={"Connection": "close"})
