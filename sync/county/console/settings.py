"""The ``[console]`` table of county.toml: where the console listens, its accounts file and its rules.

::

    [console]
    host = "127.0.0.1"          # bind wider only behind a TLS reverse proxy
    port = 8600
    accounts = "console-accounts.db"   # relative to county.toml's folder; default beside a SQLite gallery
    county = "King County"      # named in the authenticator entry ("King County gallery console")
    idle_minutes = 15           # the idle lock (at most 30, CJIS)
    max_upload_mb = 10          # a larger request is refused with 413
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

DEFAULT_ACCOUNTS = Path("/var/lib/booking-gallery/console-accounts.db")
MAX_IDLE_MINUTES = 30


class ConsoleConfigError(ValueError):
    """A wrong ``[console]`` value; the message names the key."""


@dataclass(frozen=True)
class ConsoleSettings:
    host: str = "127.0.0.1"
    port: int = 8600
    accounts: Path | None = None
    county: str | None = None
    idle_minutes: float = 15
    max_upload_mb: float = 10

    def __post_init__(self) -> None:
        if not isinstance(self.host, str) or not self.host.strip():
            raise ConsoleConfigError("[console] host must be a non-empty string")
        if isinstance(self.port, bool) or not isinstance(self.port, int) or not 0 <= self.port <= 65535:
            raise ConsoleConfigError(f"[console] port must be 0-65535, not {self.port!r}")
        idle = self.idle_minutes
        if isinstance(idle, bool) or not isinstance(idle, (int, float)) or not 0 < idle <= MAX_IDLE_MINUTES:
            raise ConsoleConfigError(f"[console] idle_minutes must be more than 0 and at most {MAX_IDLE_MINUTES}")
        size = self.max_upload_mb
        if isinstance(size, bool) or not isinstance(size, (int, float)) or not 0 < size <= 100:
            raise ConsoleConfigError("[console] max_upload_mb must be more than 0 and at most 100")
        if self.county is not None and (not isinstance(self.county, str) or not self.county.strip()):
            raise ConsoleConfigError("[console] county must be a non-empty string")

    @classmethod
    def keys(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    @classmethod
    def from_mapping(cls, data: dict[str, Any], base: Path) -> ConsoleSettings:
        values = dict(data)
        if "accounts" in values:
            if not isinstance(values["accounts"], str) or not values["accounts"].strip():
                raise ConsoleConfigError("[console] accounts must be a non-empty string")
            values["accounts"] = base / values["accounts"]
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConsoleConfigError(f"[console] {exc}") from None

    def with_overrides(self, **changes: Any) -> ConsoleSettings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @property
    def issuer(self) -> str:
        """The authenticator entry's issuer: names the county, so a user with several entries tells them apart."""
        return f"{self.county} gallery console" if self.county else "County gallery console"

    def accounts_path(self, db_url: str) -> Path:
        """``accounts``, else ``console-accounts.db`` beside a SQLite gallery, else the default."""
        if self.accounts is not None:
            return Path(self.accounts)
        parts = urlsplit(os.fspath(db_url))
        if parts.scheme in ("postgresql", "postgres"):
            return DEFAULT_ACCOUNTS
        path = Path(parts.path if parts.scheme == "sqlite" else os.fspath(db_url))
        return path.parent / "console-accounts.db"
