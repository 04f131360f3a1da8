"""The console's web server: FastAPI on plain uvicorn, the pages and ``/api/v1``, the guards and the errors.

Bound to 127.0.0.1 by default: county staff reach it through the county's TLS reverse proxy, which is
where a wider bind belongs. Errors answer in words: JSON ``{error, code}`` under ``/api/``, a page (or
the sign-in page, for a missing or locked session) elsewhere.
"""

from __future__ import annotations

from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles

from sync import __version__
from sync.county.console import api, pages
from sync.county.console.auth import Authenticator, AuthError
from sync.county.console.http import BadForm, BodyTooLarge, Console, GuardMiddleware
from sync.county.console.service import ConsoleService, ServiceError

STATIC_DIR = Path(__file__).resolve().parent / "static"


def _is_api(request: Request) -> bool:
    return request.url.path.startswith("/api/")


async def _auth_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, AuthError)
    if _is_api(request):
        return JSONResponse({"error": str(exc), "code": exc.code}, status_code=exc.status)
    return RedirectResponse("/signin?locked=1" if exc.code == "session_locked" else "/signin", status_code=303)


async def _service_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ServiceError)
    if _is_api(request):
        return JSONResponse({"error": str(exc), "code": "bad_request" if exc.status == 400 else "refused"},
                            status_code=exc.status)
    return pages.layout(request, "Problem", pages.error_box(str(exc)), status=exc.status)


async def _too_large(request: Request, exc: Exception) -> Response:
    limit = request.app.state.console.max_body / 1e6
    return JSONResponse({"error": f"The request is larger than this console accepts ({limit:g} MB).",
                         "code": "too_large"}, status_code=413)


async def _bad_form(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": f"The request cannot be read: {exc}", "code": "bad_request"}, status_code=400)


def create_app(console: Console) -> FastAPI:
    app = FastAPI(title="County gallery console", version=__version__, docs_url=None, redoc_url=None,
                  openapi_url=None)
    app.state.console = console
    app.add_middleware(GuardMiddleware)
    app.add_exception_handler(AuthError, _auth_error)
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(BodyTooLarge, _too_large)
    app.add_exception_handler(BadForm, _bad_form)
    app.include_router(api.router)
    app.include_router(pages.router)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    return app


def build_console(service: ConsoleService, accounts: Path, issuer: str, *, idle_seconds: float,
                  max_body: int) -> Console:
    auth = Authenticator(accounts, issuer, service.db_url, idle_seconds=idle_seconds)
    return Console(service=service, auth=auth, max_body=max_body, idle_seconds=idle_seconds)


def run(console: Console, host: str, port: int) -> None:
    """Serve until SIGTERM/SIGINT."""
    console.auth.audit("system", "console_start", "console", {"version": __version__, "host": host, "port": port})
    config = uvicorn.Config(create_app(console), host=host, port=port, log_level="warning", access_log=False,
                            server_header=False)
    try:
        uvicorn.Server(config).run()
    finally:
        console.service.close()
        console.auth.audit("system", "console_stop", "console", {})
