"""The connection life cycle on its own thread: connect (MQTT 5 or 3.1.1, mutual TLS), subscribe, back off,
reconnect; paho's callbacks only put events on the agent's queue."""

from __future__ import annotations

import contextlib
import socket
import ssl
import threading
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from appliance.store.outbox import backoff_delay
from sync.protocol.tls import tls_context
from sync.station.agent.common import STATUS_CONTENT_TYPE, log
from sync.station.agent.status import StatusMixin


class ConnectionMixin(StatusMixin):
    """The network thread: one fresh paho client per connection (so a dead connection's queue dies with it),
    events put on the agent's queue, reconnects with capped exponential backoff and jitter."""

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
