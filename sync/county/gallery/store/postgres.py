"""The PostgreSQL store (psycopg 3, imported only when one is opened), where a county already runs PostgreSQL
or runs several gallery workers.

Its own module so the psycopg-specific parts (schema isolation, autocommit connection) are in one place;
psycopg stays a county-only dependency (see the import contracts).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

from sync.county.gallery.store.base import GalleryStore
from sync.county.gallery.store.errors import GalleryStoreError

_SCHEMA_NAME_RE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


class PostgresStore(GalleryStore):
    """PostgreSQL store (psycopg 3). ``schema`` isolates a gallery (and each test run)."""

    placeholder = "%s"
    dialect = {"blob": "BYTEA", "ts": "TIMESTAMPTZ", "serial": "BIGSERIAL PRIMARY KEY",
               "skip_locked": "FOR UPDATE SKIP LOCKED"}

    def __init__(self, conninfo: str, *, schema: str = "public") -> None:
        super().__init__()
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise GalleryStoreError("PostgreSQL needs psycopg 3: pip install 'psycopg[binary]'") from exc
        if not _SCHEMA_NAME_RE.fullmatch(schema):
            raise GalleryStoreError(f"schema name {schema!r} must match {_SCHEMA_NAME_RE.pattern}")
        self.schema = schema
        self._conninfo = conninfo
        try:
            self._conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise GalleryStoreError(f"cannot connect to PostgreSQL: {exc}") from exc
        from psycopg import sql

        self._conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        self._conn.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
        self._create_schema()

    def reader(self) -> GalleryStore:
        return PostgresStore(self._conninfo, schema=self.schema)

    @contextlib.contextmanager
    def _transaction(self, write: bool = True) -> Iterator[Any]:
        with self._lock, self._conn.transaction(), self._conn.cursor() as cur:
            yield cur

    def _to_ts(self, value: datetime) -> datetime:
        return value.astimezone(timezone.utc)

    def _from_ts(self, value: Any) -> datetime:
        return value.astimezone(timezone.utc)

    def drop_schema(self) -> None:
        """Drop this store's schema and everything in it (tests, decommissioning)."""
        from psycopg import sql

        with self._lock:
            self._conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(self.schema)))

    def close(self) -> None:
        with self._lock:
            self._conn.close()
