"""The ``[search]`` table of county.toml: which engine, where its index lives, and how hard it searches.

::

    [search]
    engine = "faiss"            # or "pgvector"
    folder = "/var/lib/booking-gallery/search"   # faiss: the index file's folder (default: beside the
                                                  # SQLite gallery, else /var/lib/booking-gallery/search)
    nprobe = 64                 # faiss: inverted lists scanned per query, once the gallery is large
    ivf_threshold = 50000       # faiss: templates from which the inverted file replaces exact search
    retrain_growth = 4.0        # faiss: retrain the inverted file once the gallery has grown this many times
                                # (a worker retrains in the background, searching the old index meanwhile)
    url = "postgresql://..."    # pgvector: the database (default: the gallery's, when it is PostgreSQL)
    ef_search = 100             # pgvector HNSW: candidates kept while walking the graph
    booking_check = false       # answer the stations' booking-time checks (a gallery worker; off by default)
    booking_check_threshold = 0.6   # largest template distance reported as a possible prior booking
    booking_check_key = "/etc/booking-gallery/command-signing.key"   # the county key that signs the answers
                                # (a copy the worker may read; default: command-signing.key in [ca] dir)
    booking_check_photos = false    # send a small JPEG of each prior booking's frontal with the answer
                                # (longest side 160 px, at most 12 KiB each): only where the county's
                                # policy lets the booking desk see earlier mug shots; off: no photo bytes

Defaults come from ``make bench-scale`` (1 M templates from the fitted generator, 4,000 lists, one query at
a time on a loaded 2-core machine): nprobe 32 found the mate in the top 10 for 99.4% of probes against
exact search's 100% (p50 0.8-1.1 ms); nprobe 64 for 99.8% (p50 1.4 ms), within the 0.5% asked for. At
15 M (4,096 lists, the cap) nprobe 64 found it as often as exact search (99.8%) at p50 47 ms on the loaded
machine, nprobe 32 for 99.0% at 22 ms: 64 stays the default. At
100 k, exact search took 17-24 ms a query and the inverted file (1,264 lists, nprobe 64) 0.6 ms with the
mate in the top 10 for all 500 probes: hence exact search only below 50,000.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

ENGINES = ("faiss", "pgvector")
DEFAULT_FOLDER = Path("/var/lib/booking-gallery/search")


class SearchConfigError(ValueError):
    """A ``[search]`` setting that cannot work; the message names it."""


@dataclass(frozen=True)
class SearchSettings:
    engine: str = "faiss"
    model: str | None = None  # index only templates of this model (default: every 128-D template)
    # faiss
    folder: Path | None = None
    ivf_threshold: int = 50_000
    nprobe: int = 64
    rerank: int = 64
    save_interval: float = 300.0
    threads: int = 1  # faiss: threads per query (0: every core)
    retrain_growth: float = 4.0
    # pgvector
    url: str | None = None
    schema: str = "search"
    method: str = "hnsw"
    ef_search: int = 100
    m: int = 16
    ef_construction: int = 64
    probes: int = 32
    # the booking-time check (sync.county.search.booking_check)
    booking_check: bool = False
    booking_check_threshold: float = 0.6
    booking_check_key: Path | None = None
    booking_check_photos: bool = False

    def __post_init__(self) -> None:
        if self.engine not in ENGINES:
            raise SearchConfigError(f"[search] engine must be one of {', '.join(ENGINES)}, not {self.engine!r}")
        for name in ("ivf_threshold", "nprobe", "rerank", "ef_search", "m", "ef_construction", "probes"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SearchConfigError(f"[search] {name} must be a positive whole number, not {value!r}")
        if isinstance(self.threads, bool) or not isinstance(self.threads, int) or self.threads < 0:
            raise SearchConfigError(f"[search] threads must be 0 (every core) or more, not {self.threads!r}")
        g = self.retrain_growth
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not 1 < g <= 100:
            raise SearchConfigError(f"[search] retrain_growth must be a factor in (1, 100], not {g!r}")
        if isinstance(self.save_interval, bool) or not isinstance(self.save_interval, (int, float)) \
                or self.save_interval < 0:
            raise SearchConfigError(f"[search] save_interval must be seconds >= 0, not {self.save_interval!r}")
        for name in ("booking_check", "booking_check_photos"):
            if not isinstance(getattr(self, name), bool):
                raise SearchConfigError(f"[search] {name} must be true or false, not {getattr(self, name)!r}")
        t = self.booking_check_threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 < t <= 2:
            raise SearchConfigError(f"[search] booking_check_threshold must be a distance in (0, 2], not {t!r}")

    @classmethod
    def keys(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    @classmethod
    def from_mapping(cls, data: dict[str, Any], base: Path) -> SearchSettings:
        """The ``[search]`` table; ``folder`` relative to the file's folder ``base``."""
        values = dict(data)
        for key in ("folder", "url", "model", "engine", "schema", "method", "booking_check_key"):
            if key in values and (not isinstance(values[key], str) or not values[key].strip()):
                raise SearchConfigError(f"[search] {key} must be a non-empty string")
        for key in ("folder", "booking_check_key"):
            if key in values:
                values[key] = base / values[key]
        try:
            return cls(**values)
        except TypeError as exc:
            raise SearchConfigError(f"[search] {exc}") from None

    def with_overrides(self, **changes: Any) -> SearchSettings:
        """These settings with the given flags (None: not given) laid over them."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def index_folder(self, db_url: str) -> Path:
        """The FAISS index folder: ``folder``, else ``search/`` beside a SQLite gallery, else the default."""
        if self.folder is not None:
            return Path(self.folder)
        parts = urlsplit(os.fspath(db_url))
        if parts.scheme in ("postgresql", "postgres"):
            return DEFAULT_FOLDER
        path = Path(parts.path if parts.scheme == "sqlite" else os.fspath(db_url))
        return path.parent / "search"

    def database_url(self, db_url: str) -> str:
        """The pgvector database: ``url``, else the gallery's own when it is PostgreSQL."""
        if self.url:
            return self.url
        parts = urlsplit(os.fspath(db_url))
        if parts.scheme in ("postgresql", "postgres"):
            query = parse_qs(parts.query, keep_blank_values=True)
            query.pop("schema", None)  # the gallery store's schema; the index has its own
            return urlunsplit(parts._replace(query=urlencode(query, doseq=True)))
        raise SearchConfigError("the pgvector engine needs [search] url (the gallery database is not PostgreSQL)")
