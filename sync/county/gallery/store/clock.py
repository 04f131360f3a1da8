"""Time for the store: its clock (UTC, aware) and reading an ISO 8601 time out of a JSON body.

Separate because every table group stamps rows with the same clock, and the receiver and the fleet view
read station times with the same ``parse_iso`` the station status table uses.
"""

from __future__ import annotations

from datetime import datetime, timezone


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def parse_iso(value: object) -> datetime | None:
    """An aware UTC datetime from an ISO 8601 text, or None (absent, naive or unreadable)."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return None if parsed.tzinfo is None else parsed.astimezone(timezone.utc)
