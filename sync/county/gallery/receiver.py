"""The gallery receiver: take signed records off the broker, verify, commit, then ack.

It stays one module (under 600 lines) because the steps below are the methods of one receiver, kept
together to be read in the order the list gives; group commit and the work queue have their own modules.

Per message, in this order (the order is the point):

1. The topic must be ``booking/v1/{county}/{station}/records`` of this gallery's county.
2. The payload must fit ``max_record_bytes`` (checked before any parsing).
3. The topic's station must be a registered, active device of this county.
4. The COSE signature must verify with *that* device's key, and the signer ``kid`` must be that
   station: a station's certificate lets it publish only on its own topic (broker ACL) and its
   key signs only its own records, so neither a stolen certificate nor a stolen key alone lets
   one station speak for another.
5. The record must validate (:mod:`sync.protocol.wire`) and name the same county.
6. It is committed (idempotent on ``record_id``), and only **then** the ack goes out on the
   station's ``acks`` topic at QoS 1: ``stored``, ``duplicate`` for a repeat, or ``rejected`` with
   a reason (``replay`` when the id is known with different content). The station marks a record
   delivered only on ``stored``/``duplicate``. The work the gallery still owes the record (exports,
   indexing) is enqueued in the same transaction and done later by the work queue's thread
   (:mod:`sync.county.gallery.worker`): nothing but verify-once-and-commit is on the ack path.

Every refusal is counted in the store's rejection table (one row per station and reason: a counter with
the first and last example) and logged at a bounded rate (one line per station and reason a minute), and
acked where the topic names a station. Nothing a payload contains can stop the worker: ``on_message`` catches
everything. A store failure (database down) sends no ack at all, so the station simply retries.

The MQTT session is persistent (MQTT 5 ``clean_start=False`` with a session expiry; 3.1.1
``clean_session=False``) so the broker queues records while the gallery restarts; that queue is
an optimisation only, the station's outbox is what guarantees delivery.

Fleet health: every worker also subscribes to ``booking/v1/{county}/+/status`` (a plain
subscription, not the shared one: the broker sends retained messages only to plain subscriptions,
and the retained status is what tells a restarted gallery how each station was last). Each status
body is checked (JSON object, version 1, the topic's county and station, a known state) and kept
as that station's latest (:meth:`GalleryStore.put_station_status`); a body that names another
station than its topic is refused and logged like a bad record. The station's last will says only
"offline", so it is merged over the previous report (the last known queue stays visible). A
retained copy delivered on (re)subscribing is the broker's memory, not news: it never makes a
silent station look recently seen. Statuses are never acked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import re
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timezone
from os import PathLike
from pathlib import Path
from typing import Any, Protocol

from sync.county.gallery import audit_intake
from sync.county.gallery.group_commit import GroupCommitSettings, GroupCommitter
from sync.county.gallery.images import check_decoded_sizes
from sync.county.gallery.ratelog import RateLimitedLog
from sync.county.gallery.store import (
    DEFAULT_DB,
    GalleryStore,
    GalleryStoreError,
    InsertResult,
    RecordConflictError,
    RecordPurgedError,
    StationStatus,
    parse_iso,
)
from sync.county.gallery.worker import JobWorker
from sync.protocol import mqtt, topics
from sync.protocol.wire import (
    ACK_CONTENT_TYPE,
    DEFAULT_MAX_RECORD_BYTES,
    Ack,
    VerifiedRecord,
    WireError,
    encode_ack,
    verify_record,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

log = logging.getLogger(__name__)

#: A status body is a small JSON object; anything bigger is not one of ours.
MAX_STATUS_BYTES = 64 * 1024
#: Refusals of one station and reason are logged at most once per this many seconds (all are counted).
REJECT_LOG_INTERVAL = 60.0
STATUS_STATES = ("online", "offline")
STATUS_VERSION = 1

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


class ReceiverConfigError(ValueError):
    """A receiver configuration that cannot work."""


@dataclass
class ReceiverConfig:
    """Where the broker is, who the gallery is, and what it accepts.

    ``protocol`` is ``"5"`` (default: PUBACK reason codes, message expiry, correlation data) or
    ``"3.1.1"`` for brokers and clouds that speak nothing newer; the protocol works over both.
    ``client_id`` should differ per worker; a broker generated by :mod:`sync.county.broker_config`
    replaces it with the certificate CN anyway, so each worker needs its own certificate.
    ``group_commit`` records at most share one transaction, waiting at most ``group_commit_ms`` for each
    other (:mod:`sync.county.gallery.group_commit`); 1 commits and acks each record on its own.
    """

    county: str
    ca_file: str
    cert_file: str
    key_file: str
    host: str = "localhost"
    port: int = 8883
    protocol: str = "5"
    client_id: str = ""
    share_group: str = topics.SHARE_GROUP
    keepalive: int = 30
    session_expiry: int = 7 * 24 * 3600
    ack_expiry: int = 24 * 3600
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    db: str = DEFAULT_DB
    group_commit: int = 32
    group_commit_ms: float = 5.0

    def __post_init__(self) -> None:
        topics.check_slug(self.county, "county")
        topics.check_slug(self.share_group, "share group")
        if self.protocol not in ("5", "3.1.1"):
            raise ReceiverConfigError(f"protocol must be '5' or '3.1.1', not {self.protocol!r}")
        if not self.client_id:
            self.client_id = f"gallery.{self.county}"
        if not 0 < self.max_record_bytes <= 256 * 1024 * 1024:
            raise ReceiverConfigError("max_record_bytes must be between 1 and 256 MiB")
        if not 1 <= self.group_commit <= 1000 or not 0 <= self.group_commit_ms <= 1000:
            raise ReceiverConfigError("group_commit must be 1-1000 records and group_commit_ms 0-1000 ms")

    @classmethod
    def from_toml(cls, path: str | PathLike[str]) -> ReceiverConfig:
        """Read the ``[broker]`` and ``[gallery]`` tables; ``receiver.example.toml`` beside this module
        is a commented example. Certificate paths are relative to the file."""
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ReceiverConfigError(f"cannot read {path}: {exc}") from None
        merged: dict[str, Any] = {**data.get("broker", {}), **data.get("gallery", {})}
        known = {f.name for f in fields(cls)}
        unknown = set(merged) - known
        if unknown:
            raise ReceiverConfigError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
        base = Path(path).parent
        for key in ("ca_file", "cert_file", "key_file"):
            if key in merged:
                merged[key] = str((base / merged[key]).resolve())
        try:
            return cls(**merged)
        except TypeError as exc:
            raise ReceiverConfigError(f"{path}: {exc}") from None

    def missing_files(self) -> list[str]:
        """One line per TLS file the worker cannot open (naming the key and the path), so a wrong path is
        reported before connecting rather than as an anonymous TLS error."""
        problems = []
        for key in ("ca_file", "cert_file", "key_file"):
            path = Path(getattr(self, key))
            if not path.is_file():
                problems.append(f"[broker] {key} {path} does not exist")
            elif not os.access(path, os.R_OK):
                problems.append(f"[broker] {key} {path} is not readable by this user")
        return problems


@dataclass
class Outcome:
    """What the receiver did with one message (for logs, tests and counters)."""

    topic: str
    station: str | None
    ack: Ack | None
    ack_topic: str | None = None


@dataclass
class Checked:
    """A message after the checks (:meth:`GalleryReceiver.check`): refused (``outcome`` holds the ack, if
    any) or ``verified``, waiting for its commit."""

    outcome: Outcome
    payload: bytes
    received_at: datetime
    verified: VerifiedRecord | None = None


@dataclass
class StatusOutcome:
    """What the receiver did with one status message: ``stored``, ``unchanged`` (a retained copy of
    what is already kept), ``cleared`` (an empty retained message) or ``rejected`` with a reason."""

    topic: str
    station: str | None
    result: str
    reason: str | None = None


@dataclass
class ReceiverStats:
    counts: Counter[str] = field(default_factory=Counter)


def _clean(text: str, limit: int = 300) -> str:
    return _UNSAFE.sub("?", text)[:limit] or "-"


def _disk_figures_ok(value: Any) -> bool:
    """``disk`` of a status: ``{free_bytes, floor_bytes}``, each a count of bytes or null (unknown). Older
    stations send no ``disk`` at all, which is fine; a malformed one is refused like any wrong type."""
    if not isinstance(value, dict):
        return False
    return all(value.get(k) is None or (isinstance(value[k], int) and not isinstance(value[k], bool) and value[k] >= 0)
               for k in ("free_bytes", "floor_bytes"))


def parse_status(payload: bytes, *, county: str, station: str) -> dict[str, Any]:
    """The status body of ``station`` (see ``sync.station.agent``) checked against its topic, or WireError.

    Only what the fleet view relies on is checked (types of the fields it shows); extra keys from a
    newer station are kept. The topic's station is what the broker vouches for (its ACL lets a
    certificate write only its own status), so a body naming anyone else is refused, not trusted.
    """
    if len(payload) > MAX_STATUS_BYTES:
        raise WireError("oversize", f"status of {len(payload)} bytes is over {MAX_STATUS_BYTES}")
    try:
        body = json.loads(payload)
    except (UnicodeDecodeError, ValueError) as exc:
        raise WireError("bad_status", f"status is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise WireError("bad_status", "status must be a JSON object")
    if body.get("v") != STATUS_VERSION:
        raise WireError("bad_status", f"status version {body.get('v')!r} is not {STATUS_VERSION}")
    if body.get("station") != station:
        raise WireError("status_mismatch", f"status names station {str(body.get('station'))[:64]!r} but came on "
                                           f"{station!r}'s topic")
    if body.get("county") != county:
        raise WireError("status_mismatch", f"status names county {str(body.get('county'))[:64]!r}, not {county!r}")
    if body.get("state") not in STATUS_STATES:
        raise WireError("bad_status", f"status state {str(body.get('state'))[:32]!r} is not online or offline")
    checks: list[tuple[str, Callable[[Any], bool]]] = [
        ("software", lambda v: isinstance(v, str)),
        ("at", lambda v: isinstance(v, str)),
        ("queue", lambda v: isinstance(v, dict) and all(
            isinstance(k, str) and isinstance(n, int) and not isinstance(n, bool) and n >= 0 for k, n in v.items())),
        ("in_flight", lambda v: isinstance(v, int) and not isinstance(v, bool)),
        ("oldest_pending_age_s", lambda v: v is None or (
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v))),
        ("last_ack_at", lambda v: v is None or isinstance(v, str)),
        ("alarms", lambda v: isinstance(v, list) and all(isinstance(a, str) for a in v)),
        ("reason", lambda v: isinstance(v, str)),
        ("disk", _disk_figures_ok),
    ]
    for key, ok in checks:
        if key in body and not ok(body[key]):
            raise WireError("bad_status", f"status field {key!r} has the wrong type")
    return body


class CheckAnswerer(Protocol):
    """What the receiver needs of the booking-time check (:mod:`sync.county.search.booking_check`)."""

    content_type: str

    def handle(self, topic_name: str, payload: bytes, *, response_topic: str | None,
               correlation: bytes | None) -> Any: ...


class IndexFeed(Protocol):
    """What the receiver needs of the search index (:class:`sync.county.search.index.SearchIndex`)."""

    def catch_up(self, store: GalleryStore) -> int: ...

    def reconcile(self, store: GalleryStore) -> tuple[int, int]: ...


class GalleryReceiver:
    """Subscribes to ``$share/{group}/booking/v1/{county}/+/records`` and handles each record.

    :meth:`handle` is the whole per-message decision without MQTT (unit-testable); :meth:`start`,
    :meth:`stop` and :meth:`run_forever` wire it to a paho-mqtt 2.x client. ``jobs`` is the work queue's
    worker: its kinds are enqueued with every committed record, and it runs while the receiver does.
    """

    def __init__(
        self,
        config: ReceiverConfig,
        store: GalleryStore,
        *,
        clock: Callable[[], datetime] | None = None,
        jobs: JobWorker | None = None,
    ) -> None:
        self.config = config
        self.store = store
        self.jobs = jobs
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.stats = ReceiverStats()
        self._reject_log = RateLimitedLog(REJECT_LOG_INTERVAL)
        self.subscribed = threading.Event()
        self.client: mqtt.Client | None = None
        #: The search index to bring up to date after each stored record (None: no search index).
        self.index: IndexFeed | None = None
        self._purged_seen: int | None = None  # the store's purge count the index last reconciled with
        #: Answers the stations' booking-time checks when set before :meth:`start` (None: not subscribed).
        self.checks: CheckAnswerer | None = None
        self.committer: GroupCommitter | None = None
        #: The checkers' own connection (:meth:`GalleryStore.reader`), opened by :meth:`start` with group commit.
        self._reads: GalleryStore | None = None
        self._last_record = -1e9
        if jobs is not None:
            jobs.defer_while = self.busy

    # -------------------------------------------------------------------------- the decision
    def handle(self, topic_name: str, payload: bytes) -> Outcome:
        """Verify, store and decide the ack for one message. Store failures propagate."""
        checked = self.check(topic_name, payload)
        if checked.verified is None:
            return checked.outcome
        try:
            result: InsertResult | GalleryStoreError = self.store.insert_record(
                checked.verified, payload, received_at=checked.received_at, jobs=self.job_kinds)
        except (RecordConflictError, RecordPurgedError) as exc:
            result = exc
        outcome = self.settle(checked, result)
        if self.jobs is not None:
            self.jobs.wake()
        return outcome

    def check(self, topic_name: str, payload: bytes) -> Checked:
        """Steps 1-5 (everything before the commit). A refusal is logged and its ack is in ``outcome``;
        a record that passes comes back ``verified``, its ack decided by :meth:`settle` after the commit."""
        received_at = self.clock()
        try:
            parsed = topics.parse_topic(topic_name)
        except topics.TopicError as exc:
            self._reject(topic_name, None, payload, WireError("bad_topic", str(exc)), received_at)
            return Checked(Outcome(topic_name, None, None), payload, received_at)
        if parsed.kind != "records" or parsed.county != self.config.county:
            self._reject(
                topic_name, parsed.station, payload, WireError("bad_topic", "not this county's records"), received_at
            )
            return Checked(Outcome(topic_name, parsed.station, None), payload, received_at)
        station = parsed.station
        ack_topic = topics.acks_topic(parsed.county, station)
        try:
            verified = self._verify(parsed, payload)
        except WireError as exc:
            self._reject(topic_name, station, payload, exc, received_at)
            ack = Ack(exc.record_id, "rejected", exc.code, _clean(exc.message))
            return Checked(Outcome(topic_name, station, ack, ack_topic), payload, received_at)
        return Checked(Outcome(topic_name, station, None, ack_topic), payload, received_at, verified)

    def settle(self, checked: Checked, result: InsertResult | GalleryStoreError) -> Outcome:
        """The ack of a verified record once its commit is known: ``stored``/``duplicate``, or ``rejected``
        (``replay``) for different content under a known id. Any other store error is raised: no ack."""
        assert checked.verified is not None
        record_id = checked.verified.record.record_id
        outcome = checked.outcome
        if isinstance(result, (RecordConflictError, RecordPurgedError)):
            # RecordPurgedError: a sealed booking a station still had in its outbox; refused, and its own
            # purge command removes it there.
            code = "replay" if isinstance(result, RecordConflictError) else "purged"
            exc = WireError(code, str(result), record_id=record_id)
            self._reject(outcome.topic, outcome.station, checked.payload, exc, checked.received_at)
            return replace(outcome, ack=Ack(record_id, "rejected", exc.code, _clean(exc.message)))
        if isinstance(result, Exception):
            raise result
        self.stats.counts[result] += 1
        log.info("record %s from %s: %s", record_id, outcome.station, result)
        if result == "stored" and not (self.jobs is not None and "index" in self.jobs.kinds):
            self.refresh_index()  # no work queue runs the index: keep it current here
        return replace(outcome, ack=Ack(record_id, result))

    def refresh_index(self) -> None:
        """The record is committed and is acked whatever happens here: the index is derived from the store,
        and what a failed catch-up missed, the next record's catch-up (or the next start) adds."""
        try:
            self.update_index()
        except Exception:
            self.stats.counts["index_errors"] += 1
            log.exception("the search index could not catch up; it will on the next record or restart")

    def update_index(self, job: object = None) -> str | None:
        """Bring the search index up to the store (the work queue's ``index`` job; ``job`` is unused: the
        index catches up to everything committed, whichever record's job runs it)."""
        if self.index is None:
            return None
        purged = self.store.purged_count()
        if purged != self._purged_seen:  # `booking-gallery purge` ran: drop its templates from this copy too
            self.index.reconcile(self.store)
            self._purged_seen = purged
            return "reconciled"
        return f"{self.index.catch_up(self.store)} added"

    def handle_status(self, topic_name: str, payload: bytes, *, retained: bool = False) -> StatusOutcome:
        """Check one status message and keep it as its station's latest. Store failures propagate."""
        received_at = self.clock()
        try:
            parsed = topics.parse_topic(topic_name)
        except topics.TopicError as exc:
            self._reject(topic_name, None, payload, WireError("bad_topic", str(exc)), received_at)
            return StatusOutcome(topic_name, None, "rejected", "bad_topic")
        station = parsed.station
        if parsed.kind != "status" or parsed.county != self.config.county:
            self._reject(topic_name, station, payload, WireError("bad_topic", "not this county's status"), received_at)
            return StatusOutcome(topic_name, station, "rejected", "bad_topic")
        if not payload:
            # Someone cleared the retained status (e.g. a decommissioned station); what we knew stays.
            log.info("retained status of %s was cleared on the broker", station)
            return StatusOutcome(topic_name, station, "cleared")
        try:
            body = parse_status(payload, county=parsed.county, station=station)
        except WireError as exc:
            self._reject(topic_name, station, payload, exc, received_at)
            return StatusOutcome(topic_name, station, "rejected", exc.code)
        previous = self.store.get_station_status(station)
        if previous is not None and "queue" not in body:
            # The last will carries no figures: keep the last known ones (and their time) under it.
            body = {**previous.body, **body}
        if retained and previous is not None and previous.body == body:
            return StatusOutcome(topic_name, station, "unchanged")
        self.store.put_station_status(station, parsed.county, body,
                                      received_at=_seen_at(body, previous, retained, received_at))
        audit_intake.check_status_head(self.store, station, parsed.county, body, now=received_at)
        self.stats.counts["status"] += 1
        return StatusOutcome(topic_name, station, "stored")

    def _verify(self, parsed: topics.Topic, payload: bytes) -> VerifiedRecord:
        station = parsed.station
        if len(payload) > self.config.max_record_bytes:
            raise WireError("oversize", f"{len(payload)} bytes is over {self.config.max_record_bytes}")
        device = (self._reads or self.store).get_device(station)
        if device is None:
            raise WireError("unknown_station", f"station {station!r} is not registered with this gallery")
        if not device.active:
            raise WireError("revoked_device", f"station {station!r} was revoked")
        if device.county != parsed.county:
            raise WireError("wrong_county", f"station {station!r} is registered to {device.county!r}")

        def lookup(kid: str) -> Any:
            if kid != station:
                raise WireError("kid_mismatch", f"signed by {kid!r} but sent on {station!r}'s topic")
            return device.verify_key()

        verified = verify_record(payload, lookup, max_bytes=self.config.max_record_bytes)
        record = verified.record
        if record.county != parsed.county:
            raise WireError("county_mismatch", f"record is for county {record.county!r}", record_id=record.record_id)
        check_decoded_sizes(verified)
        return verified

    @property
    def job_kinds(self) -> tuple[str, ...]:
        """What is enqueued with each record: the worker's kinds (``export:<format>``, ``index``, ...)."""
        return () if self.jobs is None else self.jobs.kinds

    def _reject(
        self, topic_name: str, station: str | None, payload: bytes, exc: WireError, received_at: datetime
    ) -> None:
        self.stats.counts["rejected"] += 1
        total = self.store.log_rejection(
            topic=_clean(topic_name, 512),
            station=station,
            record_id=exc.record_id,
            reason=exc.code,
            detail=_clean(exc.message, 1000),
            payload_sha256=hashlib.sha256(payload).digest(),
            payload_size=len(payload),
            received_at=received_at,
        )
        held = self._reject_log.allow((station, exc.code))  # one line per station and reason per interval
        if held is not None:
            log.warning(
                "rejected payload on %s (%d bytes, record %s): %s: %s%s",
                _clean(topic_name, 200),
                len(payload),
                exc.record_id or "-",
                exc.code,
                _clean(exc.message),
                f" [{held} more like it since the last line, {total} in all]" if held else "",
            )

    # --------------------------------------------------------------------------------- MQTT
    def _on_event(self, event: mqtt.Event) -> None:
        """The client's events, on its network thread. A message is handled right here, so the broker
        gets its PUBACK (sent when this returns) only after the record was committed and acked."""
        if isinstance(event, mqtt.Message):
            self._on_message(event)
        elif isinstance(event, mqtt.Connected):
            log.info("connected to %s:%d (session present: %s)", self.config.host, self.config.port,
                     event.session_present)
        elif isinstance(event, mqtt.Refused):
            log.error("broker refused the gallery connection: %s", event.reason)
        elif isinstance(event, mqtt.Subscribed):
            self._on_subscribed(event)
        elif isinstance(event, mqtt.Disconnected):
            self.subscribed.clear()
            log.warning("disconnected from the broker (%s); paho reconnects", event.reason)

    def _on_message(self, message: mqtt.Message) -> None:
        """Never raises: a bad payload or a store outage must not stop the network loop. With group commit
        a verified record goes to the committer, which acks it after its transaction; everything else is
        answered (and PUBACKed) here."""
        handed_off = False
        try:
            topic_name = message.topic
            if topic_name.endswith("/status"):
                self.handle_status(topic_name, message.payload, retained=message.retain)
                return
            if topic_name.endswith("/audit"):
                self._on_audit(message)
                return
            if topic_name.endswith("/checks"):
                self._on_check(message)
                return
            self._last_record = time.monotonic()
            if self.committer is not None:
                self.committer.submit_message(message)  # checked on a checker thread, answered in order
                handed_off = True
                return
            outcome = self.handle(topic_name, message.payload)
            if outcome.ack is not None and outcome.ack_topic is not None:
                self.publish_ack(message.client, outcome.ack_topic, outcome.ack, message)
        except Exception:
            self.stats.counts["errors"] += 1
            log.exception("could not handle a message on %s; no ack sent, the station will retry",
                          _clean(message.topic, 200))
        finally:
            if self.config.group_commit > 1 and not handed_off:
                with contextlib.suppress(Exception):
                    message.client.ack(message.mid, message.qos)

    def _on_audit(self, message: mqtt.Message) -> None:
        """A station's audit batch (:mod:`sync.county.gallery.audit_intake`), acked on its audit-acks topic."""
        ack, ack_topic = audit_intake.handle_audit(self, message.topic, message.payload)
        if ack is not None and ack_topic is not None:
            audit_intake.publish_audit_ack(message.client, ack_topic, ack, self.config.ack_expiry)

    def _on_check(self, message: mqtt.Message) -> None:
        if self.checks is None:
            return
        reply = self.checks.handle(message.topic, message.payload, response_topic=message.response_topic,
                                   correlation=message.correlation_data)
        if reply is not None:
            # An answer nobody waits for any more is worthless: it expires with the request (MQTT 5).
            message.client.publish(reply.topic, reply.payload, qos=1, retain=False,
                                   content_type=self.checks.content_type, expiry=300,
                                   correlation_data=reply.correlation)

    def publish_ack(self, client: mqtt.Client, ack_topic: str, ack: Ack, message: mqtt.Message) -> None:
        # A lost ack costs nothing: the station retries and gets "duplicate". So acks may expire (MQTT 5)
        # instead of piling up for a station that is gone.
        correlation = message.correlation_data
        client.publish(ack_topic, encode_ack(ack), qos=1, retain=False, content_type=ACK_CONTENT_TYPE,
                       expiry=self.config.ack_expiry,
                       correlation_data=correlation if correlation is not None and len(correlation) <= 64 else None)

    def _on_subscribed(self, event: mqtt.Subscribed) -> None:
        reasons = event.reasons
        if reasons and reasons[0].is_failure:
            log.error("broker refused the gallery subscription: %s", [str(r) for r in reasons])
            return
        if len(reasons) > 2 and reasons[2].is_failure:
            log.error("broker refused the booking-check subscription (%s): stations' checks go unanswered; "
                      "regenerate the ACL with `booking-gallery broker-config`", reasons[2])
        if len(reasons) > 1 and reasons[1].is_failure:
            # Records still flow; only the fleet view goes stale. Say so rather than refuse to work.
            log.error("broker refused the station status subscription (%s): `booking-gallery fleet` will not "
                      "update; regenerate the ACL with `booking-gallery broker-config`", reasons[1])
        self.subscribed.set()

    def mqtt_settings(self) -> mqtt.Settings:
        """A persistent session with paho's own reconnect, TLS 1.2+ with the gallery's certificate, and one
        SUBSCRIBE per connection: records first (their reason code decides readiness), status second, the
        stations' audit batches third (shared like records; :mod:`sync.county.gallery.audit_intake`)."""
        cfg = self.config
        return mqtt.Settings(
            host=cfg.host, port=cfg.port, client_id=cfg.client_id,
            ca_file=cfg.ca_file, cert_file=cfg.cert_file, key_file=cfg.key_file,
            protocol=cfg.protocol, keepalive=cfg.keepalive, clean_start=False, session_expiry=cfg.session_expiry,
            subscriptions=((topics.gallery_subscription(cfg.county, cfg.share_group), 1),
                           (status_subscription(cfg.county), 1),
                           (topics.gallery_audit_subscription(cfg.county, cfg.share_group), 1))
            + (((topics.checks_subscription(cfg.county, cfg.share_group), 1),) if self.checks is not None else ()),
            reconnect_min=1, reconnect_max=30, manual_ack=cfg.group_commit > 1,
        )  # fmt: skip

    def build_client(self) -> mqtt.Client:
        """A configured, unconnected client (TLS 1.2+ with the gallery's certificate)."""
        return mqtt.Client(self.mqtt_settings(), self._on_event)

    def start(self) -> None:
        """Start the work queue's thread, connect in the background (retrying until the broker answers)
        and start the loop."""
        if self.jobs is not None:
            self.jobs.start()
        if self.config.group_commit > 1 and self.committer is None:
            self._reads = self.store.reader()
            self.committer = GroupCommitter(self, GroupCommitSettings(self.config.group_commit,
                                                                      self.config.group_commit_ms / 1000.0))
            self.committer.start()
        self.client = client = self.build_client()
        client.connect_async()
        client.loop_start()

    def wait_ready(self, timeout: float = 10.0) -> bool:
        """True once the shared subscription is in place."""
        return self.subscribed.wait(timeout)

    def stop(self) -> None:
        if self.committer is not None:
            self.committer.stop()  # commits and acks what it holds while the connection is still up
            self.committer = None
        if self._reads is not None:
            if self._reads is not self.store:
                self._reads.close()
            self._reads = None
        if self.client is not None:
            self.client.disconnect()
            self.client.loop_stop()
            self.client = None
        if self.jobs is not None:
            self.jobs.stop()

    def busy(self) -> bool:
        """A record arrived in the last 0.1 s (the work queue then lets the acks go first)."""
        return time.monotonic() - self._last_record < 0.1

    def _threads_alive(self) -> bool:
        return (self.jobs is None or self.jobs.healthy()) and (self.committer is None or self.committer.alive())

    def run_forever(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set (the CLI sets it on SIGTERM/SIGINT).

        Under systemd (``Type=notify``) it reports READY as soon as it runs (it reconnects to the broker
        by itself, so a broker that starts later is not a failed start), says in its status line whether
        it is subscribed, and feeds the watchdog only while paho's network thread and the work queue's thread
        are alive, so a wedged worker is restarted rather than kept.
        """
        from sync.protocol.sdnotify import Watchdog, notify_ready, notify_status, notify_stopping

        self.start()
        notify_ready(f"connecting to {self.config.host}:{self.config.port}")
        watchdog = Watchdog.from_environment()
        subscribed = False
        try:
            while True:
                if self.subscribed.is_set() != subscribed:
                    subscribed = self.subscribed.is_set()
                    notify_status(f"subscribed to {self.config.county} records" if subscribed
                                  else f"waiting for the broker at {self.config.host}:{self.config.port}")
                if self.client is not None and self.client.loop_alive() and self._threads_alive():
                    watchdog.ping_if_due()
                if stop.wait(0.5):
                    break
        finally:
            notify_stopping("gallery worker stopping")
            self.stop()


def status_subscription(county: str) -> str:
    """Every station's retained status of ``county`` (a plain subscription, see the module docstring)."""
    return f"{topics.PREFIX}/{topics.check_slug(county, 'county')}/+/status"


def _seen_at(body: dict[str, Any], previous: StationStatus | None, retained: bool, now: datetime) -> datetime:
    """When the gallery last heard from the station, for this status: now for a live message. A retained
    copy is what the broker remembered, possibly from long ago, so it counts from the station's own
    timestamp (never later than now), or keeps what was known: a station that went silent while the
    gallery was down must never look fresh."""
    if not retained:
        return now
    at = parse_iso(body.get("at"))
    if at is not None:
        return min(at, now)
    return previous.received_at if previous is not None else now
