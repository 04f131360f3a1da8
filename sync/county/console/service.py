"""What the console's pages and its JSON API both answer: record lists and details, face searches, the fleet.

One ``ConsoleService`` per server. Each call opens the gallery store for itself (a handler runs in a thread
of the server's pool; a SQLite connection belongs to its thread) and closes it after. The vision stack for
probe photos and the search index are loaded once, on the first search, and shared under a lock each.

Every search needs a reason (a case or incident number, a warrant): it is written to the gallery's audit
log with who asked, the probe, and the candidates returned, before the answer leaves the server.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np

from sync.county.console.words import capture_words
from sync.county.gallery.export import ExportError, already_exported, load_record
from sync.county.gallery.fleet import fleet_report
from sync.county.gallery.store import GalleryRecord, GalleryStore, open_store
from sync.county.intake import IMPORT_STATION
from sync.county.search.engine import SearchEngineError
from sync.county.search.index import POSE, SearchIndex, open_index
from sync.county.search.settings import SearchSettings
from sync.protocol.wire import WireRecord

REASON_MIN, REASON_MAX = 4, 200
SEARCH_ACTION = "console_search"
VIEW_ACTION = "console_record_view"


class ServiceError(Exception):
    """A request the console cannot answer; ``status`` is the HTTP status, the message is for the user."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class RecordFilter:
    booking_number: str | None = None
    ori: str | None = None
    station: str | None = None
    operator: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def record_json(rec: GalleryRecord) -> dict[str, Any]:
    return {"record_id": rec.record_id, "station": rec.station, "county": rec.county, "ori": rec.ori,
            "booking_number": rec.booking_number, "operator": rec.operator,
            "captured_at": rec.captured_at.isoformat(), "received_at": rec.received_at.isoformat(),
            "created_at": rec.created_at.isoformat(), "capture_count": rec.capture_count}


def check_reason(reason: str | None) -> str:
    reason = " ".join((reason or "").split())
    if not REASON_MIN <= len(reason) <= REASON_MAX or not reason.isprintable():
        raise ServiceError(f"Give the reason for this search (a case or incident number): {REASON_MIN} to "
                           f"{REASON_MAX} printable characters.")
    return reason


class ConsoleService:
    def __init__(self, db_url: str, search: SearchSettings, *, export_folder: Path | None = None,
                 bundle_dir: Path | None = None) -> None:
        self.db_url = db_url
        self.search_settings = search
        self.export_folder = export_folder
        self.bundle_dir = bundle_dir
        self._prober: Any = None
        self._prober_lock = threading.Lock()
        self._index: SearchIndex | None = None
        self._index_lock = threading.Lock()

    @contextmanager
    def store(self) -> Iterator[GalleryStore]:
        store = open_store(self.db_url, create=False)
        try:
            yield store
        finally:
            store.close()

    # -- records
    def records(self, flt: RecordFilter, *, limit: int = 100, offset: int = 0) -> list[dict[str, Any]]:
        with self.store() as store:
            rows = store.find_records(booking_number=flt.booking_number, ori=flt.ori, station=flt.station,
                                      operator=flt.operator, since=flt.since, until=flt.until,
                                      limit=limit, offset=offset)
        return [record_json(r) for r in rows]

    def record(self, record_id: str, *, actor: str | None = None) -> dict[str, Any]:
        """One record: its columns, each capture in words (quality, override), and its delivery history.
        ``actor``: who is looking; the view is written to the audit log (``console_record_view``)."""
        with self.store() as store:
            rec = store.get_record(record_id)
            if rec is None:
                raise ServiceError(f"No record {record_id} is stored in this gallery.", 404)
            try:
                wire = load_record(store, record_id)
            except ExportError as exc:
                raise ServiceError(f"Record {record_id} cannot be shown: {exc}", 409) from None
            rejections = store.rejections_of(record_id)
            audit = [a for a in store.audit_of(record_id) if not a.action.startswith("console_")]
            if actor is not None:
                store.audit(actor, VIEW_ACTION, record_id, {})
        captures = [capture_words(i, c) for i, c in enumerate(wire.captures)]
        history = [{"at": rec.created_at.isoformat(), "event": "sealed", "text": f"Sealed at station {rec.station}"},
                   {"at": rec.received_at.isoformat(), "event": "received",
                    "text": "Received, signature verified and stored by the gallery"}]
        history += [{"at": r.received_at.isoformat(), "event": "refused",
                     "text": f"A delivery was refused ({r.reason}): {r.detail}"} for r in rejections]
        history += [{"at": a.at.isoformat(), "event": a.action, "text": f"{a.action} by {a.actor}"} for a in audit]
        if self.export_folder is not None and already_exported(self.export_folder, record_id):
            history.append({"at": None, "event": "exported", "text": "Exported as an ANSI/NIST-ITL file"})
        return {**record_json(rec), "captures": captures, "history": history}

    def _stored_wire(self, record_id: str) -> WireRecord:
        """The record as stored and re-verified, for its photos: 404 when there is none, 409 when it no
        longer verifies (altered in the database)."""
        with self.store() as store:
            if store.get_record(record_id) is None:
                raise ServiceError(f"No record {record_id} is stored in this gallery.", 404)
            try:
                return load_record(store, record_id)
            except ExportError as exc:
                raise ServiceError(str(exc), 409) from None

    def photo(self, record_id: str, index: int) -> bytes:
        wire = self._stored_wire(record_id)
        if not 0 <= index < len(wire.captures):
            raise ServiceError(f"Record {record_id} has no photo {index}.", 404)
        return wire.captures[index].jpeg

    def face(self, record_id: str) -> bytes:
        """The record's first frontal photo (else its first photo): what a candidate tile shows."""
        wire = self._stored_wire(record_id)
        frontal = [c for c in wire.captures if c.pose == POSE]
        return (frontal or list(wire.captures))[0].jpeg

    # -- search
    def _probe_vector(self, image: bytes) -> tuple[np.ndarray, str]:
        from appliance.imageio import ImageError, decode_image
        from sync.county.search.probe import ProbeError, Prober, ProbeSetupError

        with self._prober_lock:
            if self._prober is None:
                try:
                    self._prober = Prober(self.bundle_dir)
                except ProbeSetupError as exc:
                    raise ServiceError(f"The server cannot compute probe templates: {exc}", 503) from None
            try:
                picture = decode_image(image)
            except ImageError as exc:
                raise ServiceError(f"The uploaded file is not a photo this server can read: {exc}") from None
            try:
                return self._prober.template_of(picture, "the uploaded photo"), self._prober.model
            except ProbeError as exc:
                raise ServiceError(str(exc)) from None

    def search(self, *, actor: str, reason: str | None, image: bytes | None = None, record_id: str | None = None,
               top: int = 10, threshold: float | None = None) -> dict[str, Any]:
        """The CLI's search JSON (probe, candidates, searched, took_ms), after auditing who asked and why."""
        reason = check_reason(reason)
        if (image is None) == (record_id is None):
            raise ServiceError("Give exactly one of a photo or a record to search with.")
        if not 1 <= top <= 100:
            raise ServiceError("top must be 1 to 100 candidates.")
        start = time.perf_counter()
        probe: dict[str, Any]
        if image is not None:
            vector, model = self._probe_vector(image)
            probe = {"image": "upload", "bytes": len(image), "model": model}
        else:
            probe = {"record_id": record_id}
        with self.store() as store:
            if record_id is not None:
                vector = self._record_vector(store, record_id)
            with self._index_lock:
                index = self._open_index()
                try:
                    index.catch_up(store)
                    result = index.search(store, vector, k=top, threshold=threshold, exclude_record=record_id)
                except SearchEngineError as exc:
                    self._drop_index()
                    raise ServiceError(f"The search index cannot be used: {exc}", 503) from None
            candidates = [c.to_json() for c in result.candidates]
            store.audit(actor, SEARCH_ACTION, record_id or "upload", {
                "reason": reason, "probe": probe, "top": top,
                "candidates": [c["record_id"] for c in candidates]})
        probe["embed_ms"] = round((time.perf_counter() - start) * 1000 - result.took_ms, 1)
        return {"probe": probe, "candidates": candidates, "searched": result.searched,
                "took_ms": round(result.took_ms, 3)}

    def _open_index(self) -> SearchIndex:
        """The index, opened on the first search and kept (read-only: the gallery worker owns the saved
        file); each search first catches it up with the store, so nothing stored since is missed."""
        if self._index is None:
            try:
                self._index = open_index(self.search_settings, self.db_url, read_only=True)
            except SearchEngineError as exc:
                raise ServiceError(f"The search index cannot be used: {exc}", 503) from None
        return self._index

    def _drop_index(self) -> None:
        if self._index is not None:
            self._index.close()
            self._index = None

    def close(self) -> None:
        with self._index_lock:
            self._drop_index()

    @staticmethod
    def _record_vector(store: GalleryStore, record_id: str) -> np.ndarray:
        if store.get_record(record_id) is None:
            raise ServiceError(f"No record {record_id} is stored in this gallery.", 404)
        for t in store.templates(record_id):
            if t.pose == POSE and t.dim == 128:
                return np.frombuffer(t.vector, dtype="<f4").astype(np.float32)
        raise ServiceError(f"Record {record_id} has no frontal template to search with.")

    # -- fleet and audit
    def fleet(self) -> list[dict[str, Any]]:
        """``booking-gallery fleet --json`` rows (less the import pseudo-station, which never reports) plus
        ``disk_text``: the station's free disk and floor in words, or "unknown" for a station that has not
        reported them (an older release, or one never heard from)."""
        with self.store() as store:
            return [{**h.as_dict(), "disk_text": h.disk_text()} for h in fleet_report(store)
                    if h.station != IMPORT_STATION]

    def audit(self, *, action: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        with self.store() as store:
            entries = store.list_audit(action=action, limit=limit)
        return [{"id": e.id, "at": e.at.isoformat(), "actor": e.actor, "action": e.action, "subject": e.subject,
                 "details": e.details} for e in entries]
