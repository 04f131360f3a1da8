"""The search index over a real gallery store, with real templates of labelled faces, on both engines."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import numpy as np

from sync.county.gallery.store import GalleryStore, SQLiteStore
from sync.county.search.index import SearchIndex
from tests.sync.county.search.conftest import Face, enrol

Gallery = Callable[..., tuple[GalleryStore, SearchIndex]]
HELD_OUT = {"Jeff", "Sundar", "Marissa"}  # identities with no booking in the gallery: "unknown faces"


def _delete_record(store: GalleryStore, record_id: str) -> None:
    """What a purge does to the store (the purge command is elsewhere): the record and its templates go."""
    with store._transaction() as cur:  # noqa: SLF001 - the test plays the purge
        store._exec(cur, "DELETE FROM records WHERE record_id = ?", (record_id,))  # noqa: SLF001


def test_each_identity_is_found_at_rank_one_and_an_unknown_face_gets_nothing_under_0_6(
    gallery: Gallery, labelled_faces: list[Face]
) -> None:
    store, index = gallery()
    enrolled: dict[str, str] = {}  # identity -> record id of its one booking
    probes: list[Face] = []
    for n, face in enumerate(labelled_faces):
        if face.identity in HELD_OUT:
            probes.append(face)
        elif face.identity not in enrolled:
            enrolled[face.identity] = enrol(store, face.vector, n)
        else:
            probes.append(face)
    assert index.catch_up(store) == len(enrolled)
    mated = [p for p in probes if p.identity in enrolled]
    assert len(mated) >= 25
    for probe in mated:
        result = index.search(store, probe.vector, k=5)
        assert result.searched == len(enrolled)
        assert result.candidates[0].record_id == enrolled[probe.identity], probe.file
        assert result.candidates[0].distance < 0.7, probe.file  # genuine pairs here: 0.27-0.62
        distances = [c.distance for c in result.candidates]
        assert distances == sorted(distances)
        assert np.isclose(distances[0], np.linalg.norm(probe.vector.astype(np.float64) - [
            f.vector for f in labelled_faces if f.identity == probe.identity][0]), atol=1e-5)
    unknown = [p for p in probes if p.identity in HELD_OUT]
    assert len(unknown) >= 4
    for probe in unknown:
        assert index.search(store, probe.vector, k=10, threshold=0.6).candidates == [], probe.file
        assert len(index.search(store, probe.vector, k=3).candidates) == 3  # without a threshold: the 3 nearest


def test_only_frontal_templates_are_indexed_and_catch_up_is_idempotent(gallery: Gallery,
                                                                      labelled_faces: list[Face]) -> None:
    store, index = gallery()
    frontal = enrol(store, labelled_faces[0].vector, 1)
    enrol(store, labelled_faces[1].vector, 2, pose="smt")  # a tattoo photo's template is not a face
    enrol(store, labelled_faces[2].vector, 3, model="other-model@2")
    assert index.catch_up(store) == 2  # no model configured: every 128-D frontal template
    assert index.catch_up(store) == 0
    assert index.verify(store).ok
    hits = index.search(store, labelled_faces[1].vector, k=10).candidates
    assert frontal in [c.record_id for c in hits] and all(c.pose == "frontal" for c in hits)
    status = index.status(store)
    assert status["count"] == 2 and status["behind"] == 0 and status["watermark"] == store.max_template_seq()
    store2, only_model = gallery(model="other-model@2")  # the same index storage, rebuilt for one model
    assert only_model.rebuild(store2) == 1 and only_model.verify(store2).ok


def test_a_record_the_store_no_longer_holds_is_never_returned_and_verify_reconcile_rebuild(
    gallery: Gallery, labelled_faces: list[Face]
) -> None:
    store, index = gallery()
    ids = [enrol(store, f.vector, n) for n, f in enumerate(labelled_faces[:12])]
    index.catch_up(store)
    target = labelled_faces[3]
    assert index.search(store, target.vector, k=1).candidates[0].record_id == ids[3]
    _delete_record(store, ids[3])  # purged behind the index's back
    result = index.search(store, target.vector, k=5)
    assert ids[3] not in [c.record_id for c in result.candidates] and len(result.candidates) == 5
    report = index.verify(store)
    assert not report.ok and report.missing == [] and len(report.extra) == 1
    assert index.reconcile(store) == (0, 1)
    assert index.verify(store).ok and index.engine.count() == 11
    # remove_record before the store deletes it (what purge will call)
    assert index.remove_record(store, ids[4]) == 1
    assert index.verify(store).extra == [] and len(index.verify(store).missing) == 1
    assert index.rebuild(store) == 11
    assert index.verify(store).ok


def test_the_index_survives_reopening_and_catches_up_from_its_watermark(gallery: Gallery,
                                                                      labelled_faces: list[Face]) -> None:
    store, index = gallery(save_interval=3600.0)
    for n, face in enumerate(labelled_faces[:5]):
        enrol(store, face.vector, n)
    index.catch_up(store)
    index.engine.checkpoint(index.engine.watermark, force=True)
    saved = index.engine.watermark
    for n, face in enumerate(labelled_faces[5:9], start=5):
        enrol(store, face.vector, n)
        index.catch_up(store)  # in memory; FAISS saves only every save_interval
    if hasattr(index.engine, "_dirty"):
        index.engine._dirty = False  # noqa: SLF001 - a crash: what was added since the last save is lost
    _, again = gallery(save_interval=3600.0)
    assert again.engine.watermark >= saved
    assert again.engine.count() in (5, 9)  # FAISS: the last save; pgvector: every add was committed
    assert again.catch_up(store) == 9 - again.engine.count() or again.engine.count() == 9
    assert again.verify(store).ok and again.engine.count() == 9


def test_an_existing_gallery_gets_its_template_sequence_on_open(tmp_path: Path, labelled_faces: list[Face]) -> None:
    db = tmp_path / "gallery.db"
    store = SQLiteStore(db)
    from tests.sync.county.search.conftest import RAW

    store.register_device("st-01", "king", RAW)
    ids = [enrol(store, f.vector, n) for n, f in enumerate(labelled_faces[:3])]
    store.close()
    with sqlite3.connect(db) as conn:  # a gallery from before the search index
        conn.execute("DROP TABLE template_seq")
        conn.execute("DELETE FROM meta WHERE key = 'template_seq'")
    store = SQLiteStore(db)
    try:
        assert len(store.template_seqs()) == 3
        assert {t.record_id for t in store.templates_by_seq(store.template_seqs())} == set(ids)
        new = enrol(store, labelled_faces[3].vector, 3)
        assert store.record_template_seqs(new) == [store.max_template_seq()]
        assert store.max_template_seq() > max(store.template_seqs()[:3])
    finally:
        store.close()
