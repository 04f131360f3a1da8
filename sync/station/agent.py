"""The station's sync agent: delivers the SQLite outbox to the county gallery over MQTT with mutual TLS.

The rules it is built around (design.md, "Reliability rules")
------------------------------------------------------------
* **The outbox is the only truth.** A record leaves ``pending`` only when the gallery's ack says
  ``stored`` or ``duplicate`` for that very record id (``Store.mark_delivered``), or ``rejected`` with
  that id (``Store.mark_rejected`` plus an alarm; the record is kept). A broker PUBACK proves nothing:
  Mosquitto PUBACKs and then drops QoS 1 messages beyond ``max_queued_messages`` (1000 by default).
  Nothing is ever held only in memory: the in-flight table below is a cache of "published, ack not yet
  seen", and losing it (a crash, ``SIGKILL``, a power cut) only means some records are published again,
  which the gallery answers with ``duplicate``.
* **Every attempt without an ack is retried**, with capped exponential backoff and jitter on the
  outbox row (``next_attempt_at``), across restarts and outages of any length. An attempt fails when
  no ack arrives within ``ack_timeout`` of the broker taking the record, when the connection drops
  before the ack, when the broker refuses it (MQTT 5 PUBACK reason code), or when MQTT 5 says no one is
  subscribed (0x10). After an outage the backoff would make the queue drain slowly, so while acks are
  arriving (the gallery is demonstrably up) the agent sends pending records without waiting for their
  backoff. A record the gallery never acks costs one publish per ``ack_timeout`` then, never a loop.
* **A bounded number of records is in flight** (``max_in_flight``), so memory, the burst after a
  reconnect and paho's own queue stay bounded; nothing relies on paho's queue either: each connection
  gets a fresh paho client, so a dead connection's queue is dropped with it, not resent later.
* **Deterministic payloads.** The record is re-read from the store and re-encoded for every attempt;
  ``sync.protocol.wire`` encodes canonical CBOR and Ed25519 signatures are deterministic, so every attempt
  sends the same bytes and the gallery sees a true repeat (``duplicate``), never a ``replay``.

The connection
--------------
MQTT 5 by default (3.1.1 by config; MQTT 5 properties are used when present and never needed), TLS 1.2+
with the station's certificate (its CN is the station slug, which the broker ACL uses), a persistent
session (so acks and commands that arrive while the station is down wait for it), subscriptions to the
station's own ``acks`` and ``commands``, and a retained ``status`` message (online, queue depth by state,
oldest pending age, last ack time, software version) whose last will marks the station offline.
Reconnects use capped exponential backoff with jitter, so a fleet that lost the broker at once does
not come back in lockstep. Incoming messages are acknowledged to the broker (manual PUBACK) only after
they were handled, so an ack or command that arrives just before a crash is delivered again.

Threads: paho's network thread only puts events on a queue; one agent thread owns the SQLite store
(connections belong to one thread) and does all the work. A third, small thread owns the connection
life cycle (connect, backoff, reconnect).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import socket
import sqlite3
import ssl
import struct
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from appliance import __version__ as APPLIANCE_VERSION
from appliance.store import (
    OutboxStateError,
    Store,
    StoreError,
    UnknownRecordError,
)
from appliance.store.db import StoredRecord
from appliance.store.outbox import OutboxEntry, backoff_delay
from firmware.provision import ProvisionError, finish_rotation, rotate_certificate
from sync.protocol import sdnotify, topics, wire
from sync.protocol.files import make_private_dir, write_file_atomic
from sync.protocol.tls import tls_context
from sync.station.config import SyncConfig
from sync.station.remote import (
    CommandHandler,
    CommandOutcome,
    RotationFailed,
    load_command_keys,
    load_remote_settings,
    private_files_ok,
    state_dir,
)

log = logging.getLogger("booking_station.sync")

SOFTWARE = f"booking-station {APPLIANCE_VERSION}"
STATUS_FILE = "status.json"
STATUS_CONTENT_TYPE = "application/json"
#: A record copy the broker still holds for an absent gallery after a day is stale: the outbox has
#: sent it again since. Expiring it bounds the broker memory taken by repeats (MQTT 5 only).
RECORD_EXPIRY_SECONDS = 24 * 3600
#: Status is also sent when the queue changed, but not more often than this.
STATUS_MIN_INTERVAL = 5.0
#: How long the agent thread sleeps when there is nothing to do (new bookings are found this late).
POLL_SECONDS = 0.5
NO_MATCHING_SUBSCRIBERS = 0x10

# Alarms this agent raises (appliance.store.alarms keeps them; the UI and `booking-station queue` show them).
ALARM_RECORD_REJECTED = "record_rejected"
ALARM_RECORD_UNSENDABLE = "record_unsendable"
ALARM_GALLERY_REFUSING = "gallery_refusing"
ALARM_ACK_CONFLICT = "ack_conflict"
ALARM_BROKER_REFUSING = "broker_refusing"


class SyncSetupError(RuntimeError):
    """The agent cannot start (missing key, unreadable certificate, bad config); the message says why."""


class Unsendable(Exception):
    """A stored record that cannot be turned into a valid wire record (or is over the size limit)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


# ------------------------------------------------------------------------------------ the record
def to_wire_record(stored: StoredRecord, *, county: str, station: str) -> wire.WireRecord:
    """The wire form of a stored record. Pure and deterministic: the same stored record always gives
    the same WireRecord, which is what makes a resend a ``duplicate`` and not a ``replay``."""
    b = stored.booking
    captures = []
    for c in stored.captures:
        template = None
        if c.template is not None:
            if c.template_model is None:
                raise Unsendable("bad_template", f"{c.pose} template has no model id")
            template = wire.WireTemplate.from_floats(c.template_model, list(c.template))
        captures.append(
            wire.WireCapture(
                pose=c.pose,
                jpeg=c.jpeg,
                width=c.width,
                height=c.height,
                sha256=bytes.fromhex(c.sha256),
                quality=dict(c.quality),
                template=template,
                override_reason=c.override_reason,
                description=c.smt_description,
            )
        )
    return wire.WireRecord(
        record_id=stored.record_id,
        station=station,
        county=county,
        booking=wire.WireBooking(
            ori=b.agency_ori, booking_number=b.booking_number, operator=b.operator_id, captured_at=b.captured_at
        ),
        captures=tuple(captures),
        created_at=stored.created_at,
    )


def encode_stored(
    store: Store, record_id: str, *, county: str, station: str, key: Ed25519PrivateKey, max_bytes: int
) -> bytes:
    """Load (decrypt, check hashes), convert and sign one record. Raises :class:`Unsendable` when the
    record cannot be sent as stored, ``UnknownRecordError`` when it is gone (purged meanwhile)."""
    try:
        stored = store.load_record(record_id)
    except UnknownRecordError:
        raise
    except StoreError as exc:  # DecryptError, RecordIntegrityError, RecordPurgedError
        raise Unsendable(type(exc).__name__, str(exc)) from None
    if stored.booking.station_id != station:
        raise Unsendable(
            "station_mismatch", f"record was saved by station {stored.booking.station_id!r}, this is {station!r}"
        )
    try:
        payload = wire.encode_record(to_wire_record(stored, county=county, station=station), key)
    except wire.WireError as exc:
        raise Unsendable(exc.code, exc.message) from None
    except (struct.error, OverflowError, ValueError, TypeError) as exc:
        raise Unsendable("encode_failed", str(exc)) from None
    if len(payload) > max_bytes:
        raise Unsendable("oversize", f"signed record is {len(payload)} bytes, the limit is {max_bytes}")
    return payload


def load_signing_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    """The station's Ed25519 record-signing key (PEM, PKCS#8), which must be private to its owner."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise SyncSetupError(f"record-signing key {path} does not exist; provision the station first") from None
    except OSError as exc:
        raise SyncSetupError(f"record-signing key {path} cannot be read: {exc.strerror or exc}") from None
    if not private_files_ok(path):
        raise SyncSetupError(f"record-signing key {path} is readable by others; run: chmod 600 {path}")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise SyncSetupError(f"record-signing key {path} is not a PEM private key: {exc}") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SyncSetupError(f"record-signing key {path} is not an Ed25519 key")
    return key


# ----------------------------------------------------------------------------------- the agent
@dataclass
class InFlight:
    """A record published on connection ``generation`` and not yet answered by the gallery."""

    record_id: str
    generation: int
    mid: int
    deadline: float
    attempts: int


class SyncAgent:
    """Delivers the outbox of ``data_dir`` as ``config`` says. Call :meth:`run` in the thread that should
    own the store; it returns when ``stop`` is set (the CLI sets it on SIGTERM)."""

    def __init__(
        self,
        config: SyncConfig,
        data_dir: Path | str,
        *,
        clock: Callable[[], datetime] | None = None,
        store_options: dict[str, Any] | None = None,
    ) -> None:
        self.config = config
        self.data_dir = Path(data_dir)
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.store_options = dict(store_options or {})
        self.county, self.station = config.county, config.station
        self.records_topic = topics.records_topic(self.county, self.station)
        self.acks_topic = topics.acks_topic(self.county, self.station)
        self.commands_topic = topics.commands_topic(self.county, self.station)
        self.status_topic = topics.status_topic(self.county, self.station)
        self.status_interval = config.status_interval
        self.stats: Counter[str] = Counter()
        self.ready = threading.Event()  # set while subscribed (tests and the CLI wait on it)
        self.last_error: str | None = None
        self.command_outcomes: list[CommandOutcome] = []
        self._events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        self._net_stop = threading.Event()
        self._net_thread: threading.Thread | None = None
        self._generation = 0
        self._conn_gen = -1
        self._conn_client: mqtt.Client | None = None
        self._pub_client: mqtt.Client | None = None
        self._inflight: dict[str, InFlight] = {}
        self._by_mid: dict[tuple[int, int], str] = {}
        self._last_delivered_mono: float | None = None
        self._last_ack_at: datetime | None = None
        self._status_due = 0.0
        self._status_sent = 0.0
        self._status_dirty = True
        self._refusing_alarm = False
        self._broker_alarm = False
        self._store: Store | None = None
        self._key: Ed25519PrivateKey | None = None
        self._commands: CommandHandler | None = None
        self._reconnect_requested = False  # set by a certificate rotation: the next connection uses new files
        self._rotate_retry_at = 0.0  # monotonic time of the next retry of a failed rotation (0: at start)
        self._watchdog = sdnotify.Watchdog.from_environment()

    # ---------------------------------------------------------------------------- life cycle
    def setup(self) -> None:
        """Open the store and load keys and certificates; :class:`SyncSetupError` if anything is missing.
        Runs in the thread that will call :meth:`step` (the store belongs to it)."""
        cfg = self.config
        self._key = load_signing_key(cfg.signing_key)
        try:  # a certificate rotation a crash interrupted between certificate and key is finished first
            if finish_rotation(Path(cfg.key_file), Path(cfg.cert_file)):
                log.warning("finished an interrupted certificate rotation: installed %s", cfg.key_file)
        except OSError as exc:
            raise SyncSetupError(f"cannot finish an interrupted certificate rotation: {exc}") from None
        try:
            tls_context(cfg.ca_file, cfg.cert_file, cfg.key_file)
        except (OSError, ssl.SSLError) as exc:
            raise SyncSetupError(
                f"TLS files unusable (ca {cfg.ca_file}, certificate {cfg.cert_file}, key {cfg.key_file}): {exc}"
            ) from None
        try:
            keys = load_command_keys(cfg.command_keys)
        except (OSError, ValueError) as exc:
            raise SyncSetupError(str(exc)) from None
        try:
            self._store = Store.open_data_dir(self.data_dir, **self.store_options)
        except StoreError as exc:
            raise SyncSetupError(str(exc)) from None
        try:
            self._prepare(keys)
        except BaseException:
            self._store.close()
            self._store = None
            raise
        self._net_stop.clear()
        self._net_thread = threading.Thread(target=self._network_main, name="sync-network", daemon=True)
        self._net_thread.start()

    def _prepare(self, keys: dict[str, Any]) -> None:
        """The agent's state directory and command handler (after the store is open, so that a failure
        here can close it again)."""
        assert self._store is not None
        make_private_dir(state_dir(self.data_dir))
        for leftover in state_dir(self.data_dir).glob(".*.tmp"):  # a kill during an atomic write
            with contextlib.suppress(OSError):
                leftover.unlink()
        remote = load_remote_settings(self.data_dir)
        if "status_interval" in remote:
            self.status_interval = float(remote["status_interval"])
        self._commands = CommandHandler(
            self._store,
            county=self.county,
            station=self.station,
            data_dir=self.data_dir,
            keys=keys,
            clock=self.clock,
            on_purged=self._forget,
            on_settings=self._apply_settings,
            rotator=self._rotate_certificate if self.config.enroll_url else None,
        )
        active = {a.name for a in self._store.active_alarms()}
        self._refusing_alarm = ALARM_GALLERY_REFUSING in active
        self._broker_alarm = ALARM_BROKER_REFUSING in active
        self._last_ack_at = self._read_last_ack()

    def run(self, stop: threading.Event) -> None:
        """Deliver until ``stop`` is set; then say offline, disconnect and close the store."""
        self.setup()
        sdnotify.notify_ready(f"delivering to {self.config.host}:{self.config.port}")
        try:
            while not stop.is_set():
                try:
                    self.step()
                except (StoreError, sqlite3.Error) as exc:
                    # The database was busy past its timeout, or the disk is full: nothing was lost (the
                    # outbox row is unchanged), so pause and go on. The watchdog is fed only by steps
                    # that complete, so a store that stays broken gets the service restarted by systemd.
                    self.stats["store_errors"] += 1
                    self.last_error = f"store: {exc}"
                    log.error("store error in the sync loop (%s); retrying in a second", exc)
                    stop.wait(1.0)
        finally:
            sdnotify.notify_stopping("sync agent stopping")
            self.shutdown()

    def shutdown(self) -> None:
        """Publish the retained offline status (best effort), disconnect cleanly, close the store."""
        client = self._conn_client
        if client is not None and self._store is not None:
            try:
                info = self._publish_status(client, self._status_body("offline", reason="stopped"))
                if info is not None:
                    info.wait_for_publish(timeout=3)
            except (RuntimeError, ValueError, StoreError):
                pass
        self._net_stop.set()
        if self._net_thread is not None:
            self._net_thread.join(timeout=15)
        self.ready.clear()
        if self._store is not None:
            with contextlib.suppress(OSError, StoreError):
                self._write_status_file(self._status_body("offline", reason="stopped"), connected=False)
            self._store.close()
            self._store = None

    # ------------------------------------------------------------------------------ one step
    def step(self, wait: float = POLL_SECONDS) -> None:
        """One round of the agent loop: handle what arrived, expire silent attempts, fill the
        in-flight window, send status, then wait briefly for the next event."""
        self._drain_events()
        self._retry_rotation()
        self._reconnect_if_requested()
        self._expire()
        self._fill()
        self._maybe_status()
        self._watchdog.ping_if_due()
        try:
            event = self._events.get(timeout=wait)
        except queue.Empty:
            return
        self._handle_event(event)

    def _drain_events(self, limit: int = 500) -> None:
        for _ in range(limit):
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            self._handle_event(event)

    def _handle_event(self, event: tuple[Any, ...]) -> None:
        kind, gen = event[0], event[1]
        if kind == "connected":
            self._conn_gen, self._conn_client = gen, event[2]
            self.last_error = None
            log.info("connected to %s:%d (session present: %s)", self.config.host, self.config.port, event[3])
        elif kind == "ready":
            if gen == self._conn_gen:
                self._pub_client = event[2]
                self.ready.set()
                self._status_due = 0.0  # say online now
        elif kind == "lost":
            self._on_lost(gen, event[2])
        elif kind == "refused":
            self.last_error = f"broker refused the connection: {event[2]}"
            log.error("%s", self.last_error)
        elif kind == "subscribe_failed":
            self.last_error = f"broker refused the subscriptions: {event[2]}"
            log.error("%s", self.last_error)
        elif kind == "connect_failed":
            self.last_error = event[2]
        elif kind == "puback":
            self._on_puback(gen, event[2], event[3])
        elif kind == "message":
            self._on_message(gen, event[2], event[3])

    # ------------------------------------------------------------------------- publishing
    def _gallery_up(self) -> bool:
        """True while gallery acks keep arriving: then backoff is pointless and pending records go now."""
        last = self._last_delivered_mono
        return last is not None and time.monotonic() - last < self.config.ack_timeout

    def _fill(self) -> None:
        client = self._pub_client
        store = self._require_store()
        free = self.config.max_in_flight - len(self._inflight)
        # Refill in batches (a quarter window) rather than per ack: each due() query costs a few ms.
        if client is None or free <= 0 or (self._inflight and free < max(1, self.config.max_in_flight // 4)):
            return
        now = self.clock()
        horizon = now + timedelta(seconds=self.config.retry_cap) if self._gallery_up() else now
        for entry in store.due(limit=len(self._inflight) + free, now=horizon):
            if free <= 0:
                break
            if entry.record_id in self._inflight:
                continue
            if self._publish_record(client, entry):
                free -= 1

    def _publish_record(self, client: mqtt.Client, entry: OutboxEntry) -> bool:
        store = self._require_store()
        assert self._key is not None
        try:
            payload = encode_stored(
                store,
                entry.record_id,
                county=self.county,
                station=self.station,
                key=self._key,
                max_bytes=self.config.max_record_bytes,
            )
        except UnknownRecordError:
            return False  # purged since due() listed it
        except Unsendable as exc:
            self._unsendable(entry, exc)
            return False
        properties = None
        if self.config.v5:
            properties = Properties(PacketTypes.PUBLISH)
            properties.ContentType = wire.RECORD_CONTENT_TYPE
            properties.CorrelationData = entry.record_id.encode()
            properties.MessageExpiryInterval = RECORD_EXPIRY_SECONDS
        info = client.publish(self.records_topic, payload, qos=1, retain=False, properties=properties)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            self._mark_failed(entry.record_id, f"publish failed: {mqtt.error_string(info.rc)}", entry.attempts)
            return False
        gen = self._conn_gen
        self._inflight[entry.record_id] = InFlight(
            entry.record_id, gen, info.mid, time.monotonic() + self.config.ack_timeout, entry.attempts
        )
        self._by_mid[(gen, info.mid)] = entry.record_id
        self.stats["published"] += 1
        return True

    def _unsendable(self, entry: OutboxEntry, exc: Unsendable) -> None:
        """Never delete, never pretend: alarm, keep it pending and look again rarely (a software
        update that fixes the cause then delivers it)."""
        store = self._require_store()
        self.stats["unsendable"] += 1
        message = (
            f"record {entry.record_id} (booking {entry.booking_number}) cannot be sent as stored ({exc.code}: "
            f"{exc.message[:300]}). It is kept on this station; call county IT"
        )
        log.error("%s", message)
        store.raise_alarm(ALARM_RECORD_UNSENDABLE, message)
        later = self.clock() + timedelta(seconds=2 * self.config.retry_cap)
        store.mark_failed(entry.record_id, f"not sendable: {exc.code}: {exc.message[:500]}", later)

    def _mark_failed(self, record_id: str, error: str, attempts: int) -> None:
        store = self._require_store()
        delay = backoff_delay(attempts + 1, base_seconds=self.config.retry_base, cap_seconds=self.config.retry_cap)
        with contextlib.suppress(UnknownRecordError):  # purged while in flight
            store.mark_failed(record_id, error, self.clock() + timedelta(seconds=delay))
        self.stats["failed_attempts"] += 1
        self._status_dirty = True

    def _fail(self, record_id: str, error: str) -> None:
        entry = self._inflight.pop(record_id, None)
        if entry is None:
            return
        self._by_mid.pop((entry.generation, entry.mid), None)
        self._mark_failed(record_id, error, entry.attempts)

    def _expire(self) -> None:
        now = time.monotonic()
        for record_id, entry in list(self._inflight.items()):
            if entry.deadline <= now:
                self.stats["ack_timeouts"] += 1
                self._fail(record_id, f"no ack from the gallery within {self.config.ack_timeout:g} s")

    def _on_puback(self, gen: int, mid: int, reason: Any) -> None:
        record_id = self._by_mid.pop((gen, mid), None)
        if record_id is None:
            return  # a status message, or a connection that is gone
        entry = self._inflight.get(record_id)
        if entry is None or entry.generation != gen or entry.mid != mid:
            return
        code = getattr(reason, "value", 0)
        if getattr(reason, "is_failure", False):
            # e.g. 0x87 not authorized (a revoked station's ACL, a wrong certificate CN) or 0x97 quota
            # exceeded: the record stays queued, and a person has to know why nothing moves.
            log.error("broker refused record %s: %s", record_id, reason)
            self._fail(record_id, f"broker refused the record: {reason}")
            if not self._broker_alarm:
                self._require_store().raise_alarm(
                    ALARM_BROKER_REFUSING,
                    f"the county broker refuses this station's records ({reason}); they stay queued. Call county IT",
                )
                self._broker_alarm = True
        elif self.config.v5 and code == NO_MATCHING_SUBSCRIBERS:
            self._fail(record_id, "no gallery is subscribed on the broker (PUBACK 0x10)")
        else:
            # The ack clock starts when the broker has the record, so a slow upload is not a timeout.
            entry.deadline = time.monotonic() + self.config.ack_timeout

    def _on_lost(self, gen: int, reason: str) -> None:
        if gen == self._conn_gen:
            self._conn_client = self._pub_client = None
            self.ready.clear()
            self._status_dirty = True
        lost = [rid for rid, e in self._inflight.items() if e.generation == gen]
        if lost:
            log.warning("connection lost (%s) with %d record(s) awaiting the gallery's ack", reason, len(lost))
        for record_id in lost:
            self._fail(record_id, f"connection lost before the gallery's ack ({reason})")
        self._by_mid = {k: v for k, v in self._by_mid.items() if k[0] != gen}

    def _forget(self, record_ids: list[str]) -> None:
        """Records purged by a county command: stop tracking them."""
        for record_id in record_ids:
            entry = self._inflight.pop(record_id, None)
            if entry is not None:
                self._by_mid.pop((entry.generation, entry.mid), None)
        self._status_dirty = True

    # ------------------------------------------------------------------------ certificate rotation
    def _rotate_certificate(self, command: wire.WireCommand, payload: bytes) -> dict[str, Any]:
        """The command handler's rotator: a new TLS key and certificate from the enrolment server (runs on
        the agent thread; the HTTPS request is bounded by provision's connect and read timeouts)."""
        cfg = self.config
        try:
            rotated = rotate_certificate(cfg.county, cfg.station, cfg.enroll_url, payload, command.command_id,
                                         tls_key=Path(cfg.key_file), tls_cert=Path(cfg.cert_file),
                                         ca_cert=Path(cfg.ca_file), signing_key=Path(cfg.signing_key))
        except ProvisionError as exc:
            raise RotationFailed("rotation_failed", f"{exc.code}: {exc}"[:400]) from None
        self._reconnect_requested = True
        log.info("rotated the TLS certificate: serial %s -> %s", rotated.old_serial, rotated.new_serial)
        return {"target": "tls-certificate", "old_serial": rotated.old_serial, "new_serial": rotated.new_serial,
                "not_after": rotated.not_after.isoformat(timespec="seconds")}

    def _retry_rotation(self) -> None:
        if self._commands is None or time.monotonic() < self._rotate_retry_at:
            return
        self._rotate_retry_at = time.monotonic() + self.config.rotate_retry
        outcome = self._commands.retry_pending()
        if outcome is not None:
            self.command_outcomes.append(outcome)
            self.stats[f"commands_{outcome.status}"] += 1

    def _reconnect_if_requested(self) -> None:
        """Drop the connection after a rotation: the network thread then connects with the new files."""
        if not self._reconnect_requested:
            return
        self._reconnect_requested = False
        client = self._conn_client
        if client is not None:
            log.info("reconnecting with the rotated certificate")
            client.disconnect()

    def _apply_settings(self, settings: dict[str, Any]) -> None:
        if "status_interval" in settings:
            self.status_interval = float(settings["status_interval"])
            self._status_due = 0.0

    # ---------------------------------------------------------------------------- incoming
    def _on_message(self, gen: int, client: mqtt.Client, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = "?"
        try:
            if topic == self.acks_topic:
                self._on_ack(bytes(message.payload), getattr(message, "properties", None))
            elif topic == self.commands_topic:
                assert self._commands is not None
                outcome = self._commands.handle(bytes(message.payload))
                self.command_outcomes.append(outcome)
                self.stats[f"commands_{outcome.status}"] += 1
            else:
                log.warning("message on unexpected topic %r ignored", topic[:200])
        except Exception:
            # Not acknowledged to the broker: it comes again after a reconnect. The record it is
            # about stays pending meanwhile, so nothing is lost either way.
            self.stats["message_errors"] += 1
            log.exception("could not handle a message on %s; it will be delivered again", topic[:200])
            return
        if message.qos > 0 and gen == self._conn_gen and client is self._conn_client:
            client.ack(message.mid, message.qos)

    def _on_ack(self, payload: bytes, properties: Any) -> None:
        store = self._require_store()
        try:
            ack = wire.decode_ack(payload)
        except wire.WireError as exc:
            self.stats["bad_acks"] += 1
            log.warning("ignored a malformed ack (%s)", exc)
            return
        if ack.record_id is None:
            self._unmatched_rejection(ack, properties)
            return
        record_id = ack.record_id
        entry = self._inflight.pop(record_id, None)
        if entry is not None:
            self._by_mid.pop((entry.generation, entry.mid), None)
        self._status_dirty = True
        if ack.delivered:
            try:
                store.mark_delivered(record_id, ack.status)
            except UnknownRecordError:
                self.stats["acks_unknown"] += 1
                log.info("ack %s for record %s, which this station does not hold (purged)", ack.status, record_id)
                return
            except OutboxStateError as exc:
                self._conflict(record_id, str(exc))
                return
            self.stats[f"acks_{ack.status}"] += 1
            self._last_delivered_mono = time.monotonic()
            self._last_ack_at = self.clock()
            if self._refusing_alarm:
                store.clear_alarm(ALARM_GALLERY_REFUSING)
                self._refusing_alarm = False
            if self._broker_alarm:
                store.clear_alarm(ALARM_BROKER_REFUSING)
                self._broker_alarm = False
            return
        reason = ack.reason or "rejected"
        text = f"{reason}: {ack.detail}" if ack.detail else reason
        try:
            outbox_entry = store.mark_rejected(record_id, text)
        except UnknownRecordError:
            self.stats["acks_unknown"] += 1
            return
        except OutboxStateError as exc:
            self._conflict(record_id, str(exc))
            return
        self.stats["acks_rejected"] += 1
        message = (
            f"the county gallery rejected record {record_id} (booking {outbox_entry.booking_number}, "
            f"{outbox_entry.agency_ori}): {text[:300]}. The record is kept on this station and is not sent again; "
            f"a supervisor must review it with county IT"
        )
        log.error("%s", message)
        store.raise_alarm(ALARM_RECORD_REJECTED, message)
        store.append_audit(
            "system",
            "delivery_rejected",
            {"record_id": record_id, "reason": reason, "detail": ack.detail,
             "booking_number": outbox_entry.booking_number},
        )

    def _unmatched_rejection(self, ack: wire.Ack, properties: Any) -> None:
        """A rejection that names no record (the gallery could not verify the payload: unknown or
        revoked station, bad signature...). It cannot be pinned on a record, so nothing is marked
        rejected; the station keeps retrying with backoff and raises an alarm. MQTT 5 correlation data,
        when present, only lets the matching attempt fail now instead of at its ack timeout."""
        store = self._require_store()
        self.stats["acks_rejected_unmatched"] += 1
        message = (
            f"the county gallery refuses this station's records without naming them ({ack.reason}: "
            f"{(ack.detail or '')[:200]}); records stay queued and are retried. Call county IT"
        )
        if not self._refusing_alarm:
            log.error("%s", message)
        store.raise_alarm(ALARM_GALLERY_REFUSING, message)
        self._refusing_alarm = True
        hint = getattr(properties, "CorrelationData", None) if properties is not None else None
        if isinstance(hint, (bytes, bytearray)):
            try:
                record_id = bytes(hint).decode("ascii")
            except UnicodeDecodeError:
                return
            if record_id in self._inflight:
                self._fail(record_id, f"gallery refused it without naming it: {ack.reason}")

    def _conflict(self, record_id: str, detail: str) -> None:
        store = self._require_store()
        self.stats["ack_conflicts"] += 1
        log.error("contradicting gallery verdicts for %s: %s", record_id, detail)
        store.raise_alarm(ALARM_ACK_CONFLICT, detail[:500])

    # ------------------------------------------------------------------------------- status
    def _read_last_ack(self) -> datetime | None:
        """When the last record was delivered, from the outbox (survives restarts)."""
        store = self._require_store()
        try:
            row = store.conn.execute("SELECT MAX(delivered_at) FROM outbox").fetchone()
        except Exception:
            return None
        if not row or not row[0]:
            return None
        try:
            return datetime.strptime(row[0], "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=timezone.utc)
        except ValueError:
            return None

    def _status_body(self, state: str, *, reason: str | None = None) -> dict[str, Any]:
        store = self._require_store()
        age = store.oldest_pending_age()
        body: dict[str, Any] = {
            "v": 1,
            "state": state,
            "county": self.county,
            "station": self.station,
            "software": SOFTWARE,
            "at": self.clock().isoformat(),
            "queue": store.queue_counts(),
            "in_flight": len(self._inflight),
            "oldest_pending_age_s": None if age is None else round(age.total_seconds(), 1),
            "last_ack_at": None if self._last_ack_at is None else self._last_ack_at.isoformat(),
            "alarms": sorted(a.name for a in store.active_alarms()),
        }
        if reason:
            body["reason"] = reason
        return body

    def _offline_will(self) -> bytes:
        body = {"v": 1, "state": "offline", "county": self.county, "station": self.station, "software": SOFTWARE,
                "reason": "connection lost"}
        return json.dumps(body, sort_keys=True).encode()

    def _publish_status(self, client: mqtt.Client, body: dict[str, Any]) -> mqtt.MQTTMessageInfo | None:
        properties = None
        if self.config.v5:
            properties = Properties(PacketTypes.PUBLISH)
            properties.ContentType = STATUS_CONTENT_TYPE
        info = client.publish(
            self.status_topic, json.dumps(body, sort_keys=True).encode(), qos=1, retain=True, properties=properties
        )
        return info if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS else None

    def _maybe_status(self) -> None:
        now = time.monotonic()
        if now < self._status_due and not (self._status_dirty and now - self._status_sent >= STATUS_MIN_INTERVAL):
            return
        client = self._pub_client
        body = self._status_body("online" if client is not None else "offline")
        if client is not None:
            self._publish_status(client, body)
        self._write_status_file(body, connected=client is not None)
        counts = body["queue"]
        sdnotify.notify_status(
            f"{'online' if client else 'offline'}; pending {counts['pending']}, delivered {counts['delivered']}, "
            f"rejected {counts['rejected']}; last ack {body['last_ack_at'] or 'never'}"
        )
        self._status_dirty = False
        self._status_sent = now
        self._status_due = now + self.status_interval

    def _write_status_file(self, body: dict[str, Any], *, connected: bool) -> None:
        """``DATA_DIR/sync/status.json`` for ``booking-station status`` (the agent's view of the link)."""
        doc = {
            **body,
            "connected": connected,
            "broker": f"{self.config.host}:{self.config.port}",
            "protocol": self.config.protocol,
            "last_error": self.last_error,
            "pid": os.getpid(),
            "stats": dict(self.stats),
        }
        write_file_atomic(state_dir(self.data_dir) / STATUS_FILE, json.dumps(doc, sort_keys=True).encode(), 0o600)

    def _require_store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the sync agent is not set up (call setup() or run())")
        return self._store

    # ---------------------------------------------------------------------------- network thread
    def _build_client(self, gen: int, lost: threading.Event, established: threading.Event) -> mqtt.Client:
        cfg = self.config
        if cfg.v5:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.station,
                protocol=MQTTProtocolVersion.MQTTv5,
                reconnect_on_failure=False,
                manual_ack=True,
            )
        else:
            client = mqtt.Client(
                CallbackAPIVersion.VERSION2,
                client_id=self.station,
                protocol=MQTTProtocolVersion.MQTTv311,
                clean_session=False,
                reconnect_on_failure=False,
                manual_ack=True,
            )
        # Read the files on every connection, so a renewed certificate is used without a restart.
        client.tls_set_context(tls_context(cfg.ca_file, cfg.cert_file, cfg.key_file))
        client.max_inflight_messages_set(cfg.max_in_flight + 4)
        will_props = None
        if cfg.v5:
            will_props = Properties(PacketTypes.WILLMESSAGE)
            will_props.ContentType = STATUS_CONTENT_TYPE
        client.will_set(self.status_topic, self._offline_will(), qos=1, retain=True, properties=will_props)
        client.suppress_exceptions = True
        events = self._events

        def on_connect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            if getattr(reason, "is_failure", False):
                events.put(("refused", gen, str(reason)))
                return
            established.set()
            events.put(("connected", gen, c, getattr(flags, "session_present", False)))
            c.subscribe([(self.acks_topic, 1), (self.commands_topic, 1)])

        def on_subscribe(c: mqtt.Client, userdata: Any, mid: int, codes: list[Any], props: Any) -> None:
            if any(getattr(rc, "is_failure", False) for rc in codes):
                events.put(("subscribe_failed", gen, ", ".join(str(rc) for rc in codes)))
            else:
                events.put(("ready", gen, c))

        def on_disconnect(c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
            lost.set()
            events.put(("lost", gen, str(reason)))

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_disconnect = on_disconnect
        client.on_publish = lambda c, u, mid, reason, props: events.put(("puback", gen, mid, reason))
        client.on_message = lambda c, u, message: events.put(("message", gen, c, message))
        return client

    def _network_main(self) -> None:
        """Connect, wait for the connection to end, back off, connect again, until told to stop."""
        cfg = self.config
        failures = 0
        while not self._net_stop.is_set():
            self._generation += 1
            gen = self._generation
            lost, established = threading.Event(), threading.Event()
            try:
                client = self._build_client(gen, lost, established)
                if cfg.v5:
                    props = Properties(PacketTypes.CONNECT)
                    props.SessionExpiryInterval = cfg.session_expiry
                    client.connect(cfg.host, cfg.port, cfg.keepalive, clean_start=False, properties=props)
                else:
                    client.connect(cfg.host, cfg.port, cfg.keepalive)
                _no_delay(client)
            except (OSError, ssl.SSLError, ValueError) as exc:
                failures += 1
                message = f"cannot connect to {cfg.host}:{cfg.port}: {exc}"
                self._events.put(("connect_failed", gen, message))
                if failures in (1, 5) or failures % 50 == 0:
                    log.warning("%s (attempt %d)", message, failures)
                self._net_stop.wait(backoff_delay(failures, base_seconds=cfg.reconnect_min,
                                                  cap_seconds=cfg.reconnect_max))
                continue
            client.loop_start()
            while not lost.wait(0.2):
                if self._net_stop.is_set():
                    client.disconnect()  # normal DISCONNECT: the broker discards the will
                    lost.wait(5)
                    break
            client.loop_stop()
            if self._net_stop.is_set():
                break
            # A connection that was up resets the backoff; one refused at once counts as a failure.
            failures = 0 if established.is_set() else failures + 1
            self._net_stop.wait(backoff_delay(max(failures, 1), base_seconds=cfg.reconnect_min,
                                              cap_seconds=cfg.reconnect_max))


def _no_delay(client: mqtt.Client) -> None:
    """Switch off Nagle's algorithm on the connection. MQTT sends many small packets (PUBACKs, acks,
    status) that each wait for the peer: with Nagle plus the peer's delayed ACK every one of them can
    stall about 40 ms, which caps a window of records at a few round trips per second. paho does not
    set it; Mosquitto only with ``set_tcp_nodelay true``."""
    sock = client.socket()
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
