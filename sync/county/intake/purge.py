"""A sealed or expunged booking leaves the county: gallery store, search index, export folder, station.

Order, so that a failure never leaves the booking half gone without saying so:

1. the purge commands for the stations that captured it are signed first (a missing county key stops
   everything before anything is deleted);
2. one store transaction deletes the records and their templates, leaves a tombstone per record id
   (a station that still holds the booking in its outbox cannot bring it back: the receiver refuses it
   with reason ``purged``) and writes the audit row;
3. the search index forgets the records' templates (just before the store deletes them: the index finds
   them by the store's template sequence numbers), and ``{record_id}.eft`` with its export marker leaves
   the export folder. A search never returns a record the store no longer holds in any case (every hit
   is checked against the store), and a running worker drops the templates from its own copy of the
   index with its next record (it reconciles when the store's purge count moves);
4. the commands are published (or written to files). A repeated purge of the same booking finds the
   tombstones and signs fresh commands, so a station that was offline can be sent them again.

Imported records (station ``county-import``) have no station to tell.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from os import PathLike
from pathlib import Path

from sync.county.gallery.devices import DEFAULT_COMMAND_LIFETIME, SignedCommand, load_command_key, sign_commands
from sync.county.gallery.export import MARKER_DIR, export_path
from sync.county.gallery.store import GalleryStore
from sync.county.intake import IMPORT_STATION
from sync.county.intake.sources import RowError, check_booking
from sync.county.search.index import SearchIndex


class PurgeError(ValueError):
    """The purge cannot be done; nothing was deleted. The message says why."""


@dataclass
class PurgeResult:
    ori: str
    booking_number: str
    record_ids: list[str]
    removed: list[str]
    exports_removed: list[Path] = field(default_factory=list)
    commands: list[SignedCommand] = field(default_factory=list)


def _remove_export(folder: Path, record_id: str) -> list[Path]:
    gone = []
    for path in (export_path(folder, record_id), folder / MARKER_DIR / record_id):
        try:
            path.unlink()
            gone.append(path)
        except FileNotFoundError:
            pass
    return gone


def purge_booking(store: GalleryStore, ori: str, booking_number: str, reason: str, *, actor: str,
                  ca_dir: str | PathLike[str] | None, export_folder: Path | None = None,
                  index: SearchIndex | None = None, lifetime: timedelta = DEFAULT_COMMAND_LIFETIME,
                  can_deliver: bool = True) -> PurgeResult:
    """Purge one booking everywhere the county holds it (see the module docstring); ``index`` is the
    gallery's search index, when it has one; ``can_deliver`` False refuses a booking a station captured
    (its command would have nowhere to go)."""
    try:
        booking_number, ori = check_booking(booking_number, ori)
    except RowError as exc:
        raise PurgeError(str(exc)) from None
    if not reason.strip():
        raise PurgeError("give the reason for the purge (--reason), e.g. the court order")
    stored = store.find_booking(ori, booking_number)
    targets = {r.record_id: r.station for r in stored} | dict(store.purged_booking(ori, booking_number))
    if not targets:
        raise PurgeError(f"no booking {booking_number} of {ori} in the gallery (stored or purged)")
    by_station: dict[str, list[str]] = {}
    for record_id, station in sorted(targets.items()):
        if station != IMPORT_STATION:
            by_station.setdefault(station, []).append(record_id)
    commands: list[SignedCommand] = []
    if by_station and not can_deliver:
        raise PurgeError(f"the booking was captured by {', '.join(sorted(by_station))}: give --config (publish its "
                         "purge command now) or --out DIR (write it)")
    if by_station:
        if ca_dir is None:
            raise PurgeError("the booking was captured by a station: give --ca-dir (the county key signs the "
                             "station's purge command)")
        ca, key = load_command_key(ca_dir)
        for station, ids in by_station.items():
            commands += sign_commands(ca, key, station, "purge",
                                      [{"record_id": i, "reason": reason.strip()[:256]} for i in ids],
                                      lifetime=lifetime)
    if index is not None:
        for rec in stored:
            index.remove_record(store, rec.record_id)
    removed = store.purge_records(stored, actor=actor, reason=reason.strip()) if stored else []
    result = PurgeResult(ori, booking_number, sorted(targets), removed, commands=commands)
    for record_id in result.record_ids:
        if export_folder is not None:
            result.exports_removed += _remove_export(Path(export_folder), record_id)
    return result
