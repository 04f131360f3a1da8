"""sd_notify against a real unix datagram socket, as systemd provides one in $NOTIFY_SOCKET."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.protocol.sdnotify import (
    Watchdog,
    notify,
    notify_ready,
    notify_status,
    notify_stopping,
    notify_watchdog,
    watchdog_interval,
)


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, dict[str, str]]]:
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2)
    try:
        yield sock, {"NOTIFY_SOCKET": str(path)}
    finally:
        sock.close()


def _received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_status_watchdog_and_stopping_arrive_as_datagrams(notify_socket) -> None:
    sock, env = notify_socket
    assert notify_ready("listening on 8443", environ=env)
    assert _received(sock) == ["READY=1", "STATUS=listening on 8443"]
    assert notify_watchdog(environ=env)
    assert _received(sock) == ["WATCHDOG=1"]
    assert notify_status("queue 3\nlast sync 2 s ago", environ=env)
    assert _received(sock) == ["STATUS=queue 3 last sync 2 s ago"]  # one line: a newline would start a new key
    assert notify_stopping(environ=env)
    assert _received(sock) == ["STOPPING=1"]


def test_abstract_namespace_socket(tmp_path: Path) -> None:
    name = f"booking-sdnotify-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        sock.settimeout(2)
        assert notify("READY=1", environ={"NOTIFY_SOCKET": "@" + name})
        assert sock.recv(100) == b"READY=1"


def test_without_systemd_every_call_is_a_quiet_no_op(tmp_path: Path) -> None:
    assert notify_ready(environ={}) is False
    assert notify("READY=1", environ={"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False  # no one listening
    assert notify("READY=1", environ={"NOTIFY_SOCKET": "vsock:2:1"}) is False


def test_watchdog_interval_is_for_this_process_only() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "junk"}) is None


def test_watchdog_pings_at_half_the_interval(notify_socket) -> None:
    sock, env = notify_socket
    now = [100.0]
    dog = Watchdog.from_environment({**env, "WATCHDOG_USEC": "10000000"})
    dog.clock = lambda: now[0]
    assert dog.enabled and dog.interval == 10.0
    assert dog.ping_if_due()  # first call pings at once
    assert _received(sock) == ["WATCHDOG=1"]
    now[0] += 4.9
    assert not dog.ping_if_due()
    now[0] += 0.2
    assert dog.ping_if_due()
    assert _received(sock) == ["WATCHDOG=1"]
    assert not Watchdog.from_environment(env).ping_if_due()  # no WATCHDOG_USEC: never pings
