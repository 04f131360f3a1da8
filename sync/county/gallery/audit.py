"""The county's copy of every station's audit chain, and the alarms that copy raises.

A station's own audit check proves only that its log is internally consistent: whoever can write its
database can rewrite the chain from some entry on, or drop the newest entries. The gallery holds what
it received (``audit_chain``: one row per station and seq, never changed) and judges everything new
against it:

* **gap**: a batch starts after the entry the county holds last (entries in between never arrived).
* **fork**: an entry does not link to the county's copy: the next seq with a ``prev_hash`` that is not
  the held entry's hash, or a seq the county already holds with a different hash (the station's history
  changed from there: a rewrite with recomputed hashes, or a restored old database going on differently).
* **rewrite**: an entry whose hash is not its own content's (edited in place), or a signed chain head
  (in a batch or the station's status) whose hash differs from the held entry of that seq.
* **truncation**: a signed head (in the station's status) older than an entry the county holds that the
  station had written *before* that status (by the station's own clock, which wrote both): a status
  published before newer entries, or the broker's retained copy of an old one, is not a truncation.

An entry that does not link is not stored (the held chain stays what the county can vouch for); the
alarm keeps its seq, hashes and a detail for a person. Alarms are kept per station, kind and seq, with a
counter, so a station that repeats the same head every status interval raises one alarm, not thousands.

The tables are created on first use (``IF NOT EXISTS``), beside the store's own, in both dialects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from sync.county.gallery.store import GalleryStore, parse_iso
from sync.protocol.audit_wire import GENESIS_HASH, AuditAck, AuditBatch, AuditWireEntry

ALARM_KINDS = ("gap", "fork", "rewrite", "truncation")

_SCHEMA = [
    """CREATE TABLE IF NOT EXISTS audit_chain (
        station TEXT NOT NULL,
        seq BIGINT NOT NULL,
        at TEXT NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        details TEXT NOT NULL,
        prev_hash TEXT NOT NULL,
        hash TEXT NOT NULL,
        received_at {ts} NOT NULL,
        PRIMARY KEY (station, seq)
    )""",
    """CREATE TABLE IF NOT EXISTS audit_alarms (
        station TEXT NOT NULL,
        kind TEXT NOT NULL,
        seq BIGINT NOT NULL,
        detail TEXT NOT NULL,
        first_at {ts} NOT NULL,
        last_at {ts} NOT NULL,
        count INTEGER NOT NULL,
        PRIMARY KEY (station, kind, seq)
    )""",
]


@dataclass(frozen=True)
class AuditAlarm:
    """One thing the county's copy caught (see the module docstring for the kinds)."""

    station: str
    kind: str
    seq: int
    detail: str
    first_at: datetime
    last_at: datetime
    count: int

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["first_at"], out["last_at"] = self.first_at.isoformat(), self.last_at.isoformat()
        return out


@dataclass
class ChainReport:
    """`verify_station`'s answer: the held chain walked again, the station's last signed head, the alarms."""

    station: str
    entries: int = 0
    first_seq: int | None = None
    last_seq: int | None = None
    last_hash: str | None = None
    broken_at: int | None = None
    broken_detail: str | None = None
    reported_head: dict[str, Any] | None = None
    alarms: list[AuditAlarm] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.broken_at is None and not self.alarms

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["alarms"] = [a.to_json() for a in self.alarms]
        out["ok"] = self.ok
        return out


class AuditChains:
    """The audit tables of one gallery store (uses the store's transaction and SQL dialect helpers)."""

    def __init__(self, store: GalleryStore) -> None:
        self.store = store
        if not getattr(store, "_audit_schema_ready", False):
            with store._transaction() as cur:
                for statement in _SCHEMA:
                    cur.execute(statement.format(**store.dialect))
            store._audit_schema_ready = True  # type: ignore[attr-defined]

    # ------------------------------------------------------------------------------- reading
    def held_head(self, station: str) -> tuple[int, str] | None:
        with self.store._transaction(write=False) as cur:
            row = self.store._exec(cur, "SELECT seq, hash FROM audit_chain WHERE station = ? ORDER BY seq DESC "
                                        "LIMIT 1", (station,)).fetchone()
        return None if row is None else (int(row[0]), row[1])

    def held_hash(self, station: str, seq: int) -> str | None:
        with self.store._transaction(write=False) as cur:
            row = self.store._exec(cur, "SELECT hash FROM audit_chain WHERE station = ? AND seq = ?",
                                   (station, seq)).fetchone()
        return None if row is None else row[0]

    def entries(self, station: str) -> list[AuditWireEntry]:
        with self.store._transaction(write=False) as cur:
            rows = self.store._exec(cur, "SELECT seq, at, actor, action, details, prev_hash, hash FROM audit_chain "
                                         "WHERE station = ? ORDER BY seq", (station,)).fetchall()
        return [AuditWireEntry(int(r[0]), r[1], r[2], r[3], r[4], r[5], r[6]) for r in rows]

    def alarms(self, station: str | None = None) -> list[AuditAlarm]:
        sql = "SELECT station, kind, seq, detail, first_at, last_at, count FROM audit_alarms"
        params: tuple[Any, ...] = ()
        if station is not None:
            sql, params = sql + " WHERE station = ?", (station,)
        with self.store._transaction(write=False) as cur:
            rows = self.store._exec(cur, sql + " ORDER BY station, first_at, seq", params).fetchall()
        return [AuditAlarm(r[0], r[1], int(r[2]), r[3], self.store._from_ts(r[4]), self.store._from_ts(r[5]),
                           int(r[6])) for r in rows]

    # ------------------------------------------------------------------------------- writing
    def raise_alarm(self, station: str, kind: str, seq: int, detail: str, now: datetime) -> None:
        ts = self.store._to_ts(now)
        with self.store._transaction() as cur:
            self.store._exec(
                cur,
                "INSERT INTO audit_alarms (station, kind, seq, detail, first_at, last_at, count) "
                "VALUES (?, ?, ?, ?, ?, ?, 1) ON CONFLICT (station, kind, seq) DO UPDATE SET "
                "last_at = excluded.last_at, count = audit_alarms.count + 1",
                (station, kind, seq, detail[:1000], ts, ts))

    def _append(self, station: str, entries: Sequence[AuditWireEntry], now: datetime) -> None:
        """The linking entries of one batch in ONE transaction: a commit per entry cost a disk flush each, on
        the receiver's network thread, while the records behind them waited."""
        if not entries:
            return
        with self.store._transaction() as cur:
            for entry in entries:
                self.store._exec(
                    cur,
                    "INSERT INTO audit_chain (station, seq, at, actor, action, details, prev_hash, hash, received_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (station, *entry.as_list(), self.store._to_ts(now)))

    # ------------------------------------------------------------------------------ judging
    def receive(self, batch: AuditBatch, now: datetime | None = None) -> AuditAck:
        """Hold the entries that link, raise an alarm at the first that does not; then check the batch's head.
        The ack says ``conflict`` when anything was raised (the station cannot fix it by sending again)."""
        now = now or datetime.now(timezone.utc)
        station = batch.station
        raised = self._link(station, batch.entries, now)
        raised = self.check_head(station, batch.head_seq, batch.head_hash, now=now) or raised
        return AuditAck(batch.through_seq, "conflict" if raised else "stored", raised or None)

    def _link(self, station: str, entries: Sequence[AuditWireEntry], now: datetime) -> str:
        """Append the entries that link (together, up to the first that does not); return the kind of the first
        alarm raised, or ''."""
        linked: list[AuditWireEntry] = []
        try:
            return self._judge(station, entries, now, linked)
        finally:
            self._append(station, linked, now)

    def _judge(self, station: str, entries: Sequence[AuditWireEntry], now: datetime,
               linked: list[AuditWireEntry]) -> str:
        """:meth:`_link`'s decisions; the entries that link go to ``linked``, to be written in one go."""
        held = self.held_head(station)
        for entry in entries:
            if held is not None and entry.seq <= held[0]:
                pending = {e.seq: e.hash for e in linked}
                kept = pending[entry.seq] if entry.seq in pending else self.held_hash(station, entry.seq)
                if kept == entry.hash or kept is None:  # a repeat (or below the county's first entry)
                    continue
                return self._alarm(station, "fork", entry.seq, now,
                                   f"entry {entry.seq} differs from the county's copy (held {kept[:16]}, received "
                                   f"{entry.hash[:16]}): the station's log was changed from this entry on")
            if not entry.hash_ok:
                return self._alarm(station, "rewrite", entry.seq, now,
                                   f"entry {entry.seq}'s hash does not match its content: edited in place")
            if held is not None and entry.seq > held[0] + 1:
                return self._alarm(station, "gap", entry.seq, now,
                                   f"entries {held[0] + 1}..{entry.seq - 1} never arrived; the county holds up to "
                                   f"{held[0]}")
            if held is not None and entry.prev_hash != held[1]:
                return self._alarm(station, "fork", entry.seq, now,
                                   f"entry {entry.seq} does not link to the county's entry {held[0]} (prev_hash "
                                   f"{entry.prev_hash[:16]}, held {held[1][:16]})")
            if held is None and entry.seq == 1 and entry.prev_hash != GENESIS_HASH:
                return self._alarm(station, "fork", 1, now, "the first entry does not start from the genesis hash")
            linked.append(entry)
            held = (entry.seq, entry.hash)
        return ""

    def check_head(self, station: str, seq: int, digest: str, *, reported_at: datetime | None = None,
                   now: datetime | None = None) -> str:
        """Compare a signed head the station reported with the held chain; return the alarm kind raised, or ''.
        Truncation is judged only with ``reported_at`` (the status's own time, see the module docstring)."""
        now = now or datetime.now(timezone.utc)
        held = self.held_head(station)
        if held is None:
            return ""
        kind = ""
        if seq < held[0] and reported_at is not None and self._written_before(station, seq + 1, reported_at):
            kind = self._alarm(station, "truncation", held[0], now,
                               f"the station reports its newest entry is {seq}, but the county holds entries up to "
                               f"{held[0]}: entries were removed from the station's log")
        kept = self.held_hash(station, seq) if seq <= held[0] else None
        if kept is not None and kept != digest:
            kind = self._alarm(station, "rewrite", seq, now,
                               f"the station's entry {seq} now hashes to {digest[:16]}, the county holds "
                               f"{kept[:16]}: the log was rewritten up to its head") or kind
        return kind

    def _written_before(self, station: str, seq: int, moment: datetime) -> bool:
        with self.store._transaction(write=False) as cur:
            row = self.store._exec(cur, "SELECT at FROM audit_chain WHERE station = ? AND seq = ?",
                                   (station, seq)).fetchone()
        at = parse_iso(row[0]) if row else None
        return at is not None and at <= moment

    def _alarm(self, station: str, kind: str, seq: int, now: datetime, detail: str) -> str:
        self.raise_alarm(station, kind, seq, detail, now)
        return kind


def verify_station(store: GalleryStore, station: str) -> ChainReport:
    """Walk the county's copy of ``station``'s chain again and gather its alarms and last reported head."""
    chains = AuditChains(store)
    report = ChainReport(station)
    prev: AuditWireEntry | None = None
    for entry in chains.entries(station):
        report.entries += 1
        report.first_seq = entry.seq if report.first_seq is None else report.first_seq
        report.last_seq, report.last_hash = entry.seq, entry.hash
        if report.broken_at is not None:
            continue
        if not entry.hash_ok:
            report.broken_at, report.broken_detail = entry.seq, "the held entry's hash does not match its content"
        elif prev is not None and (entry.seq != prev.seq + 1 or entry.prev_hash != prev.hash):
            report.broken_at, report.broken_detail = entry.seq, "the held entry does not link to the one before"
        prev = entry
    status = store.get_station_status(station)
    head = status.body.get("audit_head") if status is not None else None
    if isinstance(head, dict):
        report.reported_head = {"seq": head.get("seq"), "hash": head.get("hash"),
                                "received_at": status.received_at.isoformat() if status else None}
    report.alarms = chains.alarms(station)
    return report


def alarm_summary(store: GalleryStore) -> dict[str, list[str]]:
    """Per station, one short line per audit alarm (for the fleet view)."""
    out: dict[str, list[str]] = {}
    for alarm in AuditChains(store).alarms():
        out.setdefault(alarm.station, []).append(f"audit {alarm.kind} at entry {alarm.seq}")
    return out
