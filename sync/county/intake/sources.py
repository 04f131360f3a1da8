"""Where legacy mug shots come from: a CSV manifest or ANSI/NIST-ITL files, read into :class:`ImportItem`.

Each source yields one item per photo and one :class:`Refusal` per row or image it cannot use, named so
county IT can fix that row (``people.csv line 7: ori 'WA123' is not a 9-character NCIC ORI``); the rest
still import. A file that cannot be read at all (no such file, no header, a missing column) is
:class:`SourceError`: nothing of it is imported.

Manifest: UTF-8 CSV with the header ``image,booking_number,ori,captured_at`` and an optional ``pose``
(``F``, ``L``, ``R``; default ``F``); ``image`` is relative to the CSV's folder; ``captured_at`` is ISO 8601,
a date alone meaning midnight, and a time without a zone is taken as UTC (legacy exports rarely say).

ANSI/NIST-ITL (traditional encoding): every Type-10 record with IMT ``FACE`` and a JPEG image (CGA
``JPEGB``/``JPEGL``); the pose from 10.020 POS (``F``, ``L``, ``R``; absent means ``F``); the ORI from 1.008;
the booking number and capture time from the Type-2 fields our own export writes (2.701 BKN, 2.704 CDT),
and failing CDT the photo date 10.005 PHD (midnight UTC).
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from sync.county.gallery.nist import NistCodecMissing
from sync.county.gallery.nist.codec import decode_transaction
from sync.county.gallery.nist.codes import TYPE2_DEFAULT_FIELDS
from sync.county.gallery.nist.model import NistFormatError, NistRecord
from sync.protocol import record as rules

REQUIRED_COLUMNS = ("image", "booking_number", "ori", "captured_at")
POSE_CODES = {"F": "frontal", "L": "left_profile", "R": "right_profile"}
MAX_MANIFEST_ROWS = 10_000_000


class SourceError(ValueError):
    """A source file that cannot be read at all; the message names it."""


@dataclass(frozen=True)
class ImportItem:
    """One photo to import. ``image`` holds the bytes when the source carried them (ANSI/NIST-ITL), else
    the photo is read from ``path`` by the worker that embeds it."""

    source: str
    booking_number: str
    ori: str
    captured_at: datetime
    pose: str
    path: Path | None = None
    image: bytes | None = None


@dataclass(frozen=True)
class Refusal:
    """A row or photo that was not imported, and why."""

    source: str
    reason: str


class RowError(ValueError):
    """One bad value in one row."""


def parse_time(text: str) -> datetime:
    """ISO 8601 date or date-time, UTC when no zone is given."""
    value = text.strip()
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise RowError(f"captured_at {value[:40]!r} is not an ISO 8601 date or time") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)
    return parsed.astimezone(timezone.utc)


def check_booking(booking_number: str, ori: str) -> tuple[str, str]:
    """The booking number and ORI, or :class:`RowError` naming the rule they break."""
    booking_number, ori = booking_number.strip(), ori.strip()
    if not booking_number or not rules.BOOKING_NUMBER.pattern.fullmatch(booking_number):  # type: ignore[union-attr]
        raise RowError(f"booking_number {booking_number[:40]!r} must be 1-32 of A-Z a-z 0-9 - _ / . and space")
    if not rules.AGENCY_ORI.pattern.fullmatch(ori):  # type: ignore[union-attr]
        raise RowError(f"ori {ori[:20]!r} is not a 9-character NCIC ORI (2-letter state code, then A-Z, 0-9)")
    return booking_number, ori


def pose_of(code: str) -> str:
    value = (code or "F").strip().upper() or "F"
    if value not in POSE_CODES:
        raise RowError(f"pose {code[:10]!r} is not F, L or R")
    return POSE_CODES[value]


def _manifest_row(row: dict[str, str | None], folder: Path, where: str) -> ImportItem:
    if None in row or any(row.get(c) is None for c in REQUIRED_COLUMNS):
        raise RowError("the row does not have one value per column")
    image = str(row["image"]).strip()
    if not image:
        raise RowError("image is empty")
    booking_number, ori = check_booking(str(row["booking_number"]), str(row["ori"]))
    path = folder / image
    if not path.is_file():
        raise RowError(f"image {image[:200]!r} is not a file")
    return ImportItem(where, booking_number, ori, parse_time(str(row["captured_at"])), pose_of(row.get("pose") or "F"),
                      path=path)


def read_manifest(path: Path) -> tuple[list[ImportItem], list[Refusal]]:
    """The usable rows of a manifest and a refusal for every other row."""
    try:
        handle = path.open(newline="", encoding="utf-8-sig")
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None
    items: list[ImportItem] = []
    refused: list[Refusal] = []
    with handle:
        try:
            reader = csv.DictReader(handle)
            header = [h.strip() for h in reader.fieldnames or []]
            missing = [c for c in REQUIRED_COLUMNS if c not in header]
            if missing:
                raise SourceError(f"{path}: the header lacks {', '.join(missing)} (needs {','.join(REQUIRED_COLUMNS)}"
                                  "[,pose])")
            reader.fieldnames = header
            for row in reader:
                where = f"{path.name} line {reader.line_num}"
                if reader.line_num > MAX_MANIFEST_ROWS:
                    raise SourceError(f"{path}: more than {MAX_MANIFEST_ROWS} rows; split the manifest")
                try:
                    items.append(_manifest_row(row, path.parent, where))
                except RowError as exc:
                    refused.append(Refusal(where, str(exc)))
        except (UnicodeDecodeError, csv.Error) as exc:
            raise SourceError(f"{path} is not a readable UTF-8 CSV: {exc}") from None
    return items, refused


# ---------------------------------------------------------------------------------------- ANSI/NIST-ITL
def _nist_time(type2: NistRecord | None, type10: NistRecord) -> datetime:
    cdt = type2.text(TYPE2_DEFAULT_FIELDS["captured_at"]) if type2 is not None else None
    if cdt:
        try:
            return datetime.strptime(cdt, "%Y%m%d%H%M%SZ").replace(tzinfo=timezone.utc)
        except ValueError:
            pass
    phd = type10.text(5)
    try:
        return datetime.strptime(phd or "", "%Y%m%d").replace(tzinfo=timezone.utc)
    except ValueError:
        raise RowError(f"no capture time: 2.704 CDT absent and 10.005 PHD {str(phd)[:12]!r} is not YYYYMMDD") from None


def _nist_items(records: list[NistRecord], name: str) -> Iterator[ImportItem | Refusal]:
    type1 = next((r for r in records if r.type == 1), None)
    type2 = next((r for r in records if r.type == 2), None)
    ori = (type1.text(8) if type1 is not None else None) or ""
    booking = (type2.text(TYPE2_DEFAULT_FIELDS["booking_number"]) if type2 is not None else None) or ""
    for rec in records:
        if rec.type != 10:
            continue
        where = f"{name} Type-10 IDC {rec.idc}"
        if (rec.text(3) or "").upper() != "FACE":
            continue  # scars, marks and tattoos are not mug shots
        try:
            booking_number, checked_ori = check_booking(booking, ori)
            if (rec.text(11) or "").upper() not in ("JPEGB", "JPEGL"):
                raise RowError(f"image compression {str(rec.text(11))[:10]!r} is not JPEG")
            image = rec.fields.get(999)
            if not isinstance(image, bytes) or not image:
                raise RowError("no image data (10.999)")
            yield ImportItem(where, booking_number, checked_ori, _nist_time(type2, rec), pose_of(rec.text(20) or "F"),
                             image=image)
        except RowError as exc:
            yield Refusal(where, str(exc))


def read_nist(path: Path) -> tuple[list[ImportItem], list[Refusal]]:
    """The face photos of one ANSI/NIST-ITL file."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror or exc}") from None
    try:
        records = decode_transaction(data)
    except (NistFormatError, NistCodecMissing) as exc:
        raise SourceError(f"{path}: {exc}") from None
    items: list[ImportItem] = []
    refused: list[Refusal] = []
    for entry in _nist_items(records, path.name):
        (items if isinstance(entry, ImportItem) else refused).append(entry)  # type: ignore[arg-type]
    if not items and not refused:
        refused.append(Refusal(path.name, "no Type-10 FACE image in the file"))
    return items, refused


def read_sources(paths: list[Path]) -> tuple[list[ImportItem], list[Refusal]]:
    """Every item and refusal of ``paths``: ``.csv`` files are manifests, anything else ANSI/NIST-ITL."""
    items: list[ImportItem] = []
    refused: list[Refusal] = []
    for path in paths:
        got, bad = read_manifest(path) if path.suffix.lower() == ".csv" else read_nist(path)
        items += got
        refused += bad
    return items, refused
