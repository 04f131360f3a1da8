"""Legacy mug shots into the gallery: one signed record per photo, idempotent, resumable, on every core.

* **Record id from content.** A record's id is a UUIDv7 whose time is the capture time and whose other
  74 bits come from SHA-256 of (ORI, booking number, pose, SHA-256 of the photo as the source holds it).
  The same photo of the same booking always gets the same id, so a second import finds it stored and
  counts it a duplicate without embedding it again, and so does a re-run after a kill (each record is
  committed on its own as soon as its template is made: a kill loses at most the photos in flight).
* **Content from input only.** ``created_at`` is the capture time and the quality map says only that
  the photo was imported, so two importers racing on the same photo sign the same content and the store
  answers ``duplicate`` to the second, not a conflict.
* **Signed by the county** under :data:`~sync.county.intake.IMPORT_STATION` (see
  :mod:`sync.county.intake.identity`), verified like any record before it is stored.
* **Every core.** Photos are embedded in a process pool (one process per core by default); the parent
  reads the sources, signs and commits (SQLite has one writer anyway) and keeps at most a few photos
  per worker in flight, so memory stays flat on a large manifest.
"""

from __future__ import annotations

import hashlib
import itertools
import multiprocessing
import os
import re
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from datetime import datetime, timezone

from sync.county.gallery.store import GalleryStore, GalleryStoreError, RecordPurgedError
from sync.county.intake import IMPORT_STATION
from sync.county.intake.embedding import Photo, PhotoRefused, embed_item, init_worker, source_sha256
from sync.county.intake.identity import ImportSigner, ensure_registered, verify_key_lookup
from sync.county.intake.sources import ImportItem, Refusal
from sync.protocol.wire import (
    WireBooking,
    WireCapture,
    WireError,
    WireRecord,
    WireTemplate,
    encode_record,
    verify_record,
)

IN_FLIGHT_PER_WORKER = 4


class ImportAborted(RuntimeError):
    """The import stopped (a worker process died); every record committed so far is kept."""
DEFAULT_OPERATOR = "legacy-import"


@dataclass
class ImportSummary:
    """What one import run did; ``refused`` names each row or photo left out and why."""

    imported: int = 0
    duplicates: int = 0
    refused: list[Refusal] = field(default_factory=list)
    record_ids: list[str] = field(default_factory=list)
    seconds: float = 0.0
    embedded: int = 0
    workers: int = 1

    def as_dict(self) -> dict[str, object]:
        per_core = self.embedded / self.seconds / self.workers if self.seconds > 0 else 0.0
        return {
            "imported": self.imported,
            "duplicates": self.duplicates,
            "refused": [{"source": r.source, "reason": r.reason} for r in self.refused],
            "seconds": round(self.seconds, 3),
            "workers": self.workers,
            "templates_per_second_per_core": round(per_core, 3),
        }


def import_record_id(item: ImportItem, photo_sha256: bytes) -> str:
    """The deterministic UUIDv7 of an imported photo (see the module docstring)."""
    digest = hashlib.sha256(
        b"\0".join((item.ori.encode(), item.booking_number.encode(), item.pose.encode(), photo_sha256))
    ).digest()
    ms = max(0, int(item.captured_at.timestamp() * 1000)) & ((1 << 48) - 1)
    bits = int.from_bytes(digest[:10], "big")
    value = ms << 80 | 0x7 << 76 | (bits >> 68 & 0xFFF) << 64 | 0b10 << 62 | (bits & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def build_record(item: ImportItem, record_id: str, photo: Photo, signer: ImportSigner, operator: str) -> WireRecord:
    template = None
    if photo.template is not None and photo.model is not None:
        template = WireTemplate(model=photo.model, dim=len(photo.template) // 4, values=photo.template)
    capture = WireCapture.build(item.pose, photo.jpeg, photo.width, photo.height, quality={"imported": True},
                                template=template)
    return WireRecord(
        record_id=record_id,
        station=IMPORT_STATION,
        county=signer.county,
        booking=WireBooking(item.ori, item.booking_number, operator, item.captured_at),
        captures=(capture,),
        created_at=item.captured_at,
    )


def _result(future: Future[Photo | PhotoRefused]) -> Photo | PhotoRefused:
    """The worker's answer; a photo that made the vision code fail is refused by name, not the whole import."""
    try:
        return future.result()
    except BrokenProcessPool:
        raise
    except Exception as exc:  # e.g. an OpenCV error on a strange image: one row, not the run
        return PhotoRefused(f"could not be processed ({type(exc).__name__}: {str(exc)[:200]})")


class Importer:
    """Imports items into ``store``; ``progress(n)`` is called as items finish (a progress bar)."""

    def __init__(self, store: GalleryStore, signer: ImportSigner, *, bundle_dir: str | None = None,
                 workers: int | None = None, operator: str = DEFAULT_OPERATOR,
                 progress: Callable[[int], None] | None = None) -> None:
        self.store = store
        self.signer = signer
        self.bundle_dir = bundle_dir
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.operator = operator
        self.progress = progress or (lambda n: None)
        self.device = ensure_registered(store, signer)

    def run(self, items: Iterable[ImportItem], refused: Iterable[Refusal] = ()) -> ImportSummary:
        started = time.monotonic()
        summary = ImportSummary(refused=list(refused), workers=self.workers)
        todo = self._not_stored(items, summary)  # lazily: hashing overlaps the pool's start and work
        first = next(todo, None)
        if first is not None:
            try:
                self._embed_all(itertools.chain([first], todo), summary)
            except BrokenProcessPool:
                raise ImportAborted(
                    f"a worker process died (out of memory?) after {summary.imported} new record(s); they are kept: "
                    "run the same import again to go on (fewer --jobs if memory is short)") from None
        summary.seconds = time.monotonic() - started
        summary.refused.sort(key=lambda r: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", r.source)])
        self.store.audit(self.operator, "import", IMPORT_STATION, {
            "imported": summary.imported, "duplicates": summary.duplicates, "refused": len(summary.refused),
        })
        return summary

    def _not_stored(self, items: Iterable[ImportItem], summary: ImportSummary) -> Iterator[tuple[ImportItem, str]]:
        """Items whose record is not stored yet (each photo once), with their record ids."""
        seen: set[str] = set()
        for item in items:
            try:
                record_id = import_record_id(item, source_sha256(item))
            except OSError as exc:
                summary.refused.append(Refusal(item.source, f"cannot read the image: {exc.strerror or exc}"))
                self.progress(1)
                continue
            if record_id in seen or self.store.get_record(record_id) is not None:
                summary.duplicates += 1
                self.progress(1)
            elif self.store.is_purged(record_id):
                summary.refused.append(Refusal(item.source, "this photo of this booking was purged; not imported"))
                self.progress(1)
            else:
                yield item, record_id
            seen.add(record_id)

    def _embed_all(self, todo: Iterator[tuple[ImportItem, str]], summary: ImportSummary) -> None:
        context = multiprocessing.get_context("spawn")  # no models or database handles cross a fork
        limit = self.workers * IN_FLIGHT_PER_WORKER
        queue = todo
        with ProcessPoolExecutor(self.workers, mp_context=context, initializer=init_worker,
                                 initargs=(self.bundle_dir,)) as pool:
            pending: dict[Future[Photo | PhotoRefused], tuple[ImportItem, str]] = {}
            while True:
                while len(pending) < limit and (nxt := next(queue, None)) is not None:
                    pending[pool.submit(embed_item, nxt[0])] = nxt
                if not pending:
                    break
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for future in done:
                    item, record_id = pending.pop(future)
                    self._store_one(item, record_id, _result(future), summary)
                    self.progress(1)

    def _store_one(self, item: ImportItem, record_id: str, result: Photo | PhotoRefused,
                   summary: ImportSummary) -> None:
        if isinstance(result, PhotoRefused):
            summary.refused.append(Refusal(item.source, result.reason))
            return
        summary.embedded += 1
        try:
            payload = encode_record(build_record(item, record_id, result, self.signer, self.operator), self.signer.key)
            verified = verify_record(payload, verify_key_lookup(self.device))
            status = self.store.insert_record(verified, payload, received_at=datetime.now(timezone.utc))
        except WireError as exc:
            summary.refused.append(Refusal(item.source, f"not a valid record: {exc.message}"))
            return
        except RecordPurgedError:
            summary.refused.append(Refusal(item.source, "this photo of this booking was purged; not imported"))
            return
        except GalleryStoreError as exc:
            summary.refused.append(Refusal(item.source, str(exc)))
            return
        if status == "stored":
            summary.imported += 1
            summary.record_ids.append(record_id)
        else:
            summary.duplicates += 1
