"""The console's search service in process: the index it keeps open between searches catches up with
records stored since, a search without a reason is refused before anything is searched or logged, and
a search leaves one audit row naming who, why and what came back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from sync.county.console.service import ConsoleService, ServiceError
from sync.county.gallery.store import SQLiteStore
from sync.county.search.settings import SearchSettings
from tests.sync.county.console.conftest import Gallery
from tests.sync.county.search.conftest import enrol


def _unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=128).astype(np.float32)
    return v / np.linalg.norm(v)


def test_kept_index_finds_a_record_stored_after_the_first_search(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    db = tmp_path / "g.db"
    base = [_unit(rng) for _ in range(4)]
    with SQLiteStore(db) as store:
        store.register_device("st-01", "king", bytes(32))
        ids = [enrol(store, v, n) for n, v in enumerate(base)]
    service = ConsoleService(str(db), SearchSettings(engine="faiss", folder=tmp_path / "idx"))
    try:
        with pytest.raises(ServiceError, match="reason"):
            service.search(actor="u1", reason=" ab ", record_id=ids[0])
        first = service.search(actor="u1", reason="case 1", record_id=ids[0], top=3)
        assert ids[0] not in [c["record_id"] for c in first["candidates"]] and first["searched"] == 4
        near = base[0] + 0.01 * _unit(rng)
        with SQLiteStore(db) as store:
            twin = enrol(store, near, 9)
        second = service.search(actor="u2", reason="case 2", record_id=ids[0], top=3)
        assert second["searched"] == 5 and second["candidates"][0]["record_id"] == twin
        entries = service.audit(action="console_search")
        assert [(e["actor"], e["details"]["reason"], e["subject"]) for e in entries] == [
            ("u2", "case 2", ids[0]), ("u1", "case 1", ids[0])]
        assert entries[0]["details"]["candidates"][0] == twin
        with pytest.raises(ServiceError) as missing:
            service.search(actor="u1", reason="case 3", record_id="01900000-0000-7000-8000-000000000000")
        assert missing.value.status == 404
    finally:
        service.close()


def test_photo_and_face_of_a_stored_record(gallery: Gallery, tmp_path: Path) -> None:
    """A record's photo by index and its face tile (the frontal photo) come from the stored, re-verified
    record; an unknown record or photo is a 404, not an error page."""
    service = ConsoleService(str(gallery.db), SearchSettings(engine="faiss", folder=tmp_path / "idx"))
    try:
        photo = service.photo(gallery.station_record, 0)
        assert photo[:2] == b"\xff\xd8"
        assert service.face(gallery.station_record) == photo  # its one photo is the frontal one
        for call in (lambda: service.photo(gallery.station_record, 1),
                     lambda: service.photo("01900000-0000-7000-8000-000000000000", 0),
                     lambda: service.face("01900000-0000-7000-8000-000000000000")):
            with pytest.raises(ServiceError) as refused:
                call()
            assert refused.value.status == 404
    finally:
        service.close()
