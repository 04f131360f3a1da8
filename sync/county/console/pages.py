"""The console's web pages, rendered on the server: no script runs in the browser (the CSP forbids it),
so the pages work in any browser the county has, and the idle lock is a ``meta refresh`` to the sign-in
page plus the server's own session timeout.

Pages: sign-in, records (filters: booking number, ORI, station, officer, date range), a record (photos,
quality in words, overrides, delivery history, "search with this face"), face search (upload or record,
with a required reason; a grid of candidates with photos and distances), fleet, audit log.
"""

from __future__ import annotations

from html import escape
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse, RedirectResponse
from starlette.concurrency import run_in_threadpool

from sync.county.console.api import int_param, record_filter
from sync.county.console.auth import AuthError, ConsoleSession
from sync.county.console.http import COOKIE, client_of, console_of, read_form, session_of, token_of
from sync.county.console.service import REASON_MIN, ServiceError

router = APIRouter()
NAV = (("/records", "Records"), ("/search", "Face search"), ("/fleet", "Fleet"), ("/audit", "Audit log"))


def e(value: Any) -> str:
    return escape("" if value is None else str(value))


def when(iso: str | None) -> str:
    return "" if not iso else e(iso.replace("T", " ")[:16] + " UTC")


def layout(request: Request, title: str, body: str, session: ConsoleSession | None = None, *,
           status: int = 200, active: str = "") -> HTMLResponse:
    console = console_of(request)
    head = ""
    if session is not None:
        token = token_of(request) or ""
        links = "".join(f'<a href="{href}"{" class=active" if href == active else ""}>{name}</a>'
                        for href, name in NAV)
        head = (f'<meta http-equiv="refresh" content="{int(console.idle_seconds)};url=/signin?locked=1">',
                f'<header><span class="brand">County gallery console</span><nav>{links}</nav>'
                f'<form method="post" action="/signout" class="signout"><input type="hidden" name="csrf" '
                f'value="{e(console.csrf_token(token))}"><span class="who">{e(session.name)}</span>'
                f'<button type="submit">Sign out</button></form></header>')
    meta, header = head if head else ("", "")
    html = (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{e(title)} - county console</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">{meta}'
            f'<link rel="stylesheet" href="/static/console.css"></head><body>{header}'
            f'<main><h1>{e(title)}</h1>{body}</main></body></html>')
    return HTMLResponse(html, status_code=status)


def error_box(message: str | None) -> str:
    return f'<p class="error" role="alert">{e(message)}</p>' if message else ""


def csrf_field(request: Request) -> str:
    return f'<input type="hidden" name="csrf" value="{e(console_of(request).csrf_token(token_of(request) or ""))}">'


def check_csrf(request: Request, fields: dict[str, str]) -> None:
    expected = console_of(request).csrf.get(token_of(request) or "")
    if not expected or fields.get("csrf") != expected:
        raise ServiceError("This form has expired; open the page again.", 403)


# ------------------------------------------------------------------------------------------ sign-in
def signin_page(request: Request, message: str | None = None, status: int = 200) -> HTMLResponse:
    if message is None and request.query_params.get("locked"):
        message = "The console was locked after a time without activity. Sign in again."
    body = (f'{error_box(message)}<form method="post" action="/signin" class="card signin">'
            '<label>User id<input name="user_id" autocomplete="username" required></label>'
            '<label>PIN<input name="pin" type="password" inputmode="numeric" autocomplete="current-password" '
            'required></label><label>Code from your authenticator app<input name="code" inputmode="numeric" '
            'autocomplete="one-time-code" maxlength="7" required></label><button type="submit">Sign in</button>'
            '<p class="hint">Five wrong attempts lock the account for ten minutes. Every sign-in and every '
            'search is recorded in the audit log.</p></form>')
    return layout(request, "Sign in", body, status=status)


@router.get("/signin", response_class=HTMLResponse)
def signin_get(request: Request) -> HTMLResponse:
    return signin_page(request)


@router.post("/signin", response_class=HTMLResponse)
async def signin_post(request: Request) -> Response:
    fields, _ = await read_form(request)
    auth = console_of(request).auth
    try:
        token, _session = await run_in_threadpool(auth.sign_in, fields.get("user_id", ""), fields.get("pin", ""),
                                                  fields.get("code", ""), client_of(request))
    except AuthError as exc:
        return signin_page(request, str(exc), exc.status)
    response = RedirectResponse("/records", status_code=303)
    response.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=request.url.scheme == "https")
    return response


@router.post("/signout")
async def signout(request: Request) -> Response:
    fields, _ = await read_form(request)
    check_csrf(request, fields)
    console = console_of(request)
    console.auth.sign_out(token_of(request))
    console.csrf.pop(token_of(request) or "", None)
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE)
    return response


@router.get("/")
def home() -> Response:
    return RedirectResponse("/records", status_code=303)


# ------------------------------------------------------------------------------------------ records
FILTERS = (("booking_number", "Booking number", "text"), ("ori", "ORI", "text"), ("station", "Station", "text"),
           ("officer", "Officer", "text"), ("since", "From (date)", "date"), ("until", "Before (date)", "date"))


@router.get("/records", response_class=HTMLResponse)
def records_page(request: Request) -> HTMLResponse:
    session = session_of(request)
    q = request.query_params
    inputs = "".join(f'<label>{label}<input name="{name}" type="{kind}" value="{e(q.get(name))}"></label>'
                     for name, label, kind in FILTERS)
    form = f'<form method="get" action="/records" class="filters">{inputs}<button type="submit">Filter</button>' \
           '<a href="/records" class="button secondary">Clear</a></form>'
    try:
        limit = int_param(q.get("limit"), "limit", 100, 1, 1000)
        offset = int_param(q.get("offset"), "offset", 0, 0, 10**9)
        rows = console_of(request).service.records(record_filter(q), limit=limit + 1, offset=offset)
    except ServiceError as exc:
        return layout(request, "Records", form + error_box(str(exc)), session, status=400, active="/records")
    more, rows = len(rows) > limit, rows[:limit]
    lines = "".join(
        f'<tr><td><a href="/records/{e(r["record_id"])}">{e(r["booking_number"])}</a></td><td>{e(r["ori"])}</td>'
        f'<td>{e(r["station"])}</td><td>{e(r["operator"])}</td><td>{when(r["captured_at"])}</td>'
        f'<td>{e(r["capture_count"])}</td></tr>' for r in rows)
    table = ('<table class="records"><thead><tr><th>Booking number</th><th>ORI</th><th>Station</th><th>Officer</th>'
             f'<th>Captured</th><th>Photos</th></tr></thead><tbody>{lines}</tbody></table>'
             if rows else '<p class="empty">No record matches these filters.</p>')
    shown = f"{offset + 1}-{offset + len(rows)}" if rows else "0"
    pager = ""
    if offset or more:
        keep = {k: v for k, v in q.items() if k != "offset" and v}
        links = [f'<a href="/records?{e(urlencode({**keep, "offset": max(0, offset - limit)}))}">Newer</a>'] \
            if offset else []
        links += [f'<a href="/records?{e(urlencode({**keep, "offset": offset + limit}))}" class="next">Older</a>'] \
            if more else []
        pager = f'<p class="pager">{" | ".join(links)}</p>'
    return layout(request, "Records", f'{form}<p class="count">Records {shown}, newest capture first.</p>{table}'
                  f'{pager}', session, active="/records")


def search_form(request: Request, record_id: str | None = None, reason: str = "") -> str:
    probe = (f'<input type="hidden" name="record_id" value="{e(record_id)}">' if record_id else
             '<label>Photo to search with<input type="file" name="image" accept="image/jpeg,image/png" required>'
             '</label>')
    return ('<form method="post" action="/search" enctype="multipart/form-data" class="card search">'
            f'{csrf_field(request)}{probe}<label>Reason or case number (required, recorded in the audit log)'
            '<input name="reason" '
            f'required minlength="{REASON_MIN}" maxlength="200" value="{e(reason)}"></label>'
            '<label>Candidates<input name="top" type="number" min="1" max="100" value="10"></label>'
            f'<button type="submit">{"Search with this face" if record_id else "Search"}</button></form>')


@router.get("/records/{record_id}", response_class=HTMLResponse)
def record_page(record_id: str, request: Request) -> HTMLResponse:
    session = session_of(request)
    try:
        rec = console_of(request).service.record(record_id, actor=session.user_id)
    except ServiceError as exc:
        return layout(request, "Record", error_box(str(exc)), session, status=exc.status, active="/records")
    facts = "".join(f"<dt>{label}</dt><dd>{value}</dd>" for label, value in (
        ("Booking number", e(rec["booking_number"])), ("ORI", e(rec["ori"])), ("Station", e(rec["station"])),
        ("Officer", e(rec["operator"])), ("Captured", when(rec["captured_at"])),
        ("Received", when(rec["received_at"])), ("Record id", f'<code>{e(rec["record_id"])}</code>')))
    photos = "".join(
        f'<figure class="capture"><img src="/api/v1/records/{e(record_id)}/photos/{c["index"]}" '
        f'alt="{e(c["pose_words"])}"><figcaption><strong>{e(c["pose_words"])}</strong> {c["width"]}x{c["height"]}'
        f'<p class="quality">{e(c["quality_words"])}</p>'
        + (f'<p class="override">{e(c["override_words"])}</p>' if c["override_words"] else "")
        + "</figcaption></figure>" for c in rec["captures"])
    history = "".join(f'<li><span class="when">{when(h["at"])}</span> {e(h["text"])}</li>' for h in rec["history"])
    body = (f'<div class="record"><section><dl class="facts">{facts}</dl><h2>Delivery history</h2>'
            f'<ul class="history">{history}</ul></section><section><div class="captures">{photos}</div>'
            f'<h2>Search the gallery with this face</h2>{search_form(request, record_id)}</section></div>')
    return layout(request, f"Booking {rec['booking_number']}", body, session, active="/records")


# ------------------------------------------------------------------------------------------ search
@router.get("/search", response_class=HTMLResponse)
def search_page(request: Request) -> HTMLResponse:
    session = session_of(request)
    intro = ('<p class="hint">Candidates are leads for an examiner, not identifications. Every search is '
             'recorded with your name and reason.</p>')
    return layout(request, "Face search", intro + search_form(request), session, active="/search")


def candidate_grid(result: dict[str, Any]) -> str:
    if not result["candidates"]:
        return '<p class="empty">No candidates.</p>'
    tiles = "".join(
        f'<a class="candidate" href="/records/{e(c["record_id"])}"><img src="/records/{e(c["record_id"])}/face" '
        f'alt="Booking {e(c["booking_number"])}"><span class="rank">#{n}</span>'
        f'<span class="distance">distance {c["distance"]:.3f}</span><span class="booking">{e(c["booking_number"])}'
        f'</span><span class="meta">{e(c["ori"])} / {e(c["station"])}</span></a>'
        for n, c in enumerate(result["candidates"], 1))
    return f'<div class="grid">{tiles}</div>'


@router.post("/search", response_class=HTMLResponse)
async def search_post(request: Request) -> HTMLResponse:
    session = session_of(request)
    fields, files = await read_form(request)
    check_csrf(request, fields)
    record_id = fields.get("record_id") or None
    service = console_of(request).service
    try:
        top = int_param(fields.get("top"), "top", 10, 1, 100)
        result = await run_in_threadpool(lambda: service.search(
            actor=session.user_id, reason=fields.get("reason"), image=files.get("image"), record_id=record_id,
            top=top))
    except ServiceError as exc:
        return layout(request, "Face search", error_box(str(exc)) + search_form(request, record_id,
                                                                                 fields.get("reason", "")),
                      session, status=exc.status, active="/search")
    probe = f'record <a href="/records/{e(record_id)}">{e(record_id)}</a>' if record_id else "the uploaded photo"
    summary = (f'<p class="count">{len(result["candidates"])} candidate(s) for {probe}, nearest first; '
               f'{result["searched"]} faces searched. Reason recorded: <q>{e(" ".join(fields["reason"].split()))}</q>. '
               'Candidates are leads for an examiner, not identifications. A distance under about 0.6 '
               'usually means the same person.</p>')
    return layout(request, "Search results", summary + candidate_grid(result) + "<h2>Search again</h2>"
                  + search_form(request), session, active="/search")


@router.get("/records/{record_id}/face")
def face(record_id: str, request: Request) -> Response:
    session_of(request)
    return Response(console_of(request).service.face(record_id), media_type="image/jpeg")


# ------------------------------------------------------------------------------------------ fleet, audit
@router.get("/fleet", response_class=HTMLResponse)
def fleet_page(request: Request) -> HTMLResponse:
    session = session_of(request)
    rows = console_of(request).service.fleet()

    def queue(s: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v}" for k, v in s["queue"].items() if v is not None) or "unknown"

    lines = "".join(
        f'<tr class="{"flagged" if s["flagged"] else ""}"><td>{e(s["station"])}</td><td>{e(s["state"])}</td>'
        f'<td>{when(s["last_seen"])}</td><td>{e(queue(s))}</td><td>{e(disk(s))}</td><td>{e(s["software"])}</td>'
        f'<td>{e(", ".join(s["alarms"] + s["unhealthy"] + s["stale"]) or "none")}</td></tr>' for s in rows)
    table = ('<table class="fleet"><thead><tr><th>Station</th><th>State</th><th>Last seen</th><th>Queue</th>'
             f'<th>Disk</th><th>Software</th><th>Alarms</th></tr></thead><tbody>{lines}</tbody></table>'
             if rows else '<p class="empty">No station is registered or has reported yet.</p>')
    return layout(request, "Fleet", table, session, active="/fleet")


def disk(station: dict[str, Any]) -> str:
    """Free disk and the station's floor in words (see ``ConsoleService.fleet``)."""
    return str(station.get("disk_text") or "unknown")


@router.get("/audit", response_class=HTMLResponse)
def audit_page(request: Request) -> HTMLResponse:
    session = session_of(request)
    action = request.query_params.get("action") or None
    entries = console_of(request).service.audit(action=action, limit=200)
    lines = "".join(
        f'<tr><td>{when(a["at"])}</td><td>{e(a["actor"])}</td><td>{e(a["action"])}</td><td>{e(a["subject"])}</td>'
        f'<td>{e(a["details"].get("reason", ""))}</td></tr>' for a in entries)
    query = urlencode({"action": "console_search"})
    body = (f'<p><a href="/audit?{query}">Searches only</a> | <a href="/audit">Everything</a></p>'
            '<table class="audit"><thead><tr><th>When</th><th>Who</th><th>What</th><th>Subject</th><th>Reason</th>'
            f'</tr></thead><tbody>{lines}</tbody></table>')
    return layout(request, "Audit log", body, session, active="/audit")
