"""The connection life cycle on its own thread: connect (MQTT 5 or 3.1.1, mutual TLS, through
:mod:`sync.protocol.mqtt`), back off, reconnect; the client's events only go on the agent's queue."""

from __future__ import annotations

import ssl
import threading

from appliance.store.outbox import backoff_delay
from sync.protocol import mqtt, topics
from sync.station.agent.common import STATUS_CONTENT_TYPE, log
from sync.station.agent.status import StatusMixin


class ConnectionMixin(StatusMixin):
    """The network thread: one fresh client per connection (so a dead connection's queue dies with it),
    events put on the agent's queue, reconnects with capped exponential backoff and jitter."""

    def _mqtt_settings(self) -> mqtt.Settings:
        cfg = self.config
        return mqtt.Settings(
            host=cfg.host, port=cfg.port, client_id=self.station,
            ca_file=cfg.ca_file, cert_file=cfg.cert_file, key_file=cfg.key_file,
            protocol=cfg.protocol, keepalive=cfg.keepalive, clean_start=False, session_expiry=cfg.session_expiry,
            will=mqtt.Will(self.status_topic, self._offline_will(), qos=1, retain=True,
                           content_type=STATUS_CONTENT_TYPE),
            subscriptions=((self.acks_topic, 1), (self.commands_topic, 1),
                           (topics.audit_acks_topic(self.county, self.station), 1))
            + (((self.answers_topic, 1),) if cfg.booking_check else ()),
            reconnect_min=cfg.reconnect_min, reconnect_max=cfg.reconnect_max,
            auto_reconnect=False, manual_ack=True, max_inflight=cfg.max_in_flight + 4,
        )  # fmt: skip

    def _build_client(self, gen: int, lost: threading.Event, established: threading.Event) -> mqtt.Client:
        """A fresh client for connection ``gen``; it reads the TLS files anew, so a renewed certificate is
        used without a restart."""
        events = self._events

        def sink(event: mqtt.Event) -> None:
            if isinstance(event, mqtt.Connected):
                established.set()
            elif isinstance(event, mqtt.Disconnected):
                lost.set()
            events.put(event)

        return mqtt.Client(self._mqtt_settings(), sink, tag=gen)

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
                client.connect()
            except (OSError, ssl.SSLError, ValueError) as exc:
                failures += 1
                message = f"cannot connect to {cfg.host}:{cfg.port}: {exc}"
                self._events.put(mqtt.ConnectFailed(message))
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
