"""Stored record -> ANSI/NIST-ITL file: for ``booking-gallery export`` and for the export folder.

The county's tools pick transactions up from a folder, so the one promise that matters is that a file
named ``{record_id}.eft`` is either absent or complete: it is written under a hidden temporary name in
the same folder, flushed and fsynced, renamed into place (atomic on POSIX), and the folder is fsynced
so the rename itself survives power loss. A reader never sees half a file, whatever fails when.

Exports are made from what the gallery committed (the signed payload, re-verified with the station's
key), never from what arrived on the wire, so a file always matches the database.

When the gallery exports
------------------------
Never on the ack path. The receiver commits each record together with one ``export:<format>`` job per
configured format (``[export] formats``, default ``["ansi-nist"]``; one module per format in
:mod:`sync.county.gallery.exporters`), acks, and the work queue's thread (:mod:`sync.county.gallery.worker`)
makes the files: re-verified from the store, dropped atomically, retried with backoff while the folder
cannot be written, parked as failed (``booking-gallery status``) when the record can never make a valid
file. A marker per record (``.exported/{record_id}`` in the export folder, written after the rename)
keeps a job repeated after a crash from dropping a second copy after the county's pickup already took
and removed the first. All workers of a county should share one export folder, so they share the markers.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from sync.county.gallery.nist import NistConfig, NistConfigError, export_record
from sync.county.gallery.store import GalleryStore
from sync.protocol.files import fsync_dir, write_file_atomic
from sync.protocol.wire import DEFAULT_MAX_RECORD_BYTES, WireError, WireRecord, check_uuid7, verify_record

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

log = logging.getLogger(__name__)

SUFFIX = ".eft"
MARKER_DIR = ".exported"
FILE_MODE = 0o640  # criminal-justice information: owner writes, the pickup group reads, nobody else
STALE_TEMP_SECONDS = 3600.0


class ExportError(Exception):
    """An export that cannot be made, worded for county IT."""


class UnknownGalleryRecordError(ExportError):
    """No record with this id is stored."""


class ExportConfigError(ValueError):
    """An ``[export]`` table that cannot work."""


@dataclass(frozen=True)
class ExportSettings:
    """The ``[export]`` table of the gallery's TOML (the receiver's config file holds it too)::

        [export]
        folder = "/var/lib/booking-gallery/eft"   # where the receiver drops {record_id}.eft
        formats = ["ansi-nist"]                      # one module each in sync.county.gallery.exporters
        tot = "MUG"                                  # any NistConfig setting (sync.county.gallery.nist.config)
        dai = "WA0170000"
        timezone = "America/Los_Angeles"
        [export.type2_fields]
        booking_number = 701

    A relative ``folder`` is taken from the file's own folder, like the receiver's certificate paths.
    """

    folder: Path | None = None
    nist: NistConfig = field(default_factory=NistConfig)
    formats: tuple[str, ...] = ("ansi-nist",)

    @classmethod
    def from_mapping(cls, table: Mapping[str, Any], base: Path | None = None) -> ExportSettings:
        known = {f.name for f in fields(NistConfig)}
        unknown = set(table) - known - {"folder", "formats"}
        if unknown:
            raise ExportConfigError(f"[export]: unknown setting(s) {', '.join(sorted(unknown))}")
        folder = table.get("folder")
        if folder is not None and (not isinstance(folder, str) or not folder.strip()):
            raise ExportConfigError("[export] folder must be a path")
        formats = _formats(table.get("formats", ["ansi-nist"]))
        nist_settings = {k: v for k, v in table.items() if k not in ("folder", "formats")}
        if "type2_fields" in nist_settings:
            nist_settings["type2_fields"] = {**NistConfig().type2_fields, **nist_settings["type2_fields"]}
        try:
            nist = NistConfig(**nist_settings)
        except (NistConfigError, TypeError) as exc:
            raise ExportConfigError(f"[export]: {exc}") from None
        path = None if folder is None else (base / folder if base is not None else Path(folder))
        return cls(folder=path, nist=nist, formats=formats)

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str]) -> ExportSettings:
        """The ``[export]`` table of ``path``; defaults when the file has none."""
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ExportConfigError(f"cannot read {path}: {exc}") from None
        table = data.get("export", {})
        if not isinstance(table, Mapping):
            raise ExportConfigError(f"{path}: [export] must be a table")
        return cls.from_mapping(table, Path(path).resolve().parent)


def _formats(value: object) -> tuple[str, ...]:
    from sync.county.gallery.exporters import UnknownFormatError, check_format

    if not isinstance(value, list) or not value:
        raise ExportConfigError("[export] formats must be a non-empty list, e.g. [\"ansi-nist\"]")
    try:
        names = tuple(check_format(v) for v in value)
    except UnknownFormatError as exc:
        raise ExportConfigError(f"[export] formats: {exc}") from None
    if len(set(names)) != len(names):
        raise ExportConfigError("[export] formats names a format twice")
    return names


# ------------------------------------------------------------------------------------ from store
def load_record(store: GalleryStore, record_id: str) -> WireRecord:
    """The stored record, re-verified with its station's key (the key stays on file after a
    revocation, so records of revoked stations still export). A record that no longer verifies has
    been altered in the database: it is refused, never exported."""
    return load_verified(store, record_id)[0]


def load_verified(store: GalleryStore, record_id: str) -> tuple[WireRecord, bytes]:
    """:func:`load_record` and the signed payload it was verified from."""
    payload = store.get_payload(record_id)
    stored = store.get_record(record_id)
    if payload is None or stored is None:
        raise UnknownGalleryRecordError(f"no record {record_id} in the gallery database")
    device = store.get_device(stored.station)
    if device is None:
        raise ExportError(
            f"record {record_id}: its station {stored.station!r} is not registered, so it cannot be verified"
        )

    def lookup(kid: str) -> Any:
        return device.verify_key() if kid == device.station else None

    try:
        verified = verify_record(payload, lookup, max_bytes=max(len(payload), DEFAULT_MAX_RECORD_BYTES))
    except WireError as exc:
        raise ExportError(f"record {record_id} as stored does not verify ({exc.code}): {exc.message}") from None
    if verified.content_sha256 != stored.content_sha256:
        raise ExportError(f"record {record_id}: stored content hash does not match its payload")
    return verified.record, payload


def export_stored(store: GalleryStore, record_id: str, config: NistConfig | None = None) -> bytes:
    """:func:`~sync.county.gallery.nist.export_record` of a stored record."""
    return export_record(load_record(store, record_id), config)


def export_path(folder: str | os.PathLike[str], record_id: str) -> Path:
    """``{folder}/{record_id}.eft``; the id must be a canonical UUIDv7 (so it can never name a path
    outside the folder)."""
    try:
        check_uuid7(record_id)
    except WireError as exc:
        raise ExportError(f"{record_id!r} is not a record id: {exc.message}") from None
    return Path(folder) / f"{record_id}{SUFFIX}"


def _marker(folder: Path, record_id: str) -> Path:
    return folder / MARKER_DIR / record_id


def already_exported(folder: str | os.PathLike[str], record_id: str) -> bool:
    """True when ``{record_id}.eft`` is in the folder or was dropped there before (its marker)."""
    path = export_path(folder, record_id)
    return path.exists() or _marker(Path(folder), record_id).exists()


def drop_export(record: WireRecord, folder: str | os.PathLike[str], config: NistConfig | None = None) -> Path:
    """Export ``record`` into ``folder`` as ``{record_id}.eft``, atomically, then mark it exported.
    Raises :class:`~sync.county.gallery.nist.NistExportError` (nothing is written) when the record is not a
    valid transaction, ``OSError`` when the folder cannot be written. Dropping again rewrites the same
    bytes (the export is deterministic)."""
    target_folder = Path(folder)
    path = export_path(target_folder, record.record_id)
    data = export_record(record, config)
    target_folder.mkdir(parents=True, exist_ok=True, mode=0o750)
    write_file_atomic(path, data, FILE_MODE)
    markers = target_folder / MARKER_DIR
    markers.mkdir(exist_ok=True, mode=0o750)
    marker = _marker(target_folder, record.record_id)
    if not marker.exists():
        os.close(os.open(marker, os.O_CREAT | os.O_WRONLY, 0o640))
        fsync_dir(markers)
    return path


def remove_stale_temps(folder: str | os.PathLike[str], *, older_than: float = STALE_TEMP_SECONDS) -> int:
    """Delete temporary files that a crashed writer left behind (hidden ``.*.eft.*.tmp`` older than
    ``older_than`` seconds, so a live writer of another worker is never disturbed). Returns how many."""
    removed = 0
    cutoff = time.time() - older_than
    for tmp in Path(folder).glob(f".*{SUFFIX}.*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            if tmp.stat().st_mtime < cutoff:
                tmp.unlink()
                removed += 1
    return removed


def prepare_folder(folder: Path) -> None:
    """At a worker's start: make the folder and clear what a crashed writer left. A folder that cannot be
    made is no reason not to receive: records are still stored and acked, and their export jobs wait in
    the work queue (retried, shown by ``booking-gallery status``) until it can be written."""
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o750)
        stale = remove_stale_temps(folder)
    except OSError as exc:
        log.error("export folder %s cannot be used (%s): exports wait in the work queue until it can", folder, exc)
        return
    if stale:
        log.warning("removed %d unfinished export file(s) from %s", stale, folder)
