"""Sending the station's audit log to the county gallery, which keeps its own copy of the chain.

The same guarantees as records, with an ordered stream instead of independent records: the store's
``audit_delivered_seq`` (in ``meta``) is the only truth about what the gallery holds, and it moves forward
only on the gallery's ack for a batch. One batch (up to ``MAX_BATCH_ENTRIES`` entries after that mark) is
in flight at a time, so entries arrive in order; a batch without an ack within ``ack_timeout``, or whose
connection drops, is sent again after a capped exponential backoff, and a repeat is harmless (the gallery
answers ``stored`` for entries it already holds unchanged). Losing the in-flight state (a crash) only
means the batch is sent again.

An ack of ``conflict`` means the gallery received the entries but they did not link to its copy (it has
raised its alarm); the mark moves on, since resending cannot change that, and the station raises
``audit_conflict`` so the desk sees it too. ``rejected`` (e.g. an unverified signature) keeps the mark
and raises ``audit_refused``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from paho.mqtt.enums import MQTTErrorCode

from appliance.store import audit as audit_log
from appliance.store.outbox import backoff_delay
from sync.protocol import audit_wire, mqtt, topics, wire
from sync.station.agent.common import RECORD_EXPIRY_SECONDS, log
from sync.station.agent.state import AgentState

ALARM_AUDIT_CONFLICT = "audit_conflict"
ALARM_AUDIT_REFUSED = "audit_refused"


@dataclass
class AuditInFlight:
    """The batch published on connection ``generation`` and not yet acked."""

    through_seq: int
    generation: int
    deadline: float


class AuditMixin(AgentState):
    """The audit stream: `_audit_tick` in every loop step, `_on_audit_ack` for the gallery's answers."""

    _audit_inflight: AuditInFlight | None = None
    _audit_retry_at = 0.0
    _audit_failures = 0

    @property
    def audit_topic(self) -> str:
        return topics.audit_topic(self.county, self.station)

    @property
    def audit_acks_topic(self) -> str:
        return topics.audit_acks_topic(self.county, self.station)

    def _audit_tick(self) -> None:
        now = time.monotonic()
        pending = self._audit_inflight
        if pending is not None:
            if pending.generation == self._conn_gen and self._pub_client is not None and now < pending.deadline:
                return
            self._audit_failed("no ack from the gallery" if now >= pending.deadline else "connection lost")
        client = self._pub_client
        if client is None or now < self._audit_retry_at:
            return
        self._audit_publish(client)

    def _audit_publish(self, client: mqtt.Client) -> None:
        store = self._require_store()
        assert self._key is not None
        after = audit_log.delivered_seq(store.conn)
        rows = audit_log.entries(store.conn, after_seq=after, limit=audit_wire.MAX_BATCH_ENTRIES)
        if not rows:
            return
        head_seq, head_hash = audit_log.head(store.conn)
        batch = audit_wire.AuditBatch(
            self.county, self.station,
            tuple(rows), head_seq, head_hash)  # stored entries are wire entries (AuditEntry extends it)
        try:
            payload = audit_wire.encode_batch(batch, self._key)
        except wire.WireError as exc:  # an entry the protocol cannot carry: say so, try again much later
            self._audit_alarm(ALARM_AUDIT_REFUSED, f"audit entries after {after} cannot be sent ({exc})")
            self._audit_retry_at = time.monotonic() + 2 * self.config.retry_cap
            return
        info = client.publish(self.audit_topic, payload, qos=1, retain=False,
                              content_type=audit_wire.AUDIT_CONTENT_TYPE, expiry=RECORD_EXPIRY_SECONDS)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            self._audit_failed(f"publish failed: {mqtt.error_string(info.rc)}")
            return
        self._audit_inflight = AuditInFlight(batch.through_seq, self._conn_gen,
                                             time.monotonic() + self.config.ack_timeout)
        self.stats["audit_batches_published"] += 1

    def _audit_failed(self, why: str) -> None:
        self._audit_inflight = None
        self._audit_failures += 1
        self.stats["audit_failed_attempts"] += 1
        delay = backoff_delay(self._audit_failures, base_seconds=self.config.retry_base,
                              cap_seconds=self.config.retry_cap)
        self._audit_retry_at = time.monotonic() + delay
        log.info("audit batch not acknowledged (%s); next try in %.0f s", why, delay)

    def _on_audit_ack(self, payload: bytes) -> None:
        store = self._require_store()
        try:
            ack = audit_wire.decode_audit_ack(payload)
        except wire.WireError as exc:
            self.stats["bad_audit_acks"] += 1
            log.warning("ignored a malformed audit ack (%s)", exc)
            return
        self.stats[f"audit_acks_{ack.status}"] += 1
        if ack.status == "rejected":
            self._audit_alarm(ALARM_AUDIT_REFUSED, f"the county gallery refuses this station's audit entries "
                                                   f"({ack.reason}); they stay here and are sent again")
            self._audit_failed(f"rejected: {ack.reason}")
            return
        audit_log.set_delivered_seq(store.conn, ack.through_seq)
        if ack.status == "conflict":
            self._audit_alarm(ALARM_AUDIT_CONFLICT, f"the county's copy of the audit log does not match this "
                                                    f"station's at entry {ack.through_seq} or before ({ack.reason}); "
                                                    f"call county IT")
        pending = self._audit_inflight
        if pending is not None and ack.through_seq >= pending.through_seq:
            self._audit_inflight = None
            self._audit_failures = 0
            self._audit_retry_at = 0.0

    def _audit_alarm(self, name: str, message: str) -> None:
        log.error("%s", message)
        self._require_store().raise_alarm(name, message)
