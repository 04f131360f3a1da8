"""The machinery every table group shares: the lock, the dialect hooks, placeholder rewriting and schema
creation.

Each table group's mixin (records, templates, devices, rejections, audit, station status, and the job
queue in :mod:`sync.county.gallery.jobs`) derives from :class:`StoreCore` (or, for the queue, declares
what it uses) and writes its SQL with ``?`` placeholders; a dialect subclass (``SQLiteStore``,
``PostgresStore``) implements the hooks. Keeping them here means a mixin's module reads as SQL only.
"""

from __future__ import annotations

import contextlib
import threading
from abc import ABC, abstractmethod
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sync.county.gallery.store.errors import GalleryStoreError
from sync.county.gallery.store.schema import _SCHEMA, SCHEMA_VERSION


class StoreCore(ABC):
    """The transaction and dialect helpers the table mixins call. Thread-safe: one lock per store, since the
    MQTT network thread, the job worker and a CLI or health thread may share one."""

    placeholder = "?"
    dialect: dict[str, str] = {}

    def __init__(self) -> None:
        self._lock = threading.RLock()

    # -- dialect hooks
    @abstractmethod
    def _transaction(self, write: bool = True) -> contextlib.AbstractContextManager[Any]:
        """Context manager yielding a cursor inside one committed-or-rolled-back transaction;
        ``write=False`` lets SQLite readers run beside a writer in another process."""

    @abstractmethod
    def _to_ts(self, value: datetime) -> Any: ...

    @abstractmethod
    def _from_ts(self, value: Any) -> datetime: ...

    @abstractmethod
    def close(self) -> None: ...

    def _sql(self, sql: str) -> str:
        return sql if self.placeholder == "?" else sql.replace("?", self.placeholder)

    def _exec(self, cur: Any, sql: str, params: Sequence[Any] = ()) -> Any:
        cur.execute(self._sql(sql), tuple(params))
        return cur

    def _create_schema(self) -> None:
        with self._transaction() as cur:
            for statement in _SCHEMA:
                cur.execute(statement.format(**self.dialect))
            row = self._exec(cur, "SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                self._exec(cur, "INSERT INTO meta (key, value) VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise GalleryStoreError(f"gallery database schema {row[0]} is not {SCHEMA_VERSION}; migrate it first")
            if self._exec(cur, "SELECT 1 FROM meta WHERE key = 'template_seq'").fetchone() is None:
                self._exec(cur, "INSERT INTO template_seq (record_id, capture_index) SELECT t.record_id, "
                                "t.capture_index FROM templates t JOIN records r ON r.record_id = t.record_id "
                                "ORDER BY r.received_at, t.record_id, t.capture_index")
                self._exec(cur, "INSERT INTO meta (key, value) VALUES ('template_seq', '1')")
