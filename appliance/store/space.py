"""Free-disk checks, and telling a full disk apart from every other write error.

A booking station must never make room by dropping a record the county has not confirmed, so the only
answer to a full disk is to refuse new bookings, loudly, while everything already stored stays safe.
Two lines of defence:

* `ensure_space` before a save: refuse if the save would take free space below a configured floor.
  The floor leaves headroom for what must still be written when space is short (outbox updates, audit
  entries, WAL checkpoints, the OS), so the station degrades to "no new bookings" instead of failing
  in the middle of delivering the queue.
* `is_disk_full` after a failed write: SQLite's "database or disk is full" and the OS's ENOSPC/EDQUOT
  are turned into `DiskFullError` (after the transaction was rolled back) so the officer sees the same
  clear message whichever line caught it.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from pathlib import Path

from appliance.store.errors import DiskFullError
from sync.sizes import human_bytes

SQLITE_FULL = 13
_SAFE = ("Nothing was deleted: every booking stored before is intact and still queued for delivery. "
         "Free disk space (let the queue deliver, or call county IT) and save again.")


def free_bytes(path: Path | str) -> int:
    """Bytes available to this process on the filesystem holding ``path``.

    Uses ``f_bavail`` (what an unprivileged user may use), not ``f_bfree``: the blocks reserved for
    root are the system's own emergency room, not the store's.
    """
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


WRITE_OVERHEAD_BYTES = 64 * 1024
"""Rows, quality reports, the outbox row and the audit entries a save writes beside its images."""


def booking_write_bytes(image_bytes: int, template_values: int = 0) -> int:
    """The disk a save of a booking with ``image_bytes`` of JPEG and ``template_values`` template floats
    may take: everything twice (written to the WAL, then checkpointed into the database before the WAL is
    truncated) plus `WRITE_OVERHEAD_BYTES`. The one rule both the save and the early check before a booking
    (`appliance.capture.space`) use."""
    return 2 * (int(image_bytes) + 8 * int(template_values)) + WRITE_OVERHEAD_BYTES


def ensure_space(path: Path | str, floor_bytes: int, needed_bytes: int = 0, *,
                 what: str = "Booking NOT saved") -> int:
    """Return the free bytes at ``path``, or raise `DiskFullError` if writing ``needed_bytes`` more
    would leave less than ``floor_bytes`` free.

    The message starts with ``what`` (what was refused), then says how much is free, what the floor is,
    and that nothing was deleted. The capture path checks before a booking starts and before each photo
    is processed, so a full disk refuses before the officer's work, not at the save after it.
    """
    free = free_bytes(path)
    if free - needed_bytes < floor_bytes:
        need = f" (a booking needs about {human_bytes(needed_bytes)})" if needed_bytes else ""
        raise DiskFullError(
            f"{what}: the disk is too full. {human_bytes(free)} free on {path}{need}, and at "
            f"least {human_bytes(floor_bytes)} must stay free for the records already queued. {_SAFE}",
            path=str(path), free_bytes=free, floor_bytes=floor_bytes)
    return free


def is_disk_full(exc: BaseException) -> bool:
    """True if ``exc`` is SQLite's SQLITE_FULL or an OS "no space left" / "quota exceeded" error."""
    if isinstance(exc, sqlite3.Error):
        code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
        if code is not None and code & 0xFF == SQLITE_FULL:
            return True
        return "database or disk is full" in str(exc)
    return isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(path: Path | str, floor_bytes: int, what: str = "Booking NOT saved") -> DiskFullError:
    """The `DiskFullError` for a write that failed because the disk filled up (already rolled back)."""
    try:
        free: int | None = free_bytes(path)
    except OSError:
        free = None
    shown = human_bytes(free) if free is not None else "unknown"
    return DiskFullError(
        f"{what}: the disk filled up during the write, which was rolled back. {shown} free on {path}; "
        f"the configured floor is {human_bytes(floor_bytes)}. {_SAFE}",
        path=str(path), free_bytes=free, floor_bytes=floor_bytes)
