"""The PostgreSQL engine: templates in a ``vector(128)`` column with a pgvector index, searched with ``<->``.

For counties that already run PostgreSQL (and scale it out with read replicas, or Citus for a state-wide
gallery). The table lives in its own schema (``search`` by default) of any PostgreSQL with the pgvector
extension, usually the gallery's own database. ``<->`` is pgvector's Euclidean distance, matching the
embedded engine; the index is HNSW (``vector_l2_ops``, grows with each insert, no training) or IVFFlat
(trained on the rows present when it is built: only for a bulk-loaded gallery). The ``rerank`` nearest
rows the index returns are re-ranked exactly (float64) against their stored vectors, so both engines
report the same distances.

Every change is committed as it is made; the watermark is a row of the same schema, so the watermark
never runs ahead of the templates it covers (a crash between the two only repeats an idempotent add).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from sync.county.search.engine import DIM, Hit, SearchEngine, SearchEngineError, as_ids, as_vectors, exact_hits

_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@dataclass(frozen=True)
class PgvectorSettings:
    """Where the table lives and how it is indexed and searched (``[search]`` of county.toml)."""

    url: str
    schema: str = "search"
    method: str = "hnsw"  # or "ivfflat"
    m: int = 16
    ef_construction: int = 64
    ef_search: int = 100
    lists: int = 0  # ivfflat: 0 = about 4 * sqrt(rows) at build time
    probes: int = 32
    rerank: int = 64

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.schema):
            raise SearchEngineError(f"search schema {self.schema!r} must match {_NAME.pattern}")
        if self.method not in ("hnsw", "ivfflat"):
            raise SearchEngineError(f"pgvector index method must be hnsw or ivfflat, not {self.method!r}")


def _text(vector: np.ndarray) -> str:
    return "[" + ",".join(repr(float(v)) for v in vector) + "]"


class PgvectorEngine(SearchEngine):
    """See the module docstring."""

    name = "pgvector"

    def __init__(self, settings: PgvectorSettings) -> None:
        try:
            import psycopg
            from psycopg import sql
        except ImportError as exc:  # pragma: no cover - depends on the install
            raise SearchEngineError("the pgvector engine needs psycopg 3: pip install 'psycopg[binary]'") from exc
        self.settings = settings
        self._sql = sql
        self._schema = sql.Identifier(settings.schema)
        try:
            self._conn = psycopg.connect(settings.url, autocommit=True, connect_timeout=10)
        except psycopg.Error as exc:
            raise SearchEngineError(f"cannot connect to the search database: {str(exc).strip()}") from None
        self._errors = psycopg.Error
        try:
            self._create()
        except psycopg.Error as exc:
            self._conn.close()
            raise SearchEngineError(f"cannot prepare the pgvector search table: {str(exc).strip()}") from None

    def _q(self, text: str) -> Any:
        """SQL with ``{s}`` standing for this engine's schema."""
        return self._sql.SQL(text).format(s=self._schema)

    def _create(self) -> None:
        with self._conn.transaction():
            if not self._conn.execute("SELECT 1 FROM pg_extension WHERE extname = 'vector'").fetchone():
                self._conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            self._conn.execute(self._q("CREATE SCHEMA IF NOT EXISTS {s}"))
            self._conn.execute(self._q(f"CREATE TABLE IF NOT EXISTS {{s}}.templates (id BIGINT PRIMARY KEY, "
                                       f"embedding vector({DIM}) NOT NULL)"))
            self._conn.execute(self._q("CREATE TABLE IF NOT EXISTS {s}.meta (key TEXT PRIMARY KEY, "
                                       "value BIGINT NOT NULL)"))
        if self.settings.method == "hnsw":
            self._create_index()

    def _create_index(self) -> None:
        s = self.settings
        if s.method == "hnsw":
            options = (f"USING hnsw (embedding vector_l2_ops) WITH (m = {int(s.m)}, "
                       f"ef_construction = {int(s.ef_construction)})")
        else:
            lists = s.lists or max(16, int(4 * self.count() ** 0.5))
            options = f"USING ivfflat (embedding vector_l2_ops) WITH (lists = {int(lists)})"
        self._conn.execute(self._q(f"CREATE INDEX IF NOT EXISTS templates_embedding ON {{s}}.templates {options}"))

    @contextmanager
    def _tx(self) -> Iterator[Any]:
        try:
            with self._conn.transaction(), self._conn.cursor() as cur:
                yield cur
        except self._errors as exc:
            raise SearchEngineError(f"search database: {str(exc).strip()}") from None

    # ------------------------------------------------------------------ contract
    def add(self, ids: object, vectors: object) -> int:
        vecs = as_vectors(vectors)
        keys = as_ids(ids, vecs.shape[0])
        if not keys.size:
            return 0
        with self._tx() as cur:
            cur.execute("CREATE TEMP TABLE IF NOT EXISTS incoming (id BIGINT, embedding TEXT) ON COMMIT DELETE ROWS")
            with cur.copy("COPY incoming (id, embedding) FROM STDIN") as copy:
                for key, vec in zip(keys.tolist(), vecs, strict=True):
                    copy.write_row((key, _text(vec)))
            cur.execute(self._q("INSERT INTO {s}.templates (id, embedding) SELECT DISTINCT ON (id) id, "
                                "embedding::vector FROM incoming ON CONFLICT (id) DO NOTHING"))
            return int(cur.rowcount)

    def remove(self, ids: object) -> int:
        keys = as_ids(ids)
        if not keys.size:
            return 0
        with self._tx() as cur:
            cur.execute(self._q("DELETE FROM {s}.templates WHERE id = ANY(%s)"), (keys.tolist(),))
            return int(cur.rowcount)

    def search(self, query: object, k: int) -> list[Hit]:
        q = as_vectors(query)
        if q.shape[0] != 1:
            raise SearchEngineError("search takes one template")
        if k <= 0:
            return []
        wanted = max(k, self.settings.rerank)
        probe = _text(q[0])
        with self._tx() as cur:
            if self.settings.method == "hnsw":
                cur.execute(f"SET LOCAL hnsw.ef_search = {max(int(self.settings.ef_search), wanted)}")
            else:
                cur.execute(f"SET LOCAL ivfflat.probes = {int(self.settings.probes)}")
            rows = cur.execute(self._q("SELECT id, embedding::real[] FROM {s}.templates ORDER BY embedding <-> "
                                       "%s::vector LIMIT %s"), (probe, wanted)).fetchall()
        if not rows:
            return []
        keys = np.array([r[0] for r in rows], dtype=np.int64)
        return exact_hits(q[0], keys, np.array([r[1] for r in rows], dtype=np.float32), k)

    def count(self) -> int:
        with self._tx() as cur:
            return int(cur.execute(self._q("SELECT COUNT(*) FROM {s}.templates")).fetchone()[0])

    def ids(self) -> np.ndarray:
        with self._tx() as cur:
            rows = cur.execute(self._q("SELECT id FROM {s}.templates ORDER BY id")).fetchall()
        return np.array([r[0] for r in rows], dtype=np.int64)

    @property
    def watermark(self) -> int:
        with self._tx() as cur:
            row = cur.execute(self._q("SELECT value FROM {s}.meta WHERE key = 'watermark'")).fetchone()
        return 0 if row is None else int(row[0])

    def checkpoint(self, watermark: int, *, force: bool = False) -> bool:
        with self._tx() as cur:
            cur.execute(self._q("INSERT INTO {s}.meta (key, value) VALUES ('watermark', %s) ON CONFLICT (key) "
                                "DO UPDATE SET value = excluded.value"), (int(watermark),))
        return True

    def clear(self) -> None:
        with self._tx() as cur:
            cur.execute(self._q("TRUNCATE {s}.templates"))
            cur.execute(self._q("DELETE FROM {s}.meta WHERE key = 'watermark'"))

    def bulk_load(self, ids: object, vectors: object) -> None:
        """Empty the table and load a whole gallery, building the index once afterwards (much faster than
        growing an HNSW graph row by row, and the only way to train IVFFlat on the real data)."""
        self.clear()
        try:
            self._conn.execute(self._q("DROP INDEX IF EXISTS {s}.templates_embedding"))
            self.add(ids, vectors)
            self._create_index()
        except self._errors as exc:
            raise SearchEngineError(f"search database: {str(exc).strip()}") from None

    def describe(self) -> dict[str, object]:
        info = super().describe()
        info.update(schema=self.settings.schema, method=self.settings.method)
        return info

    def drop(self) -> None:
        """Drop the whole search schema (tests, decommissioning)."""
        self._conn.execute(self._q("DROP SCHEMA IF EXISTS {s} CASCADE"))

    def close(self) -> None:
        self._conn.close()
