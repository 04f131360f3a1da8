"""Stored face templates and the search index's feed: templates by record, by sequence number, and after a
watermark.

Apart from the records because the search index (:mod:`sync.county.search.index`) is their only big
reader and reads them by ``template_seq`` number, not by record.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sync.county.gallery.store.core import StoreCore
from sync.county.gallery.store.models import SequencedTemplate, StoredTemplate, TemplateOwner


class TemplatesMixin(StoreCore):
    """Templates (tables ``templates`` and ``template_seq``, read only), mixed into ``GalleryStore``."""

    def templates(self, record_id: str) -> list[StoredTemplate]:
        with self._lock, self._transaction(write=False) as cur:
            rows = self._exec(
                cur,
                "SELECT record_id, capture_index, pose, model, dim, vector FROM templates WHERE record_id = ? "
                "ORDER BY capture_index",
                (record_id,),
            ).fetchall()
        return [StoredTemplate(r[0], int(r[1]), r[2], r[3], int(r[4]), bytes(r[5])) for r in rows]

    # -- the search index's feed (see sync.county.search.index)
    def _template_filter(self, pose: str, dim: int, model: str | None) -> tuple[str, list[Any]]:
        where, params = "t.pose = ? AND t.dim = ?", [pose, int(dim)]
        if model is not None:
            where, params = where + " AND t.model = ?", [*params, model]
        return where, params

    def templates_after(
        self, after: int, *, limit: int = 10_000, pose: str = "frontal", dim: int = 128, model: str | None = None
    ) -> list[SequencedTemplate]:
        """Templates of ``pose`` with a sequence number above ``after``, in sequence order."""
        where, params = self._template_filter(pose, dim, model)
        with self._lock, self._transaction(write=False) as cur:
            rows = self._exec(
                cur,
                "SELECT s.seq, t.record_id, t.model, t.vector FROM template_seq s JOIN templates t ON "
                f"t.record_id = s.record_id AND t.capture_index = s.capture_index WHERE s.seq > ? AND {where} "
                "ORDER BY s.seq LIMIT ?",
                [int(after), *params, int(limit)],
            ).fetchall()
        return [SequencedTemplate(int(r[0]), r[1], r[2], bytes(r[3])) for r in rows]

    def template_seqs(self, *, pose: str = "frontal", dim: int = 128, model: str | None = None) -> list[int]:
        """Every sequence number of a stored template of ``pose``, ascending."""
        where, params = self._template_filter(pose, dim, model)
        with self._lock, self._transaction(write=False) as cur:
            rows = self._exec(
                cur,
                "SELECT s.seq FROM template_seq s JOIN templates t ON t.record_id = s.record_id AND "
                f"t.capture_index = s.capture_index WHERE {where} ORDER BY s.seq",
                params,
            ).fetchall()
        return [int(r[0]) for r in rows]

    def templates_by_seq(self, seqs: Sequence[int]) -> list[SequencedTemplate]:
        """The stored templates behind ``seqs`` (unknown ones are left out)."""
        found: list[SequencedTemplate] = []
        for start in range(0, len(seqs), 500):
            chunk = [int(s) for s in seqs[start : start + 500]]
            with self._lock, self._transaction(write=False) as cur:
                rows = self._exec(
                    cur,
                    "SELECT s.seq, t.record_id, t.model, t.vector FROM template_seq s JOIN templates t ON "
                    "t.record_id = s.record_id AND t.capture_index = s.capture_index "
                    f"WHERE s.seq IN ({', '.join('?' * len(chunk))}) ORDER BY s.seq",
                    chunk,
                ).fetchall()
            found += [SequencedTemplate(int(r[0]), r[1], r[2], bytes(r[3])) for r in rows]
        return found

    def max_template_seq(self) -> int:
        with self._lock, self._transaction(write=False) as cur:
            row = self._exec(cur, "SELECT MAX(seq) FROM template_seq").fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    def record_template_seqs(self, record_id: str) -> list[int]:
        with self._lock, self._transaction(write=False) as cur:
            rows = self._exec(cur, "SELECT seq FROM template_seq WHERE record_id = ? ORDER BY seq",
                              (record_id,)).fetchall()
        return [int(r[0]) for r in rows]

    def template_owners(self, seqs: Sequence[int]) -> dict[int, TemplateOwner]:
        """The records still stored behind ``seqs``: a purged record's templates are simply absent."""
        if not seqs:
            return {}
        chunk = [int(s) for s in seqs]
        with self._lock, self._transaction(write=False) as cur:
            rows = self._exec(
                cur,
                "SELECT s.seq, r.record_id, t.pose, r.station, r.ori, r.booking_number, r.captured_at "
                "FROM template_seq s JOIN templates t ON t.record_id = s.record_id AND t.capture_index = "
                "s.capture_index JOIN records r ON r.record_id = s.record_id "
                f"WHERE s.seq IN ({', '.join('?' * len(chunk))})",
                chunk,
            ).fetchall()
        return {int(r[0]): TemplateOwner(int(r[0]), r[1], r[2], r[3], r[4], r[5], self._from_ts(r[6])) for r in rows}
