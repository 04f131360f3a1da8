"""The HTTPS front of the enrolment service: standard library ``http.server`` and ``ssl``, nothing else.

The enrolment server answers a handful of requests per fleet roll-out, so a framework would add
dependencies (and their CVEs) to a process that holds the county CA key, for nothing. What the
standard library does not do by itself is done here:

* The TLS handshake runs in the request's own thread with a timeout, not in the accept loop, so a
  client that connects and stalls cannot block everyone else.
* Bodies are capped (:data:`~sync.protocol.enroll.MAX_REQUEST_BYTES`) and must be declared with
  ``Content-Length``; every error is a JSON object with a code and a sentence.
* TLS 1.2 is the floor (CJIS); the certificate is whatever county IT gives ``--tls-cert`` (e.g. one from
  ``booking-gallery ca server-cert``, which devices then trust through the county CA file).
* ``serve`` tells systemd when it is ready and feeds the watchdog from the accept loop, so a wedged
  server is restarted.
"""

from __future__ import annotations

import json
import logging
import signal
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from sync.county.enroll.service import EnrollmentService
from sync.protocol.enroll import ENROLL_PATH, ERROR_STATUS, MAX_REQUEST_BYTES, ROTATE_PATH
from sync.protocol.sdnotify import Watchdog, notify_ready, notify_stopping

log = logging.getLogger("booking.enroll")

REQUEST_TIMEOUT = 15.0  # seconds for the handshake and for each read
DRAIN_LIMIT = 1024 * 1024  # larger bodies are refused unread (the client may then see a reset)


class ServerSetupError(Exception):
    """The server cannot start (bad certificate or key, address in use); the message says which."""


def server_tls_context(cert_file: Path | str, key_file: Path | str) -> ssl.SSLContext:
    """A server-side TLS context: TLS 1.2 or newer, the given certificate chain and key."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    # OpenSSL's FileNotFoundError carries no file name: name the missing one (and its option) first.
    for option, path in (("--tls-cert", cert_file), ("--tls-key", key_file)):
        if not Path(path).is_file():
            raise ServerSetupError(f"the TLS file {path} ({option}) does not exist")
    try:
        context.load_cert_chain(str(cert_file), str(key_file))
    except FileNotFoundError as exc:
        raise ServerSetupError(f"TLS certificate or key not found: {exc.filename}") from exc
    except PermissionError as exc:
        raise ServerSetupError(f"cannot read the TLS certificate or key: {exc.filename} ({exc.strerror})") from exc
    except ssl.SSLError as exc:
        raise ServerSetupError(f"the TLS certificate {cert_file} and key {key_file} are unusable "
                               f"(wrong format, or they do not belong together): {exc}") from exc
    return context


class EnrollmentHandler(BaseHTTPRequestHandler):
    """``POST /enroll``, ``POST /rotate`` and ``GET /healthz``; everything else is a JSON 404/405."""

    server: EnrollmentHTTPServer
    server_version = "booking-enroll/1"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = REQUEST_TIMEOUT

    def _send_json(self, status: int, body: dict[str, Any]) -> None:
        data = (json.dumps(body) + "\n").encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)
        self.close_connection = True

    def _error(self, code: str, message: str) -> None:
        self._send_json(ERROR_STATUS[code], {"error": code, "message": message})

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        # Read the declared body before answering, even to refuse it: closing a TLS connection with
        # unread data makes the kernel send a reset that can destroy our answer in flight.
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            self._error("bad_request", "the request needs a Content-Length header")
            return
        if length < 0 or length > DRAIN_LIMIT:
            self._error("too_large", f"the request body must be at most {MAX_REQUEST_BYTES} bytes")
            return
        body = self.rfile.read(length)
        if len(body) != length:
            self._error("bad_request", "the request body ended early")
            return
        if self.path not in (ENROLL_PATH, ROTATE_PATH):
            self._error("not_found", f"no such endpoint {self.path!r}; devices enrol with POST {ENROLL_PATH}")
            return
        content_type = self.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if content_type != "application/json":
            self._error("unsupported_media_type", "the request must be application/json")
            return
        if length > MAX_REQUEST_BYTES:
            self._error("too_large", f"the request body must be at most {MAX_REQUEST_BYTES} bytes")
            return
        if self.path == ROTATE_PATH:
            status, response = self.server.service.handle_rotate(body, peer=self.client_address[0])
        else:
            status, response = self.server.service.handle(body, peer=self.client_address[0])
        self._send_json(status, response)

    def do_GET(self) -> None:  # noqa: N802
        if self.path == "/healthz":
            self._send_json(200, {"status": "ok", "county": self.server.service.ca.county})
        elif self.path in (ENROLL_PATH, ROTATE_PATH):
            self._error("method_not_allowed", f"use POST {self.path}")
        else:
            self._error("not_found", f"no such endpoint {self.path!r}")

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (http.server's signature)
        log.info("%s %s", self.client_address[0], format % args)


class EnrollmentHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that does the TLS handshake per connection, off the accept loop."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], service: EnrollmentService, tls: ssl.SSLContext, *,
                 watchdog: Watchdog | None = None) -> None:
        self.service = service
        self.tls = tls
        self.watchdog = watchdog or Watchdog(None)
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        super().__init__(address, EnrollmentHandler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(REQUEST_TIMEOUT)
        try:
            conn = self.tls.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log.info("TLS handshake with %s failed: %s", client_address[0], exc)
            return
        try:
            self.RequestHandlerClass(conn, client_address, self)
        finally:
            conn.close()

    def service_actions(self) -> None:
        self.watchdog.ping_if_due()

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        host = f"[{host}]" if ":" in str(host) else host
        return f"https://{host}:{port}{ENROLL_PATH}"


def make_server(service: EnrollmentService, host: str, port: int, tls_cert: Path | str, tls_key: Path | str, *,
                watchdog: Watchdog | None = None) -> EnrollmentHTTPServer:
    """Bind the server (port 0 picks a free port; see ``server.server_address``). Does not serve yet."""
    context = server_tls_context(tls_cert, tls_key)
    try:
        return EnrollmentHTTPServer((host, port), service, context, watchdog=watchdog)
    except OSError as exc:
        raise ServerSetupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from exc


def serve(server: EnrollmentHTTPServer) -> None:
    """Serve until SIGTERM or SIGINT, telling systemd when ready and feeding its watchdog."""

    def stop(signum: int, frame: object) -> None:
        log.info("stopping on signal %d", signum)
        notify_stopping()
        # shutdown() waits for serve_forever() to return, so it must not run in serve_forever's thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    host, port = server.server_address[:2]
    log.info("enrolment server for county %s listening on https://%s:%s%s", server.service.ca.county, host, port,
             ENROLL_PATH)
    notify_ready(f"enrolling stations of county {server.service.ca.county} on port {port}")
    try:
        server.serve_forever(poll_interval=0.5)
    finally:
        server.server_close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
