"""systemd's service notification protocol (``sd_notify``), with the standard library only.

The units in ``systemd/`` run every service as ``Type=notify`` with ``WatchdogSec=``: systemd starts
dependants only after the service says ``READY=1``, and restarts it when the ``WATCHDOG=1`` pings
stop. A wedged sync agent (a deadlocked thread, a hung TLS read) is then restarted by systemd instead
of silently leaving records undelivered. The protocol is one datagram of ``KEY=VALUE`` lines to the
unix socket named by ``$NOTIFY_SOCKET``; a dependency (``sdnotify``, ``systemd-python``) would add
nothing but a package to keep up to date, and ``systemd-python`` needs libsystemd headers to build.

Outside systemd (a developer's shell, the tests, a container) ``$NOTIFY_SOCKET`` is unset and every
call is a no-op that returns False, so services call these unconditionally.

It lives in :mod:`sync.protocol` because services on both sides use it (the station's UI and sync agent,
the county's gallery worker and enrolment server), and only ``sync.protocol`` may be imported by both.

Typical use::

    watchdog = Watchdog.from_environment()
    notify_ready("listening on 0.0.0.0:8443")
    while running:
        do_some_work()
        watchdog.ping_if_due()      # cheap; sends WATCHDOG=1 at half the configured interval
    notify_stopping()
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

NOTIFY_SOCKET = "NOTIFY_SOCKET"


def _socket_address(name: str) -> str | bytes:
    """``$NOTIFY_SOCKET`` as a socket address: ``@name`` is Linux's abstract namespace (leading NUL)."""
    if name.startswith("@"):
        return b"\0" + name[1:].encode()
    return name


def notify(*assignments: str, environ: Mapping[str, str] | None = None) -> bool:
    """Send ``KEY=VALUE`` lines to systemd in one datagram. True if sent, False when not under systemd.

    A send failure (the socket vanished, systemd restarting) is reported as False rather than raised:
    a service must never die because its supervisor could not be told something.
    """
    env = os.environ if environ is None else environ
    name = env.get(NOTIFY_SOCKET, "")
    if not name or not assignments:
        return False
    if not (name.startswith("/") or name.startswith("@")):
        return False  # vsock and other transports are not used by the units we ship
    message = "\n".join(assignments).encode()
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(_socket_address(name))
            sock.sendall(message)
    except OSError:
        return False
    return True


def notify_ready(status: str | None = None, *, environ: Mapping[str, str] | None = None) -> bool:
    """Tell systemd start-up is complete (``READY=1``), optionally with a one-line status."""
    lines = ["READY=1"]
    if status:
        lines.append(f"STATUS={_one_line(status)}")
    return notify(*lines, environ=environ)


def notify_status(status: str, *, environ: Mapping[str, str] | None = None) -> bool:
    """Set the line ``systemctl status`` shows (e.g. "queue 3, last sync 12 s ago")."""
    return notify(f"STATUS={_one_line(status)}", environ=environ)


def notify_watchdog(*, environ: Mapping[str, str] | None = None) -> bool:
    """One watchdog ping (``WATCHDOG=1``)."""
    return notify("WATCHDOG=1", environ=environ)


def notify_stopping(status: str | None = None, *, environ: Mapping[str, str] | None = None) -> bool:
    """Tell systemd a clean shutdown has begun, so a slow drain is not mistaken for a hang."""
    lines = ["STOPPING=1"]
    if status:
        lines.append(f"STATUS={_one_line(status)}")
    return notify(*lines, environ=environ)


def watchdog_interval(environ: Mapping[str, str] | None = None) -> float | None:
    """The watchdog timeout systemd set for this process, in seconds, or None when there is none.

    ``$WATCHDOG_PID``, when set, names the process the watchdog is meant for: a child that inherited
    the environment must not ping on its parent's behalf.
    """
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    pid = env.get("WATCHDOG_PID", "")
    if not usec:
        return None
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        return None
    return value / 1_000_000 if value > 0 else None


def _one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass
class Watchdog:
    """Sends ``WATCHDOG=1`` at half the interval systemd asked for, however often it is called.

    Call :meth:`ping_if_due` from the loop that proves the service is alive (the sync agent's outbox
    loop, the HTTP server's poll loop), never from a helper thread that would keep pinging while the
    real work is stuck.
    """

    interval: float | None
    environ: Mapping[str, str] | None = None
    clock: Callable[[], float] = time.monotonic
    _last: float | None = field(default=None, init=False, repr=False)

    @classmethod
    def from_environment(cls, environ: Mapping[str, str] | None = None) -> Watchdog:
        return cls(watchdog_interval(environ), environ)

    @property
    def enabled(self) -> bool:
        return self.interval is not None

    def ping_if_due(self) -> bool:
        """Ping when half the interval has passed since the last ping. True if a ping was sent."""
        if self.interval is None:
            return False
        now = self.clock()
        if self._last is not None and now - self._last < self.interval / 2:
            return False
        self._last = now
        return notify_watchdog(environ=self.environ)
