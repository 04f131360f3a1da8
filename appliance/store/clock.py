"""Time as the store writes it: UTC, fixed-width ISO 8601 text.

Every timestamp column holds ``YYYY-MM-DDTHH:MM:SS.ffffffZ``. The fixed width and the single zone
make text order equal time order, so "due" and "older than" are plain string comparisons that SQLite
can answer from an index, and a person reading the database (or `booking-station queue`) sees
unambiguous times. Naive datetimes are refused: on a device that may boot before NTP sets the zone, a
guessed zone is a wrong timestamp in a legal record.
"""

from __future__ import annotations

from datetime import datetime, timezone

_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"


def utc_now() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


def to_text(moment: datetime) -> str:
    """Format an aware datetime as the store's fixed-width UTC text."""
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError(f"time {moment.isoformat()} has no time zone; the store only takes aware times")
    return moment.astimezone(timezone.utc).strftime(_FORMAT)


def from_text(text: str) -> datetime:
    """Parse the store's UTC text back into an aware datetime."""
    return datetime.strptime(text, _FORMAT).replace(tzinfo=timezone.utc)
