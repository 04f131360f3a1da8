"""Every route of the officer UI answers 413 for a body over the limit, before reading it: the real server
(`serve` in its own process), spoken to over a raw socket so the test controls exactly what is sent."""

from __future__ import annotations

import json
import socket

from appliance.ui.body_limit import MAX_BODY_BYTES

ROUTES = [("POST", "/api/v1/session"), ("POST", "/api/v1/bookings"), ("POST", "/api/v1/booking/save"),
          ("DELETE", "/api/v1/session"), ("PUT", "/api/v1/booking/pose"), ("GET", "/"), ("GET", "/api/v1/health"),
          ("GET", "/static/app.js"), ("POST", "/no/such/route")]


def _exchange(port: int, head: str, body_parts: list[bytes]) -> tuple[int, dict]:
    """Send ``head`` and as much of the body as the server takes; return the status and JSON answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(head.encode("latin-1"))
        try:
            for part in body_parts:
                sock.sendall(part)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed without reading the rest: that is the point
        data = b""
        while b"\r\n\r\n" not in data or len(data) < data.index(b"\r\n\r\n") + 4 + _length(data):
            chunk = sock.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    body = data.split(b"\r\n\r\n", 1)[1]
    return status, json.loads(body) if body.startswith(b"{") else {}


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return 0


def _head(method: str, path: str, port: int, extra: str) -> str:
    return (f"{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nX-Booking-Station: 1\r\n"
            f"Content-Type: application/json\r\n{extra}\r\n")


def test_every_route_refuses_a_declared_50_mb_body_before_it_is_sent(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server()
    for method, path in ROUTES:
        # Only the head goes out: a server that waited for the 50 MB would never answer (the socket times out).
        status, body = _exchange(server.port, _head(method, path, server.port, "Content-Length: 50000000\r\n"), [])
        assert status == 413, (method, path)
        assert body["code"] == "too_large" and str(MAX_BODY_BYTES) in body["error"]


def test_a_streamed_body_is_cut_off_at_the_limit_and_small_ones_pass(start_server) -> None:  # type: ignore[no-untyped-def]
    server = start_server()
    chunk = b"x" * 8192
    parts = [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for _ in range(4 * MAX_BODY_BYTES // len(chunk))]
    head = _head("POST", "/api/v1/session", server.port, "Transfer-Encoding: chunked\r\n")
    status, body = _exchange(server.port, head, [*parts, b"0\r\n\r\n"])
    assert status == 413 and body["code"] == "too_large"

    payload = json.dumps({"officer_id": "nobody", "pin": "0" * 6, "code": "x" * (MAX_BODY_BYTES // 2)}).encode()
    head = _head("POST", "/api/v1/session", server.port, f"Content-Length: {len(payload)}\r\n")
    status, body = _exchange(server.port, head, [payload])
    assert status not in (413, 500)  # the sign-in route judged it (a refusal of the credentials or the body)
    assert body.get("code") != "too_large"
    status, _ = _exchange(server.port, _head("GET", "/api/v1/health", server.port, ""), [])
    assert status == 200  # the server is still serving after the cut-off request
    status, _ = _exchange(server.port, _head("POST", "/api/v1/session", server.port, "Content-Length: 12x\r\n"), [])
    assert status == 400


def test_a_lowered_limit_from_the_ui_section_refuses_at_the_new_size(start_server) -> None:  # type: ignore[no-untyped-def]
    """``[ui] max_body_bytes`` is the limit the server applies: 413 just above it, the route's own answer at it."""
    limit = 8 * 1024
    assert limit < MAX_BODY_BYTES
    server = start_server(config=f"[ui]\nmax_body_bytes = {limit}\n")
    for method, path in ROUTES:
        status, body = _exchange(server.port, _head(method, path, server.port, f"Content-Length: {limit + 1}\r\n"),
                                 [])
        assert status == 413, (method, path)
        assert body["code"] == "too_large" and f"larger than {limit} bytes" in body["error"]
    payload = json.dumps({"officer_id": "nobody", "pin": "0" * 6, "code": ""}).encode()
    payload = payload[:-2] + b"x" * (limit - len(payload)) + payload[-2:]  # exactly at the limit
    assert len(payload) == limit
    status, body = _exchange(server.port, _head("POST", "/api/v1/session", server.port,
                                                f"Content-Length: {limit}\r\n"), [payload])
    assert status not in (413, 500) and body.get("code") != "too_large"
    chunk = b"x" * 1024
    parts = [f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n" for _ in range(limit // len(chunk) + 2)]
    status, body = _exchange(server.port, _head("POST", "/api/v1/session", server.port,
                                                "Transfer-Encoding: chunked\r\n"), [*parts, b"0\r\n\r\n"])
    assert status == 413 and body["code"] == "too_large"
