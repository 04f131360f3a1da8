"""The gallery's acks (delivered, rejected, rejections that name no record) and the county's commands."""

from __future__ import annotations

import time

from appliance.store import OutboxStateError, UnknownStationRecordError
from sync.protocol import mqtt, topics, wire
from sync.station.agent.common import (
    ALARM_ACK_CONFLICT,
    ALARM_BROKER_REFUSING,
    ALARM_GALLERY_REFUSING,
    ALARM_RECORD_REJECTED,
    log,
)
from sync.station.agent.delivery import DeliveryMixin


class IncomingMixin(DeliveryMixin):
    """What arrives on the station's ``acks`` and ``commands`` topics. A message is acknowledged to the
    broker only once handled, so one that arrives just before a crash is delivered again."""

    def _on_message(self, gen: int, message: mqtt.Message) -> None:
        topic = message.topic
        try:
            if topic == self.acks_topic:
                if self._defer_ack(gen, message):
                    return  # recorded with the others that came together, then acknowledged (_flush_acks)
                self._on_ack(message.payload, message.correlation_data)
            elif topic == self.answers_topic and self._checks is not None:
                self._checks.on_answer(message.payload)
            elif topic == topics.audit_acks_topic(self.county, self.station):
                self._on_audit_ack(message.payload)  # type: ignore[attr-defined]  # AuditMixin, on SyncAgent
            elif topic == self.commands_topic:
                assert self._commands is not None
                outcome = self._commands.handle(message.payload)
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
        self._broker_ack(gen, message)

    def _broker_ack(self, gen: int, message: mqtt.Message) -> None:
        client = message.client
        if message.qos > 0 and gen == self._conn_gen and client is not None and client is self._conn_client:
            client.ack(message.mid, message.qos)

    def _defer_ack(self, gen: int, message: mqtt.Message) -> bool:
        """Hold a well-formed ``stored``/``duplicate`` ack for :meth:`_flush_acks`; False for anything else."""
        try:
            ack = wire.decode_ack(message.payload)
        except wire.WireError:
            return False  # _on_ack counts and logs it
        if not ack.delivered or ack.record_id is None:
            return False
        self._acks_due.append((ack, gen, message))
        return True

    def _flush_acks(self) -> None:
        """Record the held acks in one transaction (one disk flush for a window of them, not one each), then
        acknowledge their messages to the broker. If the transaction fails nothing is acknowledged: the records
        stay pending and are sent again, and the gallery answers ``duplicate``."""
        if not self._acks_due:
            return
        held, self._acks_due = self._acks_due, []
        with self._require_store().delivery_batch():
            counted = [self._delivered(ack, count=False) for ack, _, _ in held]
        self.stats.update(key for key in counted if key)  # once committed: whoever reads them may look now
        for _, gen, message in held:
            self._broker_ack(gen, message)

    def _on_ack(self, payload: bytes, correlation: bytes | None) -> None:
        try:
            ack = wire.decode_ack(payload)
        except wire.WireError as exc:
            self.stats["bad_acks"] += 1
            log.warning("ignored a malformed ack (%s)", exc)
            return
        if ack.record_id is None:
            self._unmatched_rejection(ack, correlation)
            return
        if ack.delivered:
            self._delivered(ack)
        else:
            self._rejected(ack)

    def _delivered(self, ack: wire.Ack, *, count: bool = True) -> str | None:
        """A ``stored`` or ``duplicate`` ack: the record is delivered. Returns the stats key it counts under (counted
        here unless ``count`` is False: the caller's transaction is not committed yet), or None."""
        store = self._require_store()
        assert ack.record_id is not None
        record_id = self._answered(ack.record_id)
        try:
            store.mark_delivered(record_id, ack.status)
        except UnknownStationRecordError:
            self.stats["acks_unknown"] += 1
            log.info("ack %s for record %s, which this station does not hold (purged)", ack.status, record_id)
            return None
        except OutboxStateError as exc:
            self._conflict(record_id, str(exc))
            return None
        if count:
            self.stats[f"acks_{ack.status}"] += 1
        self._last_delivered_mono = time.monotonic()
        self._last_ack_at = self.clock()
        if self._refusing_alarm:
            store.clear_alarm(ALARM_GALLERY_REFUSING)
            self._refusing_alarm = False
        if self._broker_alarm:
            store.clear_alarm(ALARM_BROKER_REFUSING)
            self._broker_alarm = False
        return f"acks_{ack.status}"

    def _answered(self, record_id: str) -> str:
        """The gallery answered ``record_id``: it is no longer in flight."""
        entry = self._inflight.pop(record_id, None)
        if entry is not None:
            self._by_mid.pop((entry.generation, entry.mid), None)
        self._status_dirty = True
        return record_id

    def _rejected(self, ack: wire.Ack) -> None:
        """A ``rejected`` ack that names its record: kept, never sent again, an alarm for a person."""
        store = self._require_store()
        assert ack.record_id is not None
        record_id = self._answered(ack.record_id)
        reason = ack.reason or "rejected"
        text = f"{reason}: {ack.detail}" if ack.detail else reason
        try:
            outbox_entry = store.mark_rejected(record_id, text)
        except UnknownStationRecordError:
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

    def _unmatched_rejection(self, ack: wire.Ack, correlation: bytes | None) -> None:
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
        if correlation is not None:
            try:
                record_id = correlation.decode("ascii")
            except UnicodeDecodeError:
                return
            if record_id in self._inflight:
                self._fail(record_id, f"gallery refused it without naming it: {ack.reason}")

    def _conflict(self, record_id: str, detail: str) -> None:
        store = self._require_store()
        self.stats["ack_conflicts"] += 1
        log.error("contradicting gallery verdicts for %s: %s", record_id, detail)
        store.raise_alarm(ALARM_ACK_CONFLICT, detail[:500])
