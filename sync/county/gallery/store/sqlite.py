"""The SQLite store: one file per county server (and the tests), with the durability settings the ack needs.

Apart from PostgreSQL so the file handling (owner-only creation, read-only opening of an existing
gallery) and the pragmas are read in one place.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

from sync.county.gallery.store.base import GalleryStore
from sync.county.gallery.store.errors import GalleryDatabaseMissingError, NotAGalleryDatabaseError

DEFAULT_DB = "/var/lib/booking-gallery/gallery.db"


class SQLiteStore(GalleryStore):
    """SQLite file store: WAL, ``synchronous=FULL``, foreign keys and ``secure_delete`` on."""

    dialect = {"blob": "BLOB", "ts": "TEXT", "serial": "INTEGER PRIMARY KEY AUTOINCREMENT"}

    def __init__(self, path: str | os.PathLike[str], *, create: bool = True) -> None:
        """``create=False`` (commands that only read) opens an existing file or raises
        :class:`GalleryDatabaseMissingError`: no folder and no empty database is made."""
        super().__init__()
        self.path = Path(path)
        target, uri = str(self.path), False
        if target == ":memory:":
            pass
        elif create:
            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o750)
            if not self.path.exists():
                # The database holds criminal-justice information: owner-only from the start.
                os.close(os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600))
        else:
            if not self.path.is_file():
                raise GalleryDatabaseMissingError(f"the gallery database {self.path} does not exist")
            # mode=rw: SQLite itself refuses to create the file if it vanished since the check.
            target, uri = f"file:{quote(str(self.path.resolve()))}?mode=rw", True
        try:
            self._conn = sqlite3.connect(target, uri=uri, isolation_level=None, check_same_thread=False, timeout=30.0)
        except sqlite3.OperationalError as exc:
            raise GalleryDatabaseMissingError(f"cannot open the gallery database {self.path}: {exc}") from None
        try:
            if not create and target != ":memory:":
                _require_gallery_schema(self._conn, self.path)
            for pragma in (
                # 16 KiB pages for a new file (an existing one keeps its size): a 1 MB record is 64 overflow
                # pages, not 256, so storing it (into the WAL, then again by the checkpoint) takes a quarter
                # of the system calls; measured: half the CPU and half the time per group commit of 1 MB records.
                "PRAGMA page_size = 16384",
                "PRAGMA journal_mode = WAL",
                "PRAGMA synchronous = FULL",
                "PRAGMA foreign_keys = ON",
                "PRAGMA secure_delete = ON",
            ):
                self._conn.execute(pragma)
            self._create_schema()
        except NotAGalleryDatabaseError:
            self._conn.close()
            raise
        except sqlite3.DatabaseError as exc:
            self._conn.close()
            if "not a database" not in str(exc) and "malformed" not in str(exc):
                raise
            raise NotAGalleryDatabaseError(f"{self.path} is not a gallery database: {exc}") from None

    def reader(self) -> GalleryStore:
        return self if str(self.path) == ":memory:" else SQLiteStore(self.path, create=False)

    @contextlib.contextmanager
    def _transaction(self, write: bool = True) -> Iterator[sqlite3.Cursor]:
        with self._lock:
            cur = self._conn.cursor()
            cur.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield cur
            except BaseException:
                cur.execute("ROLLBACK")
                raise
            else:
                cur.execute("COMMIT")
            finally:
                cur.close()

    def _to_ts(self, value: datetime) -> str:
        return value.astimezone(timezone.utc).isoformat()

    def _from_ts(self, value: Any) -> datetime:
        return datetime.fromisoformat(value).astimezone(timezone.utc)

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def _require_gallery_schema(conn: sqlite3.Connection, path: Path) -> None:
    """A command that only reads must not turn some other SQLite file into a gallery (by creating the tables
    in it): the file must already say it is one."""
    try:
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
    except sqlite3.OperationalError:  # no meta table: some other application's database
        row = None
    if row is None:
        raise NotAGalleryDatabaseError(f"{path} is not a gallery database: it has no gallery schema")
