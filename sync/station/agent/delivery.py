"""Sending the outbox: the in-flight window, publishing, and what ends an attempt without an ack."""

from __future__ import annotations

import contextlib
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import timedelta

from paho.mqtt.enums import MQTTErrorCode

from appliance.store import UnknownStationRecordError
from appliance.store.outbox import OutboxEntry, backoff_delay
from sync.protocol import mqtt, wire
from sync.station.agent.common import (
    ALARM_BROKER_REFUSING,
    ALARM_RECORD_UNSENDABLE,
    NO_MATCHING_SUBSCRIBERS,
    RECORD_EXPIRY_SECONDS,
    log,
)
from sync.station.agent.records import Unsendable, load_wire_record, sign_wire_record
from sync.station.agent.state import AgentState, InFlight

#: Threads that sign records while the agent thread reads the next ones from the store.
SIGNER_THREADS = 2


class DeliveryMixin(AgentState):
    """Publishing due records within the in-flight window, and failing the attempts that get no ack in
    time, are refused by the broker, or lose their connection (the record then waits for its backoff)."""

    def _gallery_up(self) -> bool:
        """True while gallery acks keep arriving: then backoff is pointless and pending records go now."""
        last = self._last_delivered_mono
        return last is not None and time.monotonic() - last < self.config.ack_timeout

    def _fill(self) -> None:
        client = self._pub_client
        store = self._require_store()
        free = self.config.max_in_flight - len(self._inflight)
        # Refill in batches (an eighth of the window) rather than per ack: each due() query costs a few ms.
        if client is None or free <= 0 or (self._inflight and free < max(1, self.config.max_in_flight // 8)):
            return
        now = self.clock()
        horizon = now + timedelta(seconds=self.config.retry_cap) if self._gallery_up() else now
        entries = [e for e in store.due(limit=len(self._inflight) + free, now=horizon)
                   if e.record_id not in self._inflight][:free]
        # Records are read here (the store belongs to this thread) and signed on the signer threads meanwhile:
        # signing a 1 MB record hashes it twice and releases the GIL, so the next record's read overlaps it.
        assert self._key is not None
        signing: deque[tuple[OutboxEntry, Future[bytes]]] = deque()
        for entry in entries:
            try:
                record = load_wire_record(store, entry.record_id, county=self.county, station=self.station)
            except UnknownStationRecordError:
                continue  # purged since due() listed it
            except Unsendable as exc:
                self._unsendable(entry, exc)
                continue
            signing.append((entry, self._signer().submit(sign_wire_record, record, key=self._key,
                                                         max_bytes=self.config.max_record_bytes)))
            while signing and signing[0][1].done():  # in order, each as soon as it is signed
                self._publish_signed(client, *signing.popleft())
        while signing:
            self._publish_signed(client, *signing.popleft())

    def _publish_signed(self, client: mqtt.Client, entry: OutboxEntry, future: Future[bytes]) -> None:
        try:
            payload = future.result()
        except Unsendable as exc:
            self._unsendable(entry, exc)
            return
        self._publish_record(client, entry, payload)

    def _signer(self) -> ThreadPoolExecutor:
        if self._signers is None:
            self._signers = ThreadPoolExecutor(SIGNER_THREADS, thread_name_prefix="sync-sign")
        return self._signers

    def _publish_record(self, client: mqtt.Client, entry: OutboxEntry, payload: bytes) -> bool:
        info = client.publish(self.records_topic, payload, qos=1, retain=False, content_type=wire.RECORD_CONTENT_TYPE,
                              correlation_data=entry.record_id.encode(), expiry=RECORD_EXPIRY_SECONDS)
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
        with contextlib.suppress(UnknownStationRecordError):  # purged while in flight
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

    def _on_puback(self, gen: int, mid: int, reason: mqtt.Reason) -> None:
        record_id = self._by_mid.pop((gen, mid), None)
        if record_id is None:
            return  # a status message, or a connection that is gone
        entry = self._inflight.get(record_id)
        if entry is None or entry.generation != gen or entry.mid != mid:
            return
        if reason.is_failure:
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
        elif self.config.v5 and reason.code == NO_MATCHING_SUBSCRIBERS:
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
