"""The station's status message, status file and systemd status."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from typing import Any

import paho.mqtt.client as paho

from appliance.store import audit as audit_log
from appliance.store.space import free_bytes
from sync.protocol import audit_wire, mqtt, sdnotify
from sync.protocol.files import write_file_atomic
from sync.station.agent.common import SOFTWARE, STATUS_CONTENT_TYPE, STATUS_FILE, STATUS_MIN_INTERVAL
from sync.station.agent.state import AgentState
from sync.station.remote import state_dir


class StatusMixin(AgentState):
    """The station's status: retained on the broker (with an offline last will), in ``DATA_DIR/sync/status.json``
    for ``booking-station status``, and in systemd's status line."""

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
            "disk": self._disk_figures(),
        }
        if self._key is not None:  # the signed chain head: lets the county see a truncated audit log
            seq, digest = audit_log.head(store.conn)
            body["audit_head"] = audit_wire.sign_head(self.county, self.station, seq, digest, self._key)
        if reason:
            body["reason"] = reason
        return body

    def _disk_figures(self) -> dict[str, int | None]:
        """Free bytes on the data directory and the configured floor (``[store] floor_bytes``), so county IT
        sees a filling disk on the fleet view before the station refuses bookings, not after. ``free_bytes``
        is null when the filesystem cannot be asked (the status must still go out)."""
        store = self._require_store()
        try:
            free: int | None = free_bytes(store.data_dir)
        except OSError:
            free = None
        return {"free_bytes": free, "floor_bytes": store.floor_bytes}

    def _offline_will(self) -> bytes:
        body = {"v": 1, "state": "offline", "county": self.county, "station": self.station, "software": SOFTWARE,
                "reason": "connection lost"}
        return json.dumps(body, sort_keys=True).encode()

    def _publish_status(self, client: mqtt.Client, body: dict[str, Any]) -> paho.MQTTMessageInfo | None:
        info = client.publish(self.status_topic, json.dumps(body, sort_keys=True).encode(), qos=1, retain=True,
                              content_type=STATUS_CONTENT_TYPE)
        return info if mqtt.publish_ok(info) else None

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
