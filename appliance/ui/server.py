"""The officer UI's web server: the page, its JSON API (documented in `appliance/ui/API.md`) and the guards.

Built with FastAPI on uvicorn, bound to 127.0.0.1 by default: the kiosk browser on the device's
touchscreen is the normal client, and a desktop browser or the jail management system reach it only if
the station admin binds it wider (behind TLS). Handlers are plain functions run in FastAPI's thread pool:
the work they call (SQLite, the capture session, the models) is blocking and thread-safe.

Guards, in the order a request meets them:

1. **Host check** (`TrustedHostMiddleware`): only localhost names and the configured ones, so a web page
   cannot reach the station through DNS rebinding.
2. **CSRF**: every state-changing request (POST, PUT, PATCH, DELETE) that is not a JMS call with its
   bearer token must carry the header ``X-Booking-Station: 1`` (a cross-site form or image cannot set a
   custom header, and we grant no CORS, so a cross-site script cannot either) and, when the browser sends
   an ``Origin``, it must be this server's own. The session cookie is also ``SameSite=Strict``, so a
   cross-site request arrives without it anyway: two independent locks.
3. **Session** (`appliance.ui.auth`): an HttpOnly, SameSite=Strict cookie with a random token; officer
   actions refresh the idle timer, polls do not.
4. **Security headers** on every answer: a strict Content-Security-Policy (same-origin scripts and styles
   only, no inline code, no framing), ``nosniff``, no referrer, and ``Cache-Control: no-store`` so no
   photo or booking number is kept in the browser's disk cache.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from importlib import resources
from typing import Any

import anyio
import uvicorn
from fastapi import Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from starlette.middleware.base import BaseHTTPMiddleware, RequestResponseEndpoint
from starlette.middleware.trustedhost import TrustedHostMiddleware

from appliance import __version__
from appliance.capture.session import CaptureStation
from appliance.store import Store
from appliance.store.crypto import BlobCipher, load_key
from appliance.store.db import data_paths
from appliance.ui.accounts import AccountStore
from appliance.ui.auth import Authenticator, AuthError, WebSession
from appliance.ui.desk import BookingDesk, DeskError
from appliance.ui.drafts import DraftStore
from appliance.ui.health import station_health
from appliance.ui.preview import PreviewHub
from appliance.ui.settings import UISettings
from sync.protocol.sdnotify import Watchdog, notify_ready, notify_stopping

log = logging.getLogger(__name__)

COOKIE = "bs_session"
CSRF_HEADER = "x-booking-station"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
STATIC_DIR = resources.files("appliance.ui") / "static"
CSP = ("default-src 'self'; img-src 'self' blob:; style-src 'self'; script-src 'self'; connect-src 'self'; "
       "object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
_BEARER = re.compile(r"Bearer\s+(\S+)", re.IGNORECASE)


@dataclass
class Context:
    """What the handlers share: settings, the sign-in machinery, the desk, and how to open the store."""

    settings: UISettings
    auth: Authenticator
    desk: BookingDesk
    open_store: Callable[[], Store]


# --- request bodies ------------------------------------------------------------------------------------

class SignInBody(BaseModel):
    officer_id: str = Field(max_length=64)
    pin: str = Field(max_length=32)
    code: str = Field(max_length=16)


class OpenBody(BaseModel):
    booking_number: str = Field(max_length=64)
    agency_ori: str = Field(default="", max_length=16)


class PoseBody(BaseModel):
    pose: str = Field(max_length=32)
    description: str | None = Field(default=None, max_length=400)
    auto: bool | None = None


class AcceptBody(BaseModel):
    override_reason: str | None = Field(default=None, max_length=1000)


class DiscardBody(BaseModel):
    reason: str = Field(max_length=400)


# --- middleware ----------------------------------------------------------------------------------------

class GuardMiddleware(BaseHTTPMiddleware):
    """CSRF check on state-changing requests, and the security headers on every response."""

    async def dispatch(self, request: Request, call_next: RequestResponseEndpoint) -> Response:
        if request.method not in SAFE_METHODS and request.url.path.startswith("/api/"):
            bearer = _BEARER.fullmatch(request.headers.get("authorization", "").strip())
            if bearer is None:
                problem = csrf_problem(request)
                if problem is not None:
                    return _security_headers(JSONResponse({"error": problem, "code": "csrf"}, status_code=403))
        return _security_headers(await call_next(request))


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


def _security_headers(response: Response) -> Response:
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    response.headers.setdefault("X-Frame-Options", "DENY")
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers.setdefault("Permissions-Policy", "camera=(), microphone=(), geolocation=()")
    return response


# --- the app -------------------------------------------------------------------------------------------

def build_context(settings: UISettings, config: Any) -> Context:
    """Open the store (creating its key on first use), load the models and the station: everything that
    can fail at start-up fails here, before the server listens."""
    data_dir = settings.data_dir
    hub = PreviewHub()
    overrides: dict[str, Any] = {"camera_factory": hub.factory()}
    if settings.camera:
        overrides["camera_spec"] = settings.camera
    station = CaptureStation.from_config(config, data_dir=data_dir, station_id=settings.station_id,
                                         profile=settings.profile, profile_dir=settings.profile_dir, **overrides)
    open_store = station.store_opener  # the station's [store] settings (floor, queue limit) everywhere
    with open_store():
        pass  # creates the database and the key on a fresh data directory; refuses a wrong key
    cipher = BlobCipher(load_key(data_paths(data_dir)[1]))

    def open_accounts() -> AccountStore:
        return AccountStore.open_data_dir(data_dir, cipher)

    with open_accounts():
        pass  # creates accounts.db (0600) now rather than at the first sign-in
    auth = Authenticator(open_accounts, open_store, idle_seconds=settings.idle_seconds)
    desk = BookingDesk(station, open_store, DraftStore(data_dir, cipher), hub, auth.audit)
    return Context(settings, auth, desk, open_store)


def create_app(ctx: Context) -> FastAPI:
    """The FastAPI application over a built `Context`."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx.desk.restore_draft()
        ctx.auth.audit("system", "ui_start", {"version": __version__, "host": ctx.settings.host,
                                              "port": ctx.settings.port})
        yield
        ctx.desk.close()
        ctx.auth.audit("system", "ui_stop", {})

    app = FastAPI(title="Booking station officer UI", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None)
    app.add_middleware(GuardMiddleware)
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(ctx.settings.allowed_hosts))
    app.state.ctx = ctx

    @app.exception_handler(AuthError)
    async def auth_error(request: Request, exc: AuthError) -> JSONResponse:
        response = JSONResponse({"error": str(exc), "code": exc.code, **exc.extra}, status_code=exc.status)
        if exc.code in ("signed_out", "session_locked"):
            response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return response

    @app.exception_handler(DeskError)
    async def desk_error(request: Request, exc: DeskError) -> JSONResponse:
        return JSONResponse({"error": str(exc), "code": exc.code}, status_code=exc.status)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> Response:
        log.exception("unexpected error in %s %s", request.method, request.url.path)
        return _security_headers(JSONResponse(
            {"error": f"Something went wrong on the station ({type(exc).__name__}). Try again; if it keeps "
                      f"happening, call county IT.", "code": "internal"}, status_code=500))

    @app.exception_handler(RequestValidationError)
    async def bad_body(request: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:3]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body")
            parts.append(f"{where}: {err.get('msg', 'invalid')}" if where else str(err.get("msg", "invalid")))
        return JSONResponse({"error": "Invalid request: " + "; ".join(parts), "code": "invalid"}, status_code=422)

    def client_of(request: Request) -> str:
        return request.client.host if request.client else "unknown"

    def officer_action(request: Request) -> WebSession:
        return ctx.auth.session(request.cookies.get(COOKIE), action=True)

    def officer_poll(request: Request) -> WebSession:
        return ctx.auth.session(request.cookies.get(COOKIE), action=False)

    def jms_or_officer(request: Request) -> tuple[str, WebSession | None]:
        """("jms", None) for a valid JMS bearer token, ("officer", session) for a signed-in officer."""
        bearer = _BEARER.fullmatch(request.headers.get("authorization", "").strip())
        if bearer is not None:
            if ctx.settings.jms_token_matches(bearer.group(1)):
                return "jms", None
            ctx.auth.audit("jms", "api_auth_failed", {"client": client_of(request)})
            raise AuthError("Refused: the API token is wrong or JMS access is not configured.", "bad_token")
        return "officer", ctx.auth.session(request.cookies.get(COOKIE), action=request.method not in SAFE_METHODS)

    # --- page ----------------------------------------------------------------------------------------

    @app.get("/", include_in_schema=False)
    def index() -> FileResponse:
        return FileResponse(str(STATIC_DIR / "index.html"), media_type="text/html")

    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")

    @app.get("/api/v1/health")
    def health() -> dict[str, Any]:
        return {"ok": True, "version": __version__, "station_id": ctx.settings.station_id}

    # --- sign-in -------------------------------------------------------------------------------------

    @app.post("/api/v1/session")
    def sign_in(body: SignInBody, request: Request, response: Response) -> dict[str, Any]:
        token, session = ctx.auth.sign_in(body.officer_id, body.pin, body.code, client_of(request))
        response.set_cookie(COOKIE, token, httponly=True, samesite="strict", path="/",
                            secure=ctx.settings.cookie_secure or request.url.scheme == "https")
        return _me(session)

    @app.get("/api/v1/session")
    def whoami(session: WebSession = Depends(officer_poll)) -> dict[str, Any]:
        return _me(session)

    @app.delete("/api/v1/session")
    def sign_out(request: Request, response: Response) -> dict[str, Any]:
        ctx.auth.sign_out(request.cookies.get(COOKIE))
        response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
        return {"ok": True}

    def _me(session: WebSession) -> dict[str, Any]:
        return {"officer_id": session.officer_id, "name": session.name, "station_id": ctx.settings.station_id,
                "default_agency": ctx.settings.agency_ori, "idle_seconds": ctx.auth.idle_seconds}

    # --- the booking ---------------------------------------------------------------------------------

    @app.post("/api/v1/bookings", status_code=201)
    def open_booking(body: OpenBody, request: Request) -> dict[str, Any]:
        who, session = jms_or_officer(request)
        agency = body.agency_ori.upper() or ctx.settings.agency_ori
        if not agency:
            raise DeskError("Enter the agency ORI (9 characters, e.g. VA0290000).", "invalid", 422)
        if who == "jms":
            req = ctx.desk.request(agency, body.booking_number, client_of(request))
            ctx.auth.audit("jms", "booking_request", {"booking_number": req.booking_number,
                                                      "agency_ori": req.agency_ori})
            return {"state": "requested", "booking_number": req.booking_number, "agency_ori": req.agency_ori}
        assert session is not None
        ctx.desk.open(session.officer_id, agency, body.booking_number)
        return ctx.desk.state()

    @app.get("/api/v1/bookings")
    def booking_lookup(request: Request, booking_number: str, agency_ori: str = "") -> dict[str, Any]:
        jms_or_officer(request)
        agency = agency_ori.strip().upper() or ctx.settings.agency_ori
        return {"booking_number": booking_number, "agency_ori": agency,
                **ctx.desk.booking_state(agency, booking_number)}

    @app.get("/api/v1/booking")
    def booking_state(session: WebSession = Depends(officer_poll)) -> dict[str, Any]:
        return ctx.desk.state()

    @app.post("/api/v1/booking/pose")
    def select_pose(body: PoseBody, session: WebSession = Depends(officer_action)) -> dict[str, Any]:
        ctx.desk.select_pose(body.pose, body.description, body.auto)
        return ctx.desk.state()

    @app.post("/api/v1/booking/capture")
    def capture(session: WebSession = Depends(officer_action)) -> dict[str, Any]:
        ctx.desk.capture()
        return ctx.desk.state()

    @app.post("/api/v1/booking/retake")
    def retake(session: WebSession = Depends(officer_action)) -> dict[str, Any]:
        ctx.desk.retake()
        return ctx.desk.state()

    @app.post("/api/v1/booking/accept")
    def accept(body: AcceptBody, session: WebSession = Depends(officer_action)) -> dict[str, Any]:
        ctx.desk.accept(session.officer_id, body.override_reason)
        return ctx.desk.state()

    @app.delete("/api/v1/booking/smt/{index}")
    def remove_smt(index: int, session: WebSession = Depends(officer_action)) -> dict[str, Any]:
        ctx.desk.remove_smt(index)
        return ctx.desk.state()

    @app.post("/api/v1/booking/camera")
    def reconnect(session: WebSession = Depends(officer_action)) -> dict[str, Any]:
        ctx.desk.reconnect_camera()
        return ctx.desk.state()

    @app.post("/api/v1/booking/save")
    def save(session: WebSession = Depends(officer_action)) -> dict[str, Any]:
        record_id = ctx.desk.save(session.officer_id)
        return {"record_id": record_id, **ctx.desk.state()}

    @app.post("/api/v1/booking/discard")
    def discard(body: DiscardBody, session: WebSession = Depends(officer_action)) -> dict[str, Any]:
        ctx.desk.discard(session.officer_id, body.reason)
        return ctx.desk.state()

    @app.get("/api/v1/booking/frame.jpg")
    def frame(session: WebSession = Depends(officer_poll)) -> Response:
        ctx.desk.require()
        got = ctx.desk.hub.jpeg()
        if got is None:
            return Response(status_code=204)
        jpeg, sequence = got
        return Response(jpeg, media_type="image/jpeg", headers={"X-Frame-Sequence": str(sequence)})

    @app.get("/api/v1/booking/review.jpg")
    def review_image(session: WebSession = Depends(officer_poll)) -> Response:
        return Response(ctx.desk.review_jpeg(), media_type="image/jpeg")

    @app.get("/api/v1/booking/accepted/{key}.jpg")
    def accepted_image(key: str, session: WebSession = Depends(officer_poll)) -> Response:
        return Response(ctx.desk.accepted_jpeg(key), media_type="image/jpeg")

    # --- the queue -----------------------------------------------------------------------------------

    @app.get("/api/v1/queue")
    def queue(session: WebSession = Depends(officer_poll)) -> dict[str, Any]:
        with ctx.open_store() as store:
            return station_health(store, ctx.settings.data_dir, ctx.settings.health)

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
