"""Fleet health: every registered station, how it last said it was, and which ones need county IT.

The gallery keeps each station's latest status body (the retained ``booking/v1/{county}/{station}/status``
topic, stored by the receiver in ``station_status``). This module joins that with the device registry,
so a station that was registered but never came online is listed too: a device that was provisioned
and then sat unplugged in a cupboard is precisely the one nobody notices otherwise.

Two kinds of flag, each with sentences a person can act on:

* **stale**: no status at all, no status for longer than ``stale_after``, or the station says it is
  offline (its last will, or a clean stop). Bookings taken there are not reaching the county.
* **unhealthy**: the station reports alarms, records the gallery rejected (kept on the device,
  waiting for a person), a pending record older than ``max_pending_age`` (delivery is stuck even
  though the station may be online), or less free disk than its configured floor (it refuses new
  bookings until space is freed).

Disk figures (``disk: {free_bytes, floor_bytes}`` in the status) come from stations of this release on;
an older station's status has none, and its disk is shown as unknown rather than guessed.

Revoked stations are listed as ``revoked`` and flagged only while they still talk: a status received
after the revocation means the device still reaches the broker, so the broker-side revocation (ACL
reload, CRL) has not taken effect. A revoked device that has gone quiet is the intended end state and
does not make ``fleet`` fail every night. A status from a station the registry does not know is
flagged too: the county CA issued it a certificate, but the gallery refuses its records.

The thresholds are deliberately loose by default: the station agent sends a status at least every
60 s (and on every queue change), so 10 minutes of silence is ten missed heartbeats, not a blip.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any

from sync.county.gallery.audit import AuditChains, alarm_summary
from sync.county.gallery.store import Device, GalleryStore, StationStatus, parse_iso
from sync.sizes import human_bytes

DEFAULT_STALE_AFTER = timedelta(minutes=10)
DEFAULT_MAX_PENDING_AGE = timedelta(hours=1)
QUEUE_STATES = ("pending", "delivered", "rejected")


@dataclass(frozen=True)
class FleetThresholds:
    """When a station is flagged; see the module docstring for why these defaults."""

    stale_after: timedelta = DEFAULT_STALE_AFTER
    max_pending_age: timedelta = DEFAULT_MAX_PENDING_AGE


@dataclass
class StationHealth:
    """One row of the fleet view. ``state`` is ``online``, ``offline`` or ``never`` (no status yet);
    ``registry`` is ``active``, ``revoked`` or ``unregistered``."""

    station: str
    county: str
    registry: str
    state: str
    software: str | None = None
    queue: dict[str, int] = field(default_factory=dict)
    in_flight: int | None = None
    oldest_pending_age_s: float | None = None
    last_ack_at: datetime | None = None
    alarms: list[str] = field(default_factory=list)
    last_seen: datetime | None = None
    reported_at: datetime | None = None
    reason: str | None = None
    stale: list[str] = field(default_factory=list)
    unhealthy: list[str] = field(default_factory=list)
    audit_held_seq: int | None = None  # the newest audit entry the county holds for this station
    audit_alarms: list[str] = field(default_factory=list)  # open ones: they flag the station
    audit_acknowledged: list[str] = field(default_factory=list)  # looked into (audit clear): shown, not flagged
    disk_free_bytes: int | None = None  # None: not reported (an older station, or never heard from)
    disk_floor_bytes: int | None = None

    @property
    def disk_low(self) -> bool | None:
        """Whether free disk is under the station's floor; None when the station did not say."""
        if self.disk_free_bytes is None or self.disk_floor_bytes is None:
            return None
        return self.disk_free_bytes < self.disk_floor_bytes

    def disk_text(self) -> str:
        """The disk in words for the table and the console: ``12.4 GiB free (floor 512.0 MiB)``, or unknown."""
        if self.disk_free_bytes is None:
            return "unknown"
        floor = "" if self.disk_floor_bytes is None else f" (floor {human_bytes(self.disk_floor_bytes)})"
        return f"{human_bytes(self.disk_free_bytes)} free{floor}" + (", LOW" if self.disk_low else "")

    @property
    def flagged(self) -> bool:
        return bool(self.stale or self.unhealthy)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``booking-gallery fleet --json``): times as ISO 8601 UTC, absent values null."""

        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.isoformat()

        return {
            "station": self.station,
            "county": self.county,
            "registry": self.registry,
            "state": self.state,
            "software": self.software,
            "queue": {k: self.queue.get(k) for k in QUEUE_STATES},
            "in_flight": self.in_flight,
            "oldest_pending_age_s": self.oldest_pending_age_s,
            "last_ack_at": iso(self.last_ack_at),
            "alarms": list(self.alarms),
            "last_seen": iso(self.last_seen),
            "reported_at": iso(self.reported_at),
            "reason": self.reason,
            "flagged": self.flagged,
            "stale": list(self.stale),
            "unhealthy": list(self.unhealthy),
            "audit": {"held_seq": self.audit_held_seq, "alarms": list(self.audit_alarms),
                      "acknowledged": list(self.audit_acknowledged)},
            "disk": {"free_bytes": self.disk_free_bytes, "floor_bytes": self.disk_floor_bytes, "low": self.disk_low},
        }


def _byte_count(value: Any) -> int | None:
    """A count of bytes from a status body, or None (missing, null, or not a non-negative integer)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def human_age(seconds: float) -> str:
    """``45 s``, ``12 min``, ``3.5 h``, ``2.0 d``: ages as county IT reads them at a glance."""
    if seconds < 90:
        return f"{max(seconds, 0):.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    if seconds < 48 * 3600:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} d"


def _health(device: Device | None, status: StationStatus | None, now: datetime,
            limits: FleetThresholds) -> StationHealth:
    station = device.station if device is not None else status.station  # type: ignore[union-attr]
    county = device.county if device is not None else status.county  # type: ignore[union-attr]
    registry = "unregistered" if device is None else device.status
    health = StationHealth(station, county, registry, "never")
    if status is not None:
        body = status.body
        health.state = status.state
        health.software = body.get("software") if isinstance(body.get("software"), str) else None
        queue = body.get("queue") if isinstance(body.get("queue"), dict) else {}
        health.queue = {k: int(v) for k, v in queue.items() if isinstance(v, int) and not isinstance(v, bool)}
        in_flight = body.get("in_flight")
        health.in_flight = in_flight if isinstance(in_flight, int) and not isinstance(in_flight, bool) else None
        age = body.get("oldest_pending_age_s")
        if isinstance(age, (int, float)) and not isinstance(age, bool) and math.isfinite(age):
            health.oldest_pending_age_s = float(age)
        health.last_ack_at = parse_iso(body.get("last_ack_at"))
        alarms = body.get("alarms")
        health.alarms = sorted(a for a in alarms if isinstance(a, str)) if isinstance(alarms, list) else []
        health.last_seen = status.received_at
        health.reported_at = status.reported_at
        health.reason = body.get("reason") if isinstance(body.get("reason"), str) else None
        disk = body.get("disk") if isinstance(body.get("disk"), dict) else {}
        health.disk_free_bytes = _byte_count(disk.get("free_bytes"))
        health.disk_floor_bytes = _byte_count(disk.get("floor_bytes"))

    if device is not None and not device.active:
        revoked_at = device.revoked_at
        if status is not None and status.state == "online" and (revoked_at is None or status.received_at > revoked_at):
            health.unhealthy.append(
                f"revoked at {_when(revoked_at)} but still reporting online ({_when(status.received_at)}): the broker "
                "still lets it in; regenerate the ACL/CRL (devices revoke --broker-dir/--ca-dir) and reload mosquitto")
        return health
    if device is None:
        health.unhealthy.append("not in the device registry: the gallery refuses its records "
                                "(register it, or revoke its certificate)")

    if status is None:
        health.stale.append("never reported a status (not provisioned, never started, or cannot reach the broker)")
    else:
        silent = (now - status.received_at).total_seconds()
        if status.state == "offline":
            why = f" ({health.reason})" if health.reason else ""
            health.stale.append(f"offline{why}, last heard {human_age(silent)} ago")
        elif silent > limits.stale_after.total_seconds():
            limit = human_age(limits.stale_after.total_seconds())
            health.stale.append(f"no status for {human_age(silent)} (more than {limit})")
        if health.alarms:
            health.unhealthy.append(f"alarms: {', '.join(health.alarms)}")
        rejected = health.queue.get("rejected", 0)
        if rejected:
            health.unhealthy.append(f"{rejected} record{'s' if rejected != 1 else ''} rejected by the gallery, "
                                    "kept on the station for review")
        age = health.oldest_pending_age_s
        if age is not None and age > limits.max_pending_age.total_seconds():
            health.unhealthy.append(f"oldest pending record has waited {human_age(age)} "
                                    f"(more than {human_age(limits.max_pending_age.total_seconds())})")
        if health.disk_low:
            health.unhealthy.append(f"disk: {health.disk_text()}: the station refuses new bookings until space "
                                    "is freed (let its queue deliver, or clear the disk)")
    return health


def _when(value: datetime | None) -> str:
    return "?" if value is None else value.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def fleet_report(store: GalleryStore, *, now: datetime | None = None,
                 thresholds: FleetThresholds | None = None) -> list[StationHealth]:
    """Every registered station and every station that sent a status, sorted by county and station."""
    now = now or datetime.now(timezone.utc)
    limits = thresholds or FleetThresholds()
    devices = {d.station: d for d in store.list_devices()}
    statuses = {s.station: s for s in store.list_station_status()}
    rows = [_health(devices.get(name), statuses.get(name), now, limits) for name in set(devices) | set(statuses)]
    _add_audit(store, rows)
    return sorted(rows, key=lambda h: (h.county, h.station))


def _add_audit(store: GalleryStore, rows: list[StationHealth]) -> None:
    """The county's copy of each station's audit log: how far it goes, and any alarm it raised (unhealthy)."""
    chains = AuditChains(store)
    alarms = alarm_summary(store)
    for h in rows:
        held = chains.held_head(h.station)
        h.audit_held_seq = None if held is None else held[0]
        h.audit_alarms, h.audit_acknowledged = alarms.get(h.station, ([], []))
        if h.audit_alarms:
            h.unhealthy.append(f"{'; '.join(h.audit_alarms)} (booking-gallery audit verify --station {h.station})")


def render_table(rows: list[StationHealth], now: datetime) -> list[str]:
    """The plain-text view: one line per station, then one line per flagged station saying why."""
    header = (f"{'station':<16} {'registry':<12} {'state':<8} {'software':<22} {'pend':>5} {'deliv':>6} {'rej':>4} "
              f"{'oldest':>8}  {'last ack (UTC)':<20} {'last seen':>10} {'audit':>6} {'disk free':>10}  alarms")
    lines = [header]

    def num(value: int | None) -> str:
        return "-" if value is None else str(value)

    for h in rows:
        oldest = "-" if h.oldest_pending_age_s is None else human_age(h.oldest_pending_age_s)
        seen = "never" if h.last_seen is None else human_age((now - h.last_seen).total_seconds()) + " ago"
        ack = "-" if h.last_ack_at is None else _when(h.last_ack_at)
        audit = "ALARM" if h.audit_alarms else ("-" if h.audit_held_seq is None else str(h.audit_held_seq))
        free = "unknown" if h.disk_free_bytes is None else human_bytes(h.disk_free_bytes)
        lines.append(
            f"{h.station:<16} {h.registry:<12} {h.state:<8} {(h.software or '-'):<22} {num(h.queue.get('pending')):>5} "
            f"{num(h.queue.get('delivered')):>6} {num(h.queue.get('rejected')):>4} {oldest:>8}  {ack:<20} "
            f"{seen:>10} {audit:>6} {free:>10}  {', '.join(h.alarms) or '-'}"
        )
    flagged = [h for h in rows if h.flagged]
    if flagged:
        lines.append("")
        for h in flagged:
            for kind, reasons in (("STALE", h.stale), ("UNHEALTHY", h.unhealthy)):
                lines += [f"{h.station}: {kind}: {reason}" for reason in reasons]
    acknowledged = [f"{h.station}: ACKNOWLEDGED: {line}" for h in rows for line in h.audit_acknowledged]
    if acknowledged:
        lines += ["", *acknowledged]
    lines.append("")
    lines.append(f"{len(rows)} station{'s' if len(rows) != 1 else ''}: {len(rows) - len(flagged)} ok, "
                 f"{len(flagged)} flagged")
    return lines
