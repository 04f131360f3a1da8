"""Log lines at a bounded rate per key: a flood of one kind of event writes one line per interval, with the
number of events it stands for, instead of one line each (10,000 malformed payloads from one certificate
once made a 2.2 MB log)."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable


class RateLimitedLog:
    """`allow(key)` says whether to write a line now, and how many lines for that key were held back since."""

    def __init__(self, interval: float = 60.0, *, max_keys: int = 4096,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.interval = interval
        self.max_keys = max_keys
        self.clock = clock
        self._last: dict[Hashable, float] = {}
        self._held: dict[Hashable, int] = {}

    def allow(self, key: Hashable) -> int | None:
        """None: stay quiet (counted). Otherwise log now; the value is how many were held back before this."""
        now = self.clock()
        last = self._last.get(key)
        if last is not None and now - last < self.interval:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        if last is None and len(self._last) >= self.max_keys:  # many keys (a spray of station ids): forget old ones
            self._last.clear()
            self._held.clear()
        self._last[key] = now
        return self._held.pop(key, 0)
