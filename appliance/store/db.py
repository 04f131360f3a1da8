"""The station database: one SQLite file holding bookings, captures, the outbox, the audit log, alarms.

It stays one module (over 500 lines) because `Store` is one object over one SQLite connection, and its
transactions are easiest to check for the promises below when they are all in view.

`Store` is the one object the rest of the appliance uses. Its promises:

* **A saved booking is safe.** `Store.save_booking` writes the booking, its captures and its outbox row
  (plus the audit entries) in one ``BEGIN IMMEDIATE`` transaction and returns only after ``COMMIT``.
  With ``journal_mode=WAL`` and ``synchronous=FULL`` the commit is on disk when it returns, so a kill
  or a power cut either keeps the whole record or none of it. The UI says "saved" only after it returns.
* **Nothing undelivered is dropped.** A full disk or a full queue refuses *new* bookings with a clear
  error and an alarm; nothing is ever deleted to make room. Images are purged only after the gallery
  acked them (`purge_delivered_images`) or on an explicit, audited purge order (`purge_booking`).
* **At rest, images and templates are encrypted** (AES-256-GCM, key file outside the database, see
  `appliance.store.crypto`), bound to their record, pose and the record's metadata, so a changed byte
  anywhere in the record, or the wrong key, fails loudly on read. Deleted rows are overwritten
  (``secure_delete=ON``).

One `Store` (one SQLite connection) per thread; several processes may open the same file at once (the
officer UI, the sync agent, the scheduler, the command line): WAL lets readers run beside the one writer
and writers wait for each other (busy timeout).
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import struct
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from appliance.store import alarms, audit, outbox, schema
from appliance.store.clock import from_text, to_text, utc_now
from appliance.store.crypto import BlobCipher, create_key_file, load_key
from appliance.store.errors import (
    AmbiguousBookingError,
    CorruptDatabaseError,
    DiskFullError,
    DuplicateRecordError,
    QueueFullError,
    RecordIntegrityError,
    RecordPurgedError,
    StationStoreError,
    StoreKeyFileError,
    UnknownStationRecordError,
    ValidationError,
    WrongKeyError,
)
from appliance.store.records import (
    Booking,
    Capture,
    check_booking_number,
    check_captures,
    check_ori,
    check_record_id,
    is_record_id,
    new_record_id,
)
from appliance.store.space import booking_write_bytes, disk_full_error, ensure_space, is_disk_full
from appliance.store.transactions import read_transaction, write_transaction

DB_FILE = "station.db"
KEY_FILE = Path("keys") / "store.key"
DEFAULT_FLOOR_BYTES = 512 * 1024 * 1024
"""Free disk kept for delivering what is queued; below it new bookings are refused."""

BUSY_TIMEOUT_SECONDS = 30.0
WAL_SIZE_LIMIT = 16 * 1024 * 1024
#: Page size of a new database: a 1 MB photo is 64 overflow pages instead of 256, so the sync agent reads a
#: record back (and a booking is written) with a quarter of the page reads and system calls.
PAGE_SIZE = 16384
SQLITE_CORRUPT = 11
SQLITE_NOTADB = 26


@dataclass(frozen=True)
class StationRecord:
    """A record read back: the booking, its captures (decrypted, sha256 verified) and its outbox row."""

    record_id: str
    booking: Booking
    captures: list[Capture]
    outbox: outbox.OutboxEntry
    created_at: datetime


@dataclass(frozen=True)
class PurgeResult:
    """What a purge removed: the record ids and the delivery state each was in (empty if nothing)."""

    target: str
    record_ids: list[str] = field(default_factory=list)
    states: dict[str, str] = field(default_factory=dict)


def data_paths(data_dir: Path | str) -> tuple[Path, Path]:
    """The database file and key file of a data directory: ``station.db`` and ``keys/store.key``."""
    root = Path(data_dir)
    return root / DB_FILE, root / KEY_FILE


def is_corruption(exc: BaseException) -> bool:
    """True if SQLite says the file is damaged or is not a database at all."""
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    if code is not None:
        return code & 0xFF in (SQLITE_CORRUPT, SQLITE_NOTADB)
    text = str(exc)
    return "file is not a database" in text or "malformed" in text


def _corrupt(db_path: Path, exc: BaseException) -> CorruptDatabaseError:
    return CorruptDatabaseError(
        f"database {db_path} is damaged or is not a booking-station database ({exc}). Nothing was "
        f"changed. Keep the file (it may still hold undelivered records) and call county IT to recover "
        f"it or restore it from backup")


def connect(db_path: Path | str) -> sqlite3.Connection:
    """Open (creating if needed) the database with the store's settings and an up-to-date schema.

    * ``journal_mode=WAL`` + ``synchronous=FULL``: every commit is fsynced before it returns, so a
      committed booking survives a power cut, not only a killed process; readers never block the writer.
    * ``secure_delete=ON``: deleted content is overwritten with zeros, not left in free pages.
    * ``foreign_keys=ON``: captures and outbox rows cannot outlive their booking.
    * ``trusted_schema=OFF``: the schema cannot call application functions if the file was tampered with.
    * ``isolation_level=None``: transactions are only the ones `appliance.store.transactions` opens.

    A new database file is created with mode 0600 (SQLite gives its WAL and shared-memory files the
    same mode): booking numbers and ORIs are criminal justice information even without the images.
    """
    db_path = Path(db_path)
    if not db_path.parent.is_dir():
        raise StationStoreError(f"directory {db_path.parent} for the database does not exist")
    _create_private(db_path)
    try:
        conn = sqlite3.connect(str(db_path), isolation_level=None, timeout=BUSY_TIMEOUT_SECONDS)
    except sqlite3.Error as exc:
        raise StationStoreError(f"cannot open database {db_path}: {exc}") from None
    try:
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA secure_delete = ON")
        conn.execute("PRAGMA trusted_schema = OFF")
        conn.execute(f"PRAGMA page_size = {PAGE_SIZE}")  # a new file only; an existing one keeps its size
        mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
        if str(mode).lower() != "wal":
            raise StationStoreError(f"database {db_path} cannot use write-ahead logging (journal mode {mode}); "
                                    f"is it on a network or read-only filesystem?")
        conn.execute("PRAGMA synchronous = FULL")
        conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT}")
        schema.apply(conn)
    except sqlite3.Error as exc:
        conn.close()
        if is_corruption(exc):
            raise _corrupt(db_path, exc) from None
        if is_disk_full(exc):
            raise disk_full_error(db_path.parent, 0, "Database not opened") from None
        raise StationStoreError(f"cannot open database {db_path}: {exc}") from None
    except BaseException:
        conn.close()
        raise
    return conn


def _create_private(db_path: Path) -> None:
    """Create an empty database file readable by its owner only, unless it exists already."""
    try:
        fd = os.open(db_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    except FileExistsError:
        return
    except OSError as exc:
        raise StationStoreError(f"cannot create database {db_path}: {exc.strerror or exc}") from None
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def _pack_template(values: Sequence[float]) -> bytes:
    return struct.pack(f"<{len(values)}d", *values)


def _unpack_template(blob: bytes, dim: int) -> list[float]:
    return list(struct.unpack(f"<{dim}d", blob))


_BOOKING_FIELDS = ("agency_ori", "booking_number", "operator_id", "captured_at", "station_id")
_CAPTURE_FIELDS = ("seq", "pose", "smt_description", "width", "height", "image_bytes", "sha256", "quality",
                   "template_model", "template_dim", "override_reason", "operator_id")


def _binding(record_id: str, booking_row: dict[str, Any], capture_row: dict[str, Any]) -> bytes:
    """Digest of a capture's plaintext metadata and its booking's, bound into the blobs' AEAD.

    Built from the column values, so save and load compute it from the same representation. Editing
    e.g. the booking number or the recorded sha256 in the database then makes the images fail to
    decrypt instead of quietly attaching them to another booking.
    """
    doc = ["v1", record_id, [booking_row[k] for k in _BOOKING_FIELDS], [capture_row[k] for k in _CAPTURE_FIELDS]]
    return hashlib.sha256(json.dumps(doc, separators=(",", ":"), ensure_ascii=True).encode()).digest()


class Store:
    """The station's records, outbox, audit log and alarms in one SQLite file (see module docstring).

    Open with `Store.open` (paths) or `Store.open_data_dir` (``DATA_DIR/station.db`` and
    ``DATA_DIR/keys/store.key``). ``floor_bytes`` is the free disk kept in reserve; ``max_pending``
    optionally caps the number of undelivered records (None: no cap); ``clock`` returns the current
    UTC time (tests pass their own).
    """

    def __init__(self, conn: sqlite3.Connection, cipher: BlobCipher, db_path: Path, *,
                 floor_bytes: int = DEFAULT_FLOOR_BYTES, max_pending: int | None = None,
                 clock: Callable[[], datetime] = utc_now) -> None:
        self.conn = conn
        self.db = Database(conn, execute_plugins=False, recursive_triggers=False)
        self.cipher = cipher
        self.db_path = db_path
        self.data_dir = db_path.parent
        self.floor_bytes = floor_bytes
        self.max_pending = max_pending
        self.clock = clock

    # --- opening ------------------------------------------------------------------------------

    @classmethod
    def open(cls, db_path: Path | str, key_path: Path | str, *, create_key: bool = True,
             **options: Any) -> Store:
        """Open the database and its key; create the key on first use.

        A new key is made only for a database that never had one. If the database records a key
        fingerprint and the key file is missing, that is an error (`StoreKeyFileError`): a fresh key could
        not read anything stored, and silently starting over would orphan every undelivered record. A
        key file with another fingerprint raises `WrongKeyError`.
        """
        db_path, key_path = Path(db_path), Path(key_path)
        conn = connect(db_path)
        try:
            row = conn.execute("SELECT value FROM meta WHERE key = 'key_fingerprint'").fetchone()
            recorded = row[0] if row else None
            key_exists = _key_exists(key_path)
            if key_exists or recorded is not None or not create_key:
                if not key_exists and recorded is not None:
                    raise StoreKeyFileError(
                        f"key file {key_path} is missing, but database {db_path} holds data encrypted with "
                        f"key {recorded}. Restore the key file from the provisioning backup; a new key "
                        f"could not read the stored records")
                key = load_key(key_path)
            else:
                key = create_key_file(key_path)
            cipher = BlobCipher(key)
            if recorded is None:
                with _translated(db_path):
                    conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('key_fingerprint', ?)",
                                 (cipher.fingerprint,))
                    recorded = conn.execute(
                        "SELECT value FROM meta WHERE key = 'key_fingerprint'").fetchone()[0]
            if recorded != cipher.fingerprint:
                raise WrongKeyError(
                    f"key file {key_path} (key {cipher.fingerprint}) is not the key of database {db_path} "
                    f"(key {recorded}); nothing stored can be decrypted with it. Use the station's own "
                    f"key file")
        except BaseException:
            conn.close()
            raise
        return cls(conn, cipher, db_path, **options)

    @classmethod
    def open_data_dir(cls, data_dir: Path | str, **options: Any) -> Store:
        """Open ``DATA_DIR/station.db`` with ``DATA_DIR/keys/store.key``."""
        db_path, key_path = data_paths(data_dir)
        return cls.open(db_path, key_path, **options)

    def close(self) -> None:
        """Close the connection (the last one to close checkpoints and removes the WAL file)."""
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _now(self, now: datetime | None = None) -> datetime:
        return now if now is not None else self.clock()

    @contextmanager
    def _writing(self, what: str) -> Iterator[sqlite3.Connection]:
        """A write transaction whose disk-full failure becomes `DiskFullError` (after the rollback)."""
        try:
            with _translated(self.db_path, self.floor_bytes, what), \
                    write_transaction(self.conn) as conn:
                yield conn
        except DiskFullError as exc:
            self._alarm(alarms.DISK_LOW, str(exc))
            raise

    def _alarm(self, name: str, message: str) -> None:
        """Raise an alarm, best effort: when the disk is full even this small write may fail."""
        with suppress(sqlite3.Error):
            alarms.raise_alarm(self.conn, name, message, now=self._now())

    # --- records ----------------------------------------------------------------------------

    def save_booking(self, booking: Booking, captures: Sequence[Capture], *,
                     record_id: str | None = None) -> str:
        """Store a booking with its captures and queue it for delivery; return its record id.

        Everything (booking, captures, outbox row, ``capture`` and ``override`` audit entries) is written
        in one transaction and this returns only after it committed. Refused before anything is written:
        invalid input (`ValidationError`), free disk below the floor (`DiskFullError`), a full queue
        (`QueueFullError`), an id already stored (`DuplicateRecordError`). If the disk fills up during
        the write, the transaction is rolled back and `DiskFullError` is raised. In every refusal,
        records stored before are untouched.
        """
        if not isinstance(booking, Booking):
            raise ValidationError(f"booking must be a Booking, got {type(booking).__name__}")
        items = check_captures(captures)
        record_id = check_record_id(record_id) if record_id is not None else new_record_id()
        needed = booking_write_bytes(sum(len(c.jpeg) for c in items), sum(len(c.template or ()) for c in items))
        try:
            ensure_space(self.data_dir, self.floor_bytes, needed)
        except DiskFullError as exc:
            self._alarm(alarms.DISK_LOW, str(exc))
            raise
        now = self._now()
        booking_row = {
            "record_id": record_id, "agency_ori": booking.agency_ori, "booking_number": booking.booking_number,
            "operator_id": booking.operator_id, "captured_at": to_text(booking.captured_at),
            "station_id": booking.station_id, "created_at": to_text(now),
        }
        capture_rows = [self._capture_row(record_id, booking_row, seq, cap) for seq, cap in enumerate(items)]

        try:
            self._insert_record(record_id, booking, items, booking_row, capture_rows, now)
        except QueueFullError as exc:
            self._alarm(alarms.QUEUE_FULL, str(exc))
            raise
        return record_id

    def _insert_record(self, record_id: str, booking: Booking, items: list[Capture], booking_row: dict[str, Any],
                       capture_rows: list[dict[str, Any]], now: datetime) -> None:
        """The save transaction itself: checks that need the write lock, then every row of the record."""
        with self._writing("Booking NOT saved") as conn:
            if self.max_pending is not None:
                pending = conn.execute("SELECT COUNT(*) FROM outbox WHERE state = 'pending'").fetchone()[0]
                if pending >= self.max_pending:
                    raise QueueFullError(
                        f"Booking NOT saved: {pending} records are waiting for delivery, the limit is "
                        f"{self.max_pending}. Nothing was deleted; check the link to the county and save "
                        f"again once the queue drains")
            if conn.execute("SELECT 1 FROM bookings WHERE record_id = ?", (record_id,)).fetchone():
                raise DuplicateRecordError(f"record {record_id} is already stored; it was not saved again")
            self.db.table("bookings").insert(booking_row)
            self.db.table("captures").insert_all(capture_rows)
            outbox.enqueue(conn, record_id, now=now)
            audit.append(conn, booking.operator_id, "capture", {
                "record_id": record_id, "booking_number": booking.booking_number,
                "agency_ori": booking.agency_ori, "poses": [c.pose for c in items],
            }, now=now)
            for seq, cap in enumerate(items):
                if cap.override_reason is not None:
                    audit.append(conn, cap.operator_id, "override", {
                        "record_id": record_id, "seq": seq, "pose": cap.pose, "reason": cap.override_reason,
                    }, now=now)
            if self.max_pending is not None:
                alarms.clear_alarm(conn, alarms.QUEUE_FULL, now=now)

    def _capture_row(self, record_id: str, booking_row: dict[str, Any], seq: int, cap: Capture) -> dict[str, Any]:
        """The captures row of one capture, with image and template encrypted and bound to the metadata."""
        row: dict[str, Any] = {
            "record_id": record_id, "seq": seq, "pose": cap.pose, "smt_description": cap.smt_description,
            "width": cap.width, "height": cap.height, "image_bytes": len(cap.jpeg), "sha256": cap.sha256,
            "quality": json.dumps(cap.quality, sort_keys=True, separators=(",", ":"), allow_nan=False),
            "template_model": cap.template_model,
            "template_dim": len(cap.template) if cap.template is not None else None,
            "override_reason": cap.override_reason, "operator_id": cap.operator_id, "purged_at": None,
        }
        context = _binding(record_id, booking_row, row)
        row["template"] = (self.cipher.encrypt(_pack_template(cap.template), record_id,
                                               f"template:{cap.pose}:{seq}", context)
                           if cap.template is not None else None)
        row["image"] = self.cipher.encrypt(cap.jpeg, record_id, f"capture:{cap.pose}:{seq}", context)
        return row

    def recent_booking_image_bytes(self, limit: int = 20) -> list[int]:
        """The JPEG bytes of each of the ``limit`` newest bookings (purged ones too: the size is kept), newest
        first: what bookings at this desk really take, for the free-space check before the next one."""
        with read_transaction(self.conn) as conn:
            rows = conn.execute(
                "SELECT SUM(c.image_bytes) FROM bookings b JOIN captures c ON c.record_id = b.record_id "
                "GROUP BY b.record_id ORDER BY MAX(b.created_at) DESC LIMIT ?", (int(limit),)).fetchall()
        return [int(r[0]) for r in rows]

    def load_record(self, record_id: str) -> StationRecord:
        """Read a record back: decrypt its images and templates and check each image's sha256.

        Raises `UnknownStationRecordError` (no such record), `RecordPurgedError` (images purged after
        delivery), `DecryptError` (wrong key, or any stored byte of the record changed) or
        `RecordIntegrityError` (an image decrypted but does not match its recorded sha256).
        """
        check_record_id(record_id)
        with read_transaction(self.conn) as conn:
            b = conn.execute("SELECT record_id, agency_ori, booking_number, operator_id, captured_at, "
                             "station_id, created_at FROM bookings WHERE record_id = ?", (record_id,)).fetchone()
            if b is None:
                raise UnknownStationRecordError(f"no record {record_id} is stored (never saved here, or purged)")
            cursor = conn.execute(
                "SELECT seq, pose, smt_description, width, height, image_bytes, sha256, quality, template_model, "
                "template_dim, override_reason, operator_id, purged_at, template, image "
                "FROM captures WHERE record_id = ? ORDER BY seq", (record_id,))
            names = [d[0] for d in cursor.description]
            rows = [dict(zip(names, r, strict=False)) for r in cursor]
            entry = outbox.get(conn, record_id)
        booking_row = dict(zip(("record_id", *_BOOKING_FIELDS, "created_at"), b, strict=False))
        if not rows:
            raise RecordIntegrityError(f"record {record_id} has no captures stored; the database is inconsistent")
        booking = Booking(agency_ori=booking_row["agency_ori"], booking_number=booking_row["booking_number"],
                          operator_id=booking_row["operator_id"],
                          captured_at=from_text(booking_row["captured_at"]), station_id=booking_row["station_id"])
        captures = [self._open_capture(record_id, booking_row, row) for row in rows]
        return StationRecord(record_id, booking, captures, entry, from_text(booking_row["created_at"]))

    def _open_capture(self, record_id: str, booking_row: dict[str, Any], row: dict[str, Any]) -> Capture:
        pose, seq = row["pose"], row["seq"]
        if row["image"] is None:
            raise RecordPurgedError(
                f"the images of record {record_id} were purged on {row['purged_at']} after delivery; "
                f"the county gallery holds them")
        context = _binding(record_id, booking_row, row)
        jpeg = self.cipher.decrypt(row["image"], record_id, f"capture:{pose}:{seq}", context)
        # The image's sha256 is checked once, by Capture below (hashing a 1 MB photo twice per read was a
        # measurable part of what the sync agent spends per record).
        if len(jpeg) != row["image_bytes"]:
            raise RecordIntegrityError(f"the {pose} image of record {record_id} does not match its recorded "
                                       f"size; it was not returned")
        template = None
        if row["template"] is not None:
            template = _unpack_template(
                self.cipher.decrypt(row["template"], record_id, f"template:{pose}:{seq}", context),
                row["template_dim"])
        try:
            return Capture(pose=pose, jpeg=jpeg, width=row["width"], height=row["height"], sha256=row["sha256"],
                           operator_id=row["operator_id"], quality=json.loads(row["quality"]), template=template,
                           template_model=row["template_model"], override_reason=row["override_reason"],
                           smt_description=row["smt_description"])
        except ValidationError as exc:
            what = "does not match its recorded sha256" if "sha256" in str(exc) else f"is not valid: {exc}"
            raise RecordIntegrityError(
                f"the {pose} capture of record {record_id} {what}; it was not returned") from None

    def records_for_booking(self, booking_number: str, agency_ori: str | None = None) -> list[str]:
        """Record ids stored for a booking number (optionally of one agency), oldest first."""
        check_booking_number(booking_number)
        if agency_ori is None:
            rows = self.conn.execute("SELECT record_id FROM bookings WHERE booking_number = ? ORDER BY record_id",
                                     (booking_number,))
        else:
            rows = self.conn.execute("SELECT record_id FROM bookings WHERE booking_number = ? AND agency_ori = ? "
                                     "ORDER BY record_id", (booking_number, check_ori(agency_ori)))
        return [r[0] for r in rows]

    # --- outbox (for the sync agent) ------------------------------------------------------------

    def due(self, limit: int = 50, now: datetime | None = None) -> list[outbox.OutboxEntry]:
        """Pending records whose next attempt time has come (see `appliance.store.outbox.due`)."""
        return outbox.due(self.conn, limit, now=self._now(now))

    def mark_delivered(self, record_id: str, status: str = "stored", *,
                       now: datetime | None = None) -> outbox.OutboxEntry:
        """The gallery acked the record (``stored`` or ``duplicate``); see `outbox.mark_delivered`."""
        with self._writing("Delivery not recorded"):
            return outbox.mark_delivered(self.conn, record_id, status, now=self._now(now))

    @contextmanager
    def delivery_batch(self) -> Iterator[None]:
        """Several outbox reports in ONE transaction (one disk flush): the sync agent records a window of
        gallery acks together instead of flushing once per ack. Each report inside still checks its own row
        and may raise alone (catch it to go on); an error that escapes rolls all of them back."""
        with self._writing("Deliveries not recorded"):
            yield

    def mark_rejected(self, record_id: str, reason: str, *, now: datetime | None = None) -> outbox.OutboxEntry:
        """The gallery rejected the record; the reason is kept (see `outbox.mark_rejected`)."""
        with self._writing("Rejection not recorded"):
            return outbox.mark_rejected(self.conn, record_id, reason, now=self._now(now))

    def mark_failed(self, record_id: str, error: str, next_attempt_at: datetime | None = None, *,
                    now: datetime | None = None, **backoff: float) -> outbox.OutboxEntry:
        """An attempt failed: count it and push the next one back (see `outbox.mark_failed`)."""
        with self._writing("Failed attempt not recorded"):
            return outbox.mark_failed(self.conn, record_id, error, next_attempt_at, now=self._now(now), **backoff)

    def queue(self, state: str | None = None) -> list[outbox.OutboxEntry]:
        """Outbox rows, optionally of one state, oldest first."""
        return outbox.queue(self.conn, state)

    def queue_counts(self) -> dict[str, int]:
        """Outbox rows per state."""
        return outbox.counts(self.conn)

    def oldest_pending_age(self, now: datetime | None = None) -> timedelta | None:
        """Age of the oldest undelivered record, None if none."""
        return outbox.oldest_pending_age(self.conn, now=self._now(now))

    # --- purge ----------------------------------------------------------------------------------

    def purge_booking(self, target: str, *, actor: str, reason: str | None = None,
                      agency_ori: str | None = None) -> PurgeResult:
        """Remove every trace of a booking: rows, images, templates, outbox entry. Audited, idempotent.

        ``target`` is a record id or a booking number (all records of that booking number; give
        ``agency_ori`` if several agencies book at this station, otherwise a number that matches more
        than one agency raises `AmbiguousBookingError` rather than purging another agency's booking).
        Purging is deliberate and may remove undelivered records (a sealed or expunged booking must not
        be sent). The ``purge`` audit entry is written in the same transaction, including when nothing
        matched (the order was carried out; there was nothing left). Deleted content is overwritten
        (``secure_delete``) and the WAL is checkpointed and truncated afterwards so no old copy of the
        pages stays in it.
        """
        if not isinstance(target, str):
            raise ValidationError("purge target must be a record id or a booking number")
        by_id = is_record_id(target)
        if not by_id:
            check_booking_number(target)
        if agency_ori is not None:
            check_ori(agency_ori)
        with self._writing("Purge not done") as conn:
            if by_id:
                rows = conn.execute("SELECT b.record_id, b.agency_ori, b.booking_number, o.state FROM bookings b "
                                    "LEFT JOIN outbox o ON o.record_id = b.record_id WHERE b.record_id = ?",
                                    (target,)).fetchall()
            else:
                sql = ("SELECT b.record_id, b.agency_ori, b.booking_number, o.state FROM bookings b "
                       "LEFT JOIN outbox o ON o.record_id = b.record_id WHERE b.booking_number = ?")
                params: tuple[str, ...] = (target,)
                if agency_ori is not None:
                    sql += " AND b.agency_ori = ?"
                    params += (agency_ori,)
                rows = conn.execute(sql + " ORDER BY b.record_id", params).fetchall()
                oris = sorted({r[1] for r in rows})
                if len(oris) > 1:
                    raise AmbiguousBookingError(
                        f"booking number {target!r} exists for {len(oris)} agencies ({', '.join(oris)}); "
                        f"say which agency's booking to purge. Nothing was purged")
            ids = [r[0] for r in rows]
            states = {r[0]: r[3] or "missing" for r in rows}
            for record_id in ids:
                conn.execute("DELETE FROM captures WHERE record_id = ?", (record_id,))
                conn.execute("DELETE FROM outbox WHERE record_id = ?", (record_id,))
                conn.execute("DELETE FROM bookings WHERE record_id = ?", (record_id,))
            audit.append(conn, actor, "purge", {
                "target": target, "agency_ori": agency_ori or (rows[0][1] if rows else None),
                "booking_number": rows[0][2] if rows else (None if by_id else target),
                "record_ids": ids, "states": states, "reason": reason,
            }, now=self._now())
        if ids:
            self._truncate_wal()
        return PurgeResult(target, ids, states)

    def purge_delivered_images(self, older_than_days: float, *, now: datetime | None = None,
                               actor: str = "system") -> int:
        """Drop images and templates of records delivered more than ``older_than_days`` days ago.

        Only records in state ``delivered`` (gallery acked) are touched; ``pending`` and ``rejected``
        ones keep everything, however old. The metadata (booking, sha256, quality report, outbox row)
        stays, so the record can still be accounted for. Returns the number of records purged now, and
        audits it (``purge_images``) when that is not zero.
        """
        if older_than_days < 0:
            raise ValueError(f"older_than_days must be >= 0, got {older_than_days}")
        moment = self._now(now)
        cutoff = to_text(moment - timedelta(days=older_than_days))
        with self._writing("Image purge not done") as conn:
            ids = [r[0] for r in conn.execute(
                "SELECT DISTINCT c.record_id FROM captures c JOIN outbox o ON o.record_id = c.record_id "
                "WHERE o.state = 'delivered' AND o.delivered_at <= ? AND c.purged_at IS NULL "
                "ORDER BY c.record_id", (cutoff,))]
            for record_id in ids:
                conn.execute("UPDATE captures SET image = NULL, template = NULL, purged_at = ? "
                             "WHERE record_id = ? AND purged_at IS NULL AND record_id IN "
                             "(SELECT record_id FROM outbox WHERE state = 'delivered')",
                             (to_text(moment), record_id))
            if ids:
                audit.append(conn, actor, "purge_images",
                             {"older_than_days": older_than_days, "records": len(ids), "record_ids": ids},
                             now=moment)
        if ids:
            self._truncate_wal()
        return len(ids)

    def _truncate_wal(self) -> None:
        """Copy the WAL into the database and truncate it, so purged pages do not linger in the WAL.

        Best effort: with a reader active the checkpoint may be partial; the next one finishes it.
        """
        with suppress(sqlite3.Error):
            self.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()

    # --- audit and alarms ---------------------------------------------------------------------

    def append_audit(self, actor: str, action: str, details: dict[str, Any] | None = None) -> audit.AuditEntry:
        """Append an audit entry (logon, export, config_change, ...) and return it."""
        with self._writing("Audit entry not written"):
            return audit.append(self.conn, actor, action, details, now=self._now())

    def verify_audit(self) -> int | None:
        """First broken seq of the audit chain, or None if it is intact."""
        return audit.verify(self.conn)

    def audit_report(self) -> audit.VerifyReport:
        """The audit chain check with counts and the retention checkpoint."""
        return audit.verify_report(self.conn)

    def audit_retention(self, keep_days: int, *, now: datetime | None = None) -> int:
        """Remove audit entries older than ``keep_days`` (>= 365) behind a checkpoint; returns count."""
        with self._writing("Audit retention not done"):
            return audit.apply_retention(self.conn, keep_days, now=self._now(now))

    def raise_alarm(self, name: str, message: str) -> bool:
        """Raise alarm ``name``; True if it was not active before."""
        return alarms.raise_alarm(self.conn, name, message, now=self._now())

    def clear_alarm(self, name: str) -> bool:
        """Clear alarm ``name``; True if it was active."""
        return alarms.clear_alarm(self.conn, name, now=self._now())

    def active_alarms(self) -> list[alarms.Alarm]:
        """Alarms currently raised."""
        return alarms.active_alarms(self.conn)

    def integrity_check(self) -> list[str]:
        """SQLite's ``PRAGMA integrity_check`` plus ``foreign_key_check``; ``["ok"]`` when all is well."""
        result = [r[0] for r in self.conn.execute("PRAGMA integrity_check")]
        orphans = self.conn.execute("PRAGMA foreign_key_check").fetchall()
        if orphans:
            result = [r for r in result if r != "ok"] + [f"orphan row in {t} (rowid {rowid})"
                                                          for t, rowid, *_ in orphans]
        return result


def _key_exists(path: Path) -> bool:
    """Whether the key file exists; a directory we may not look into is a key error, not a traceback."""
    try:
        return path.exists()
    except PermissionError:
        raise StoreKeyFileError(f"key file {path} cannot be reached: permission denied") from None


@contextmanager
def _translated(db_path: Path, floor_bytes: int = 0, what: str = "Write not done") -> Iterator[None]:
    """Turn SQLite's disk-full and corruption errors into the store's clear errors."""
    try:
        yield
    except (sqlite3.Error, OSError) as exc:
        if is_disk_full(exc):
            raise disk_full_error(db_path.parent, floor_bytes, what) from exc
        if is_corruption(exc):
            raise _corrupt(db_path, exc) from exc
        raise
