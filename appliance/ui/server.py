"""The officer UI's web server: the page, its JSON API (documented in `appliance/ui/API.md`) and the guards.

Built with FastAPI on uvicorn, bound to 127.0.0.1 by default: the kiosk browser on the device's
touchscreen is the normal client, and a desktop browser or the jail management system reach it only if
the station admin binds it wider (behind TLS). Handlers are plain functions run in FastAPI's thread pool:
the work they call (SQLite, the capture session, the models) is blocking and thread-safe.

The app is assembled here from the parts: `context` (what the handlers share, built at start-up),
`guards` (CSRF, security headers, the session dependencies), `errors` (how errors are answered) and
`routes` (one `APIRouter` per part of the page).

Guards, in the order a request meets them:

0. **Body limit** (`body_limit`): any body over ``[ui] max_body_bytes`` (64 KiB) is answered 413 before it
   is read.
1. **Host check** (`TrustedHostMiddleware`): only localhost names and the configured ones, so a web page
   cannot reach the station through DNS rebinding.
2. **CSRF**: every state-changing request (POST, PUT, PATCH, DELETE) that is not a JMS call with its
   bearer token must carry the header ``X-Booking-Station: 1`` (a cross-site form or image cannot set a
   custom header, and we grant no CORS, so a cross-site script cannot either) and, when the browser sends
   an ``Origin``, it must be this server's own. The session cookie is also ``SameSite=Strict``, so a
   cross-site request arrives without it anyway: two independent locks.
3. **Session** (`appliance.ui.auth`; each route declares it): an HttpOnly, SameSite=Strict cookie with
   a random token; officer actions refresh the idle timer, polls do not.
4. **Security headers** on every answer: a strict Content-Security-Policy (same-origin scripts and styles
   only, no inline code, no framing), ``nosniff``, no referrer, and ``Cache-Control: no-store`` so no
   photo or booking number is kept in the browser's disk cache.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import uvicorn
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from starlette.middleware.trustedhost import TrustedHostMiddleware

from appliance import __version__
from appliance.ui.body_limit import BodyLimitMiddleware
from appliance.ui.context import Context, build_context
from appliance.ui.errors import ERROR_HANDLERS
from appliance.ui.guards import GuardMiddleware
from appliance.ui.routes import ROUTERS, page
from sync.protocol.sdnotify import Watchdog, notify_ready, notify_stopping

__all__ = ["Context", "NotifyingServer", "build_context", "create_app", "run"]


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Restore the open booking's draft before serving; close the desk (and the camera) after."""
    ctx: Context = app.state.ctx
    ctx.desk.restore_draft()
    ctx.auth.audit("system", "ui_start", {"version": __version__, "host": ctx.settings.host,
                                          "port": ctx.settings.port})
    yield
    ctx.desk.close()
    ctx.auth.audit("system", "ui_stop", {})


def create_app(ctx: Context) -> FastAPI:
    """The FastAPI application over a built `Context`."""
    app = FastAPI(title="Booking station officer UI", version=__version__, lifespan=_lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(GuardMiddleware)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(ctx.settings.allowed_hosts))
    # Added last, so it runs first: before anything reads a body.
    app.add_middleware(BodyLimitMiddleware, max_bytes=ctx.settings.max_body_bytes)
    app.state.ctx = ctx
    for exc_class, handler in ERROR_HANDLERS.items():
        app.add_exception_handler(exc_class, handler)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=str(page.STATIC_DIR)), name="static")
    return app


class NotifyingServer(uvicorn.Server):
    """uvicorn plus systemd's notify protocol (the unit is ``Type=notify`` with ``WatchdogSec=``):
    ``READY=1`` once the socket listens (after the models loaded and the draft was restored), and
    ``WATCHDOG=1`` pings only while the event loop *and* the handler thread pool both answer, so a
    wedged server is restarted by systemd instead of leaving the desk with a frozen page."""

    _watchdog_task: asyncio.Task | None = None

    async def startup(self, sockets: list | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.should_exit:
            return
        notify_ready(f"officer UI on {self.config.host}:{self.config.port}")
        self._watchdog_task = asyncio.create_task(self._watchdog())

    async def shutdown(self, sockets: list | None = None) -> None:
        notify_stopping("officer UI stopping")
        if self._watchdog_task is not None:
            self._watchdog_task.cancel()
        await super().shutdown(sockets=sockets)

    async def _watchdog(self) -> None:
        dog = Watchdog.from_environment()
        if not dog.enabled:
            return
        while not self.should_exit:
            await anyio.to_thread.run_sync(lambda: None)  # the pool that runs every handler is alive
            dog.ping_if_due()
            await asyncio.sleep(1.0)


def run(ctx: Context) -> None:
    """Serve until SIGTERM/SIGINT (uvicorn's handlers; the lifespan then stops the camera)."""
    config = uvicorn.Config(create_app(ctx), host=ctx.settings.host, port=ctx.settings.port, log_level="warning",
                            access_log=False, server_header=False)
    NotifyingServer(config).run()
