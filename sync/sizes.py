"""Byte counts in words (``512.0 MiB``), the one way both sides write a size for people.

The station's disk messages and the county's fleet view quote the same figures (a station's free space and
floor), so they must read alike; this lives under ``sync`` outside either side so both may import it under
the import contracts.
"""

from __future__ import annotations


def human_bytes(count: int) -> str:
    """Bytes for people: ``512.0 MiB``."""
    value = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")
