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
* **truncation**: a signed head (in the station's status) older than what the station had already shown
  the county: an entry the county holds, or a signed head it reported (in an earlier status or a batch),
  that the gallery *received* at least ``TRUNCATION_GRACE`` before this status. Only sequence numbers and
  the gallery's own receive times decide: the station's clock (which a station with a rewritten log may
  have set back, or which may simply be wrong) plays no part. The grace covers a status published before
  newer entries but handled after them (another gallery worker, the broker's retained copy delivered on
  resubscribing); a station whose log really lost entries reports the short head in every status, so the
  alarm comes at most one grace and one status interval late.

An entry that does not link is not stored (the held chain stays what the county can vouch for); the
alarm keeps its seq, hashes and a detail for a person. Alarms are kept per station, kind and seq, with a
counter, so a station that repeats the same head every status interval raises one alarm, not thousands.

A county user acknowledges a station's open alarms once they have looked into them (``booking-gallery audit
clear``): each gets who, when and why in ``audit_alarm_acks``, and the county audit log gets one entry.
Nothing is deleted: acknowledged alarms stay listed as such. A repeat of an acknowledged alarm (same
station, kind and seq: the same incident, e.g. the same truncated head in every status) only counts up;
anything else (a new gap, fork, rewrite or truncation at another entry) is a new, open alarm.

An acknowledgement may also **resume** the county's copy (``audit clear --resume``), for a break the station
cannot undo (a fork, lost entries, a truncated log): the held chain stops at the last entry the county could
vouch for, so without it every later batch would raise another gap. A resume (``audit_resumes``) is pending
until the next entry beyond the held head arrives; that entry is held whether or not it links (a break the
person accepted, kept with who and why, and which ``verify_station`` then allows at exactly that entry), and
the chain links from it again. While it is pending, entries and heads at or below the held head that differ
from the county's copy are the diverged history the person acknowledged: not held, no new alarm. The first
entry beyond the head ends the resume even when it links, so it never swallows a later break.

The tables are created on first use (``IF NOT EXISTS``), beside the store's own, in both dialects.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sync.county.gallery.store import GalleryStore
from sync.protocol.audit_wire import GENESIS_HASH, AuditAck, AuditBatch, AuditWireEntry

ALARM_KINDS = ("gap", "fork", "rewrite", "truncation")

# How long before a status the gallery must have received the entries or heads it holds against that status
# (see the module docstring): far above the reordering of one station's messages between topics and
# gallery workers (seconds), and small beside how long a truncated station keeps reporting its short head.
TRUNCATION_GRACE = timedelta(minutes=10)

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
    # Every head the station signed (in a status or a batch), with when the gallery first received it: what
    # the station had already shown the county, for the truncation check. One row per distinct seq.
    """CREATE TABLE IF NOT EXISTS audit_heads (
        station TEXT NOT NULL,
        seq BIGINT NOT NULL,
        received_at {ts} NOT NULL,
        PRIMARY KEY (station, seq)
    )""",
    # An acknowledgement that lets the county's copy go on after a break: pending (resumed_seq NULL) until
    # the next entry beyond after_seq (the held head at the time) is held.
    """CREATE TABLE IF NOT EXISTS audit_resumes (
        station TEXT NOT NULL,
        after_seq BIGINT NOT NULL,
        acked_at {ts} NOT NULL,
        actor TEXT NOT NULL,
        reason TEXT NOT NULL,
        resumed_seq BIGINT,
        PRIMARY KEY (station, after_seq)
    )""",
    # A separate table, not columns on audit_alarms: a gallery that already has audit_alarms gains it on
    # open (IF NOT EXISTS) without an ALTER in either dialect.
    """CREATE TABLE IF NOT EXISTS audit_alarm_acks (
        station TEXT NOT NULL,
        kind TEXT NOT NULL,
        seq BIGINT NOT NULL,
        acked_at {ts} NOT NULL,
        actor TEXT NOT NULL,
        reason TEXT NOT NULL,
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
    acked_at: datetime | None = None
    acked_by: str | None = None
    ack_reason: str | None = None

    @property
    def acknowledged(self) -> bool:
        return self.acked_at is not None

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["first_at"], out["last_at"] = self.first_at.isoformat(), self.last_at.isoformat()
        out["acked_at"] = None if self.acked_at is None else self.acked_at.isoformat()
        out["acknowledged"] = self.acknowledged
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
    resumes: list[dict[str, Any]] = field(default_factory=list)  # acknowledged breaks (see the module docstring)

    @property
    def open_alarms(self) -> list[AuditAlarm]:
        return [a for a in self.alarms if not a.acknowledged]

    @property
    def ok(self) -> bool:
        """Acknowledged alarms stay in the report but no longer fail it: a person has looked into them."""
        return self.broken_at is None and not self.open_alarms

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
        """Every alarm raised (open and acknowledged), oldest first per station."""
        sql = ("SELECT a.station, a.kind, a.seq, a.detail, a.first_at, a.last_at, a.count, k.acked_at, k.actor, "
               "k.reason FROM audit_alarms a LEFT JOIN audit_alarm_acks k ON k.station = a.station AND "
               "k.kind = a.kind AND k.seq = a.seq")
        params: tuple[Any, ...] = ()
        if station is not None:
            sql, params = sql + " WHERE a.station = ?", (station,)
        with self.store._transaction(write=False) as cur:
            rows = self.store._exec(cur, sql + " ORDER BY a.station, a.first_at, a.seq", params).fetchall()
        ts = self.store._from_ts
        return [AuditAlarm(r[0], r[1], int(r[2]), r[3], ts(r[4]), ts(r[5]), int(r[6]),
                           None if r[7] is None else ts(r[7]), r[8], r[9]) for r in rows]

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

    def resumes(self, station: str) -> list[dict[str, Any]]:
        """The station's resumes, oldest first: after which held entry, by whom, why, and where it resumed."""
        with self.store._transaction(write=False) as cur:
            rows = self.store._exec(cur, "SELECT after_seq, acked_at, actor, reason, resumed_seq FROM audit_resumes "
                                         "WHERE station = ? ORDER BY after_seq", (station,)).fetchall()
        return [{"after_seq": int(r[0]), "acked_at": self.store._from_ts(r[1]).isoformat(), "actor": r[2],
                 "reason": r[3], "resumed_seq": None if r[4] is None else int(r[4])} for r in rows]

    def pending_resume(self, station: str) -> int | None:
        """The held head an unfinished resume was granted after, or None."""
        with self.store._transaction(write=False) as cur:
            row = self.store._exec(cur, "SELECT after_seq FROM audit_resumes WHERE station = ? AND resumed_seq IS "
                                        "NULL", (station,)).fetchone()
        return None if row is None else int(row[0])

    def acknowledge(self, station: str, actor: str, reason: str, now: datetime | None = None, *,
                    resume: bool = False) -> list[AuditAlarm]:
        """Mark every open alarm of ``station`` acknowledged by ``actor`` for ``reason``, and write one county
        audit entry (``audit_alarm_ack``) in the same transaction; return the alarms acknowledged (none: no
        entry). Alarms raised while this runs are not among them (they were not seen) and stay open.
        ``resume``: the county's copy goes on from the station's next entry (see the module docstring)."""
        now = now or datetime.now(timezone.utc)
        open_alarms = [a for a in self.alarms(station) if not a.acknowledged]
        if not open_alarms:
            return []
        ts = self.store._to_ts(now)
        held = self.held_head(station)
        with self.store._lock, self.store._transaction() as cur:
            if resume:
                self.store._exec(
                    cur,
                    "INSERT INTO audit_resumes (station, after_seq, acked_at, actor, reason) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT (station, after_seq) DO NOTHING",
                    (station, held[0] if held else 0, ts, actor[:200], reason[:1000]))
            for alarm in open_alarms:
                self.store._exec(
                    cur,
                    "INSERT INTO audit_alarm_acks (station, kind, seq, acked_at, actor, reason) "
                    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (station, kind, seq) DO NOTHING",
                    (station, alarm.kind, alarm.seq, ts, actor[:200], reason[:1000]))
            self.store._add_audit(cur, ts, actor, "audit_alarm_ack", station, {
                "reason": reason[:1000], "resume_after": (held[0] if held else 0) if resume else None,
                "alarms": [{"kind": a.kind, "seq": a.seq, "count": a.count, "detail": a.detail} for a in open_alarms]})
        return [AuditAlarm(a.station, a.kind, a.seq, a.detail, a.first_at, a.last_at, a.count, now, actor[:200],
                           reason[:1000]) for a in open_alarms]

    def _append(self, station: str, entries: Sequence[AuditWireEntry], now: datetime, *,
                resumes: bool = False) -> None:
        """The linking entries of one batch in ONE transaction: a commit per entry cost a disk flush each, on
        the receiver's network thread, while the records behind them waited. ``resumes``: the first of them
        ends the station's pending resume (in the same transaction)."""
        if not entries:
            return
        with self.store._transaction() as cur:
            for entry in entries:
                self.store._exec(
                    cur,
                    "INSERT INTO audit_chain (station, seq, at, actor, action, details, prev_hash, hash, received_at) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (station, *entry.as_list(), self.store._to_ts(now)))
            if resumes:
                self.store._exec(cur, "UPDATE audit_resumes SET resumed_seq = ? WHERE station = ? AND resumed_seq "
                                      "IS NULL", (entries[0].seq, station))

    # ------------------------------------------------------------------------------ judging
    def receive(self, batch: AuditBatch, now: datetime | None = None) -> AuditAck:
        """Hold the entries that link, raise an alarm at the first that does not; then check the batch's head.
        The ack says ``conflict`` when anything was raised (the station cannot fix it by sending again)."""
        now = now or datetime.now(timezone.utc)
        station = batch.station
        raised = self._link(station, batch.entries, now)
        raised = self.check_head(station, batch.head_seq, batch.head_hash, now=now) or raised
        self._note_head(station, batch.head_seq, now)
        return AuditAck(batch.through_seq, "conflict" if raised else "stored", raised or None)

    def _link(self, station: str, entries: Sequence[AuditWireEntry], now: datetime) -> str:
        """Append the entries that link (together, up to the first that does not); return the kind of the first
        alarm raised, or ''."""
        linked: list[AuditWireEntry] = []
        resume = self.pending_resume(station)
        try:
            return self._judge(station, entries, now, linked, resume)
        finally:
            self._append(station, linked, now, resumes=resume is not None)

    def _judge(self, station: str, entries: Sequence[AuditWireEntry], now: datetime,
               linked: list[AuditWireEntry], resume: int | None) -> str:
        """:meth:`_link`'s decisions; the entries that link go to ``linked``, to be written in one go.
        ``resume``: the held head a pending resume was granted after (the first new entry ends it)."""
        held = self.held_head(station)
        for entry in entries:
            if held is not None and entry.seq <= held[0]:
                pending = {e.seq: e.hash for e in linked}
                kept = pending[entry.seq] if entry.seq in pending else self.held_hash(station, entry.seq)
                # A repeat, below the county's first entry, or diverged history a person acknowledged: skipped.
                if kept == entry.hash or kept is None or resume is not None:
                    continue
                return self._alarm(station, "fork", entry.seq, now,
                                   f"entry {entry.seq} differs from the county's copy (held {kept[:16]}, received "
                                   f"{entry.hash[:16]}): the station's log was changed from this entry on")
            if not entry.hash_ok:
                return self._alarm(station, "rewrite", entry.seq, now,
                                   f"entry {entry.seq}'s hash does not match its content: edited in place")
            broken = None if resume is not None else _break(held, entry)
            if broken is not None:
                return self._alarm(station, broken[0], entry.seq, now, broken[1])
            linked.append(entry)
            held, resume = (entry.seq, entry.hash), None
        return ""

    def check_head(self, station: str, seq: int, digest: str, *, from_status: bool = False,
                   now: datetime | None = None) -> str:
        """Compare a signed head the station reported with the held chain; return the alarm kind raised, or ''.
        Truncation is judged only for a status's head (``from_status``), with ``now`` the gallery's time of
        receiving it (see the module docstring); the head is then noted as shown to the county."""
        now = now or datetime.now(timezone.utc)
        held = self.held_head(station)
        kind = ""
        if from_status:
            kind = self._check_truncation(station, seq, held, now)
            self._note_head(station, seq, now)
        kept = self.held_hash(station, seq) if held is not None and seq <= held[0] else None
        if kept is not None and kept != digest and self.pending_resume(station) is None:
            kind = self._alarm(station, "rewrite", seq, now,
                               f"the station's entry {seq} now hashes to {digest[:16]}, the county holds "
                               f"{kept[:16]}: the log was rewritten up to its head") or kind
        return kind

    def _check_truncation(self, station: str, seq: int, held: tuple[int, str] | None, now: datetime) -> str:
        """Truncation when the station reports a head below an entry or head it had shown the county at least
        ``TRUNCATION_GRACE`` ago (by the gallery's clock). The alarm is keyed at the newest entry the county
        knows the station had, so the same short head reported again counts up one alarm."""
        cutoff = self.store._to_ts(now - TRUNCATION_GRACE)
        with self.store._transaction(write=False) as cur:
            shown = self.store._exec(
                cur, "SELECT MAX(seq) FROM (SELECT MAX(seq) AS seq FROM audit_chain WHERE station = ? AND "
                     "received_at <= ? UNION ALL SELECT MAX(seq) AS seq FROM audit_heads WHERE station = ? AND "
                     "received_at <= ?) shown", (station, cutoff, station, cutoff)).fetchone()[0]
            known = self.store._exec(
                cur, "SELECT MAX(seq) FROM audit_heads WHERE station = ?", (station,)).fetchone()[0]
        if shown is None or seq >= int(shown):
            return ""
        newest = max(int(shown), held[0] if held else 0, int(known or 0))
        return self._alarm(station, "truncation", newest, now,
                           f"the station reports its newest entry is {seq}, but it had shown the county entries up "
                           f"to {int(shown)} before: entries were removed from the station's log")

    def _note_head(self, station: str, seq: int, now: datetime) -> None:
        """Keep a signed head the station reported, with when the gallery first received it."""
        with self.store._transaction() as cur:
            self.store._exec(cur, "INSERT INTO audit_heads (station, seq, received_at) VALUES (?, ?, ?) "
                                  "ON CONFLICT (station, seq) DO NOTHING", (station, seq, self.store._to_ts(now)))

    def _alarm(self, station: str, kind: str, seq: int, now: datetime, detail: str) -> str:
        self.raise_alarm(station, kind, seq, detail, now)
        return kind


def _break(held: tuple[int, str] | None, entry: AuditWireEntry) -> tuple[str, str] | None:
    """Why ``entry`` (beyond the held head) cannot be held after ``held``: (alarm kind, detail), or None."""
    if held is None:
        if entry.seq == 1 and entry.prev_hash != GENESIS_HASH:
            return "fork", "the first entry does not start from the genesis hash"
        return None
    if entry.seq > held[0] + 1:
        return "gap", f"entries {held[0] + 1}..{entry.seq - 1} never arrived; the county holds up to {held[0]}"
    if entry.prev_hash != held[1]:
        return "fork", (f"entry {entry.seq} does not link to the county's entry {held[0]} (prev_hash "
                        f"{entry.prev_hash[:16]}, held {held[1][:16]})")
    return None


def verify_station(store: GalleryStore, station: str) -> ChainReport:
    """Walk the county's copy of ``station``'s chain again and gather its alarms and last reported head."""
    chains = AuditChains(store)
    report = ChainReport(station, resumes=chains.resumes(station))
    resumed_at = {r["resumed_seq"] for r in report.resumes}
    prev: AuditWireEntry | None = None
    for entry in chains.entries(station):
        report.entries += 1
        report.first_seq = entry.seq if report.first_seq is None else report.first_seq
        report.last_seq, report.last_hash = entry.seq, entry.hash
        if report.broken_at is not None:
            continue
        if not entry.hash_ok:
            report.broken_at, report.broken_detail = entry.seq, "the held entry's hash does not match its content"
        elif prev is not None and (entry.seq != prev.seq + 1 or entry.prev_hash != prev.hash) and \
                entry.seq not in resumed_at:
            report.broken_at, report.broken_detail = entry.seq, "the held entry does not link to the one before"
        prev = entry
    status = store.get_station_status(station)
    head = status.body.get("audit_head") if status is not None else None
    if isinstance(head, dict):
        report.reported_head = {"seq": head.get("seq"), "hash": head.get("hash"),
                                "received_at": status.received_at.isoformat() if status else None}
    report.alarms = chains.alarms(station)
    return report


def alarm_summary(store: GalleryStore) -> dict[str, tuple[list[str], list[str]]]:
    """Per station, one short line per open audit alarm and one per acknowledged one (for the fleet view)."""
    out: dict[str, tuple[list[str], list[str]]] = {}
    for alarm in AuditChains(store).alarms():
        open_lines, acked_lines = out.setdefault(alarm.station, ([], []))
        line = f"audit {alarm.kind} at entry {alarm.seq}"
        if alarm.acknowledged:
            acked_lines.append(f"{line}, acknowledged by {alarm.acked_by}: {alarm.ack_reason}")
        else:
            open_lines.append(line)
    return out
