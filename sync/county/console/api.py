"""The console's JSON API, ``/api/v1``, behind the same sign-in as the page.

``POST /session`` ``{user_id, pin, code}`` answers ``{user_id, name, token}`` and sets the session cookie;
API clients send the token as ``Authorization: Bearer``. ``GET /records`` (filters ``booking_number``,
``ori``, ``station``, ``operator``, ``since``, ``until``, ``limit``, ``offset``), ``GET /records/{id}``,
``GET /records/{id}/photos/{n}`` (the JPEG), ``POST /search`` (multipart: ``image`` or ``record_id``,
``reason``, ``top``; answers the ``booking-gallery search --json`` document), ``GET /fleet``,
``GET /audit``. Errors are ``{"error": words, "code": short code}`` with the HTTP status.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from sync.county.console.http import COOKIE, BadForm, client_of, console_of, read_body, read_form, session_of, token_of
from sync.county.console.service import RecordFilter, ServiceError

router = APIRouter(prefix="/api/v1")


def parse_time(value: str | None, name: str) -> datetime | None:
    """An ISO 8601 date or time; a date alone is midnight UTC, a time without a zone is UTC."""
    if not value:
        return None
    try:
        moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ServiceError(f"{name} must be an ISO 8601 date or time, like 2026-12-01 or 2026-12-01T08:00Z") from None
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment


def record_filter(params: Any) -> RecordFilter:
    def text(name: str) -> str | None:
        value = (params.get(name) or "").strip()
        return value or None

    ori = text("ori")
    return RecordFilter(booking_number=text("booking_number"), ori=ori.upper() if ori else None,
                        station=text("station"), operator=text("operator") or text("officer"),
                        since=parse_time(params.get("since"), "since"), until=parse_time(params.get("until"), "until"))


def int_param(value: str | None, name: str, default: int, lo: int, hi: int) -> int:
    if value in (None, ""):
        return default
    try:
        number = int(str(value))
    except ValueError:
        raise ServiceError(f"{name} must be a whole number from {lo} to {hi}") from None
    if not lo <= number <= hi:
        raise ServiceError(f"{name} must be a whole number from {lo} to {hi}")
    return number


@router.post("/session")
async def sign_in(request: Request) -> Response:
    body = await read_body(request)
    try:
        doc = json.loads(body or b"{}")
    except ValueError:
        raise BadForm("send a JSON object {user_id, pin, code}") from None
    if not isinstance(doc, dict) or not all(isinstance(doc.get(k), str) for k in ("user_id", "pin", "code")):
        raise BadForm("send a JSON object {user_id, pin, code}, each a string")
    auth = console_of(request).auth
    token, session = await run_in_threadpool(auth.sign_in, doc["user_id"], doc["pin"], doc["code"],
                                             client_of(request))
    response = JSONResponse({"user_id": session.user_id, "name": session.name, "token": token})
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response


@router.delete("/session")
async def sign_out(request: Request) -> Response:
    console_of(request).auth.sign_out(token_of(request))
    response = JSONResponse({"signed_out": True})
    response.delete_cookie(COOKIE)
    return response


@router.get("/records")
def records(request: Request) -> dict[str, Any]:
    session_of(request)
    q = request.query_params
    rows = console_of(request).service.records(record_filter(q), limit=int_param(q.get("limit"), "limit", 100, 1, 1000),
                                               offset=int_param(q.get("offset"), "offset", 0, 0, 10**9))
    return {"records": rows, "count": len(rows)}


@router.get("/records/{record_id}")
def record(record_id: str, request: Request) -> dict[str, Any]:
    session = session_of(request)
    return console_of(request).service.record(record_id, actor=session.user_id)


@router.get("/records/{record_id}/photos/{index}")
def photo(record_id: str, index: int, request: Request) -> Response:
    session_of(request)
    return Response(console_of(request).service.photo(record_id, index), media_type="image/jpeg")


@router.post("/search")
async def search(request: Request) -> dict[str, Any]:
    session = session_of(request)
    fields, files = await read_form(request)
    console = console_of(request)
    return await run_in_threadpool(
        lambda: console.service.search(actor=session.user_id, reason=fields.get("reason"), image=files.get("image"),
                                       record_id=fields.get("record_id") or None,
                                       top=int_param(fields.get("top"), "top", 10, 1, 100)))


@router.get("/fleet")
def fleet(request: Request) -> dict[str, Any]:
    session_of(request)
    return {"stations": console_of(request).service.fleet()}


@router.get("/audit")
def audit(request: Request) -> dict[str, Any]:
    session_of(request)
    q = request.query_params
    return {"entries": console_of(request).service.audit(action=q.get("action") or None,
                                                        limit=int_param(q.get("limit"), "limit", 100, 1, 1000))}
