"""MQTT spoken one way: the client factory of the station's sync agent, the gallery receiver, the county's
command publisher and ``booking-station doctor``.

* :class:`Settings` says where and as whom to connect: host, port, client id, the TLS files (the context
  comes from :func:`sync.protocol.tls.tls_context`, read when a client is made, so a renewed certificate
  is used by the next client), protocol ``"5"`` or ``"3.1.1"``, keepalive, clean start and session expiry,
  last will, subscriptions made on every connection, and paho's reconnect delays.
* :class:`Client` is one paho-mqtt 2.x client (``CallbackAPIVersion.VERSION2``) made from them, configured
  the same way for both protocols: MQTT 5 properties (content type, correlation data, message expiry,
  session expiry) are sent when the protocol has them and left out for 3.1.1, where nothing needs them.
  It delivers typed events (:class:`Connected`, :class:`Refused`, :class:`ConnectFailed`,
  :class:`Subscribed`, :class:`Disconnected`, :class:`Published`, :class:`Message`) to a queue or a
  callback, called on paho's network thread; each event names the client it came from.
* :func:`probe` is doctor's broker check: TLS and one MQTT CONNECT as the station, written by hand.
  Its docstring says why it is not a paho client.

Reconnecting is the caller's choice: :meth:`Client.connect` makes one connection (the agent makes a fresh
client per connection and backs off itself), :meth:`Client.connect_async` lets paho reconnect with the
settings' delays (the gallery receiver).
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import socket
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Union

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from sync.protocol.tls import tls_context

PROTOCOLS = ("5", "3.1.1")
#: MQTT 5 PUBACK reason "no matching subscribers": the broker took the message, nobody will get it.
NO_MATCHING_SUBSCRIBERS = 0x10


class MqttSetupError(ValueError):
    """Settings that cannot make a client (an unknown protocol)."""


@dataclass(frozen=True)
class Will:
    """The last will: published by the broker when the connection ends without a DISCONNECT."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = True
    content_type: str | None = None


@dataclass(frozen=True)
class Settings:
    """How to connect. ``clean_start`` False resumes a persistent session (MQTT 5 with ``session_expiry``
    seconds, 3.1.1 ``clean_session=False``); True starts a fresh one (use ``session_expiry=0`` so MQTT 5
    drops it at the end too). ``auto_reconnect`` lets paho reconnect after a lost connection (only with
    :meth:`Client.connect_async` and a running loop); ``manual_ack`` leaves the PUBACK of incoming QoS 1
    messages to :meth:`Client.ack`."""

    host: str
    port: int
    client_id: str
    ca_file: str
    cert_file: str
    key_file: str
    protocol: str = "5"
    keepalive: int = 30
    clean_start: bool = False
    session_expiry: int = 7 * 24 * 3600
    will: Will | None = None
    subscriptions: tuple[tuple[str, int], ...] = ()
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    auto_reconnect: bool = True
    manual_ack: bool = False
    max_inflight: int | None = None

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise MqttSetupError(f"MQTT protocol must be '5' or '3.1.1', not {self.protocol!r}")

    @property
    def v5(self) -> bool:
        return self.protocol == "5"


# ------------------------------------------------------------------------------------------ events
@dataclass(frozen=True)
class Reason:
    """A reason code as paho reports it (MQTT 5 numbering, also for 3.1.1), with its name."""

    code: int
    name: str

    @property
    def is_failure(self) -> bool:
        return self.code >= 0x80

    def __str__(self) -> str:
        return self.name

    @classmethod
    def of(cls, reason: Any) -> Reason:
        code = getattr(reason, "value", reason)
        return cls(code if isinstance(code, int) else 0, str(reason))


SUCCESS = Reason(0, "Success")


@dataclass(frozen=True)
class Event:
    """Base of the events; ``client`` is the :class:`Client` the event came from."""

    client: Any = field(default=None, kw_only=True, compare=False, repr=False)


@dataclass(frozen=True)
class Connected(Event):
    """CONNACK accepted the connection (the client then subscribes to ``Settings.subscriptions``)."""

    session_present: bool
    reason: Reason = SUCCESS


@dataclass(frozen=True)
class Refused(Event):
    """CONNACK refused the connection (e.g. not authorized); paho then closes it."""

    reason: Reason


@dataclass(frozen=True)
class ConnectFailed(Event):
    """paho's own reconnect could not reach the broker (:meth:`Client.connect` raises instead)."""

    error: str


@dataclass(frozen=True)
class Subscribed(Event):
    """SUBACK: one reason per subscription, in the order of ``Settings.subscriptions``."""

    mid: int
    reasons: tuple[Reason, ...]

    @property
    def failed(self) -> bool:
        return any(r.is_failure for r in self.reasons)


@dataclass(frozen=True)
class Disconnected(Event):
    """The connection ended (a DISCONNECT, a lost socket, or the end of a refused connection)."""

    reason: Reason


@dataclass(frozen=True)
class Published(Event):
    """The broker took a QoS 1 message (PUBACK); ``reason`` says how (MQTT 5; 3.1.1 always success)."""

    mid: int
    reason: Reason = SUCCESS


@dataclass(frozen=True)
class Message(Event):
    """An incoming message. A topic that is not UTF-8 comes as the ``repr`` of its bytes (it then
    matches no topic of ours)."""

    topic: str
    payload: bytes
    qos: int = 1
    retain: bool = False
    mid: int = 0
    properties: Any = None

    @property
    def correlation_data(self) -> bytes | None:
        value = getattr(self.properties, "CorrelationData", None) if self.properties is not None else None
        return bytes(value) if isinstance(value, (bytes, bytearray)) else None

    @property
    def response_topic(self) -> str | None:
        """MQTT 5 response topic (request/response), or None."""
        value = getattr(self.properties, "ResponseTopic", None) if self.properties is not None else None
        return value if isinstance(value, str) else None


Sink = Union[Callable[[Event], None], "queue.Queue[Event]"]


# ------------------------------------------------------------------------------------------ client
class Client:
    """One paho client made from :class:`Settings`, its events going to ``sink`` (a queue, or a callable
    run on paho's network thread, which must not block it long). ``tag`` is the caller's (the agent's
    connection generation). Raises ``OSError``/``ssl.SSLError`` when the TLS files cannot be used."""

    _numbers = itertools.count(1)

    def __init__(self, settings: Settings, sink: Sink, *, tag: int | None = None) -> None:
        self.settings = settings
        self.tag = next(self._numbers) if tag is None else tag
        self._emit: Callable[[Event], None] = sink.put if isinstance(sink, queue.Queue) else sink
        if settings.v5:
            paho = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=settings.client_id,
                               protocol=MQTTProtocolVersion.MQTTv5, reconnect_on_failure=settings.auto_reconnect,
                               manual_ack=settings.manual_ack)
        else:
            paho = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=settings.client_id,
                               protocol=MQTTProtocolVersion.MQTTv311, clean_session=settings.clean_start,
                               reconnect_on_failure=settings.auto_reconnect, manual_ack=settings.manual_ack)
        paho.tls_set_context(tls_context(settings.ca_file, settings.cert_file, settings.key_file))
        paho.suppress_exceptions = True  # an exception in a sink must not end the network loop
        paho.reconnect_delay_set(min_delay=max(1, round(settings.reconnect_min)),
                                 max_delay=max(1, round(settings.reconnect_max)))
        if settings.max_inflight is not None:
            paho.max_inflight_messages_set(settings.max_inflight)
        will = settings.will
        if will is not None:
            paho.will_set(will.topic, will.payload, qos=will.qos, retain=will.retain,
                          properties=self._properties(PacketTypes.WILLMESSAGE, content_type=will.content_type))
        paho.on_connect = self._on_connect
        paho.on_connect_fail = lambda c, u: self._emit(ConnectFailed("cannot reach the broker", client=self))
        paho.on_subscribe = lambda c, u, mid, codes, p: self._emit(
            Subscribed(mid, tuple(Reason.of(rc) for rc in codes), client=self))
        paho.on_disconnect = lambda c, u, f, reason, p: self._emit(Disconnected(Reason.of(reason), client=self))
        paho.on_publish = lambda c, u, mid, reason, p: self._emit(Published(mid, Reason.of(reason), client=self))
        paho.on_message = self._on_message
        self.paho = paho

    @property
    def v5(self) -> bool:
        return self.settings.v5

    # -------------------------------------------------------------------------------- connecting
    def _connect_args(self) -> dict[str, Any]:
        s = self.settings
        if not s.v5:
            return {}
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = s.session_expiry
        return {"clean_start": s.clean_start, "properties": props}

    def connect(self) -> None:
        """Connect now (TCP, TLS, CONNECT sent; the CONNACK arrives as an event once the loop runs).
        Raises ``OSError``, ``ssl.SSLError`` or ``ValueError`` when the broker cannot be reached."""
        s = self.settings
        self.paho.connect(s.host, s.port, s.keepalive, **self._connect_args())
        no_delay(self.paho.socket())

    def connect_async(self) -> None:
        """Connect from the network thread (:meth:`loop_start`), retrying with the settings' delays."""
        s = self.settings
        self.paho.connect_async(s.host, s.port, s.keepalive, **self._connect_args())

    def loop_start(self) -> None:
        self.paho.loop_start()

    def loop_stop(self) -> None:
        self.paho.loop_stop()

    def loop_alive(self) -> bool:
        """True while paho's network thread runs (the gallery feeds its watchdog on it)."""
        thread = getattr(self.paho, "_thread", None)
        return thread is not None and thread.is_alive()

    def disconnect(self) -> None:
        """A normal DISCONNECT: the broker discards the will."""
        self.paho.disconnect()

    # ----------------------------------------------------------------------------------- traffic
    def _properties(self, packet: int, *, content_type: str | None = None, correlation_data: bytes | None = None,
                    expiry: int | None = None, response_topic: str | None = None) -> Properties | None:
        if not self.v5 or (content_type is None and correlation_data is None and expiry is None
                           and response_topic is None):
            return None
        props = Properties(packet)
        if content_type is not None:
            props.ContentType = content_type
        if correlation_data is not None:
            props.CorrelationData = correlation_data
        if expiry is not None:
            props.MessageExpiryInterval = expiry
        if response_topic is not None:
            props.ResponseTopic = response_topic
        return props

    def publish(self, topic: str, payload: bytes, *, qos: int = 1, retain: bool = False,
                content_type: str | None = None, correlation_data: bytes | None = None,
                expiry: int | None = None, response_topic: str | None = None) -> mqtt.MQTTMessageInfo:
        """Publish; the MQTT 5 properties are left out over 3.1.1. ``info.rc`` says whether paho took it."""
        props = self._properties(PacketTypes.PUBLISH, content_type=content_type,
                                 correlation_data=correlation_data, expiry=expiry, response_topic=response_topic)
        return self.paho.publish(topic, payload, qos=qos, retain=retain, properties=props)

    def ack(self, mid: int, qos: int) -> None:
        """PUBACK an incoming message (with ``Settings.manual_ack``)."""
        self.paho.ack(mid, qos)

    # ---------------------------------------------------------------------------------- callbacks
    def _on_connect(self, c: mqtt.Client, userdata: Any, flags: Any, reason: Any, props: Any) -> None:
        if getattr(reason, "is_failure", False):
            self._emit(Refused(Reason.of(reason), client=self))
            return
        no_delay(c.socket())
        self._emit(Connected(bool(getattr(flags, "session_present", False)), Reason.of(reason), client=self))
        if self.settings.subscriptions:
            c.subscribe(list(self.settings.subscriptions))

    def _on_message(self, c: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        try:
            topic = message.topic
        except UnicodeDecodeError:
            topic = repr(message._topic)[:200]
        self._emit(Message(topic, bytes(message.payload), message.qos, bool(message.retain), message.mid,
                           getattr(message, "properties", None), client=self))


def publish_ok(info: mqtt.MQTTMessageInfo) -> bool:
    """paho took the message (queued or sent)."""
    return info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS


def error_string(rc: Any) -> str:
    return mqtt.error_string(rc)


def no_delay(sock: Any) -> None:
    """Switch off Nagle's algorithm on the connection. MQTT sends many small packets (PUBACKs, acks,
    status) that each wait for the peer: with Nagle plus the peer's delayed ACK every one of them can
    stall about 40 ms, which caps a window of records at a few round trips per second. paho does not
    set it; Mosquitto only with ``set_tcp_nodelay true``."""
    if sock is not None:
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


# ------------------------------------------------------------------------------------------ probe
class ProbeError(Exception):
    """The probe failed at ``stage``: ``tls_files``, ``resolve``, ``refused``, ``timeout``, ``unreachable``,
    ``untrusted``, ``tls``, ``certificate`` (the broker dropped us after the handshake), ``closed``,
    ``no_answer`` (a time-out after connecting), ``not_mqtt`` or ``connack`` (``code``: the 3.1.1 CONNACK
    return code)."""

    def __init__(self, stage: str, detail: str = "", code: int | None = None) -> None:
        super().__init__(f"{stage}: {detail}" if detail else stage)
        self.stage, self.detail, self.code = stage, detail, code


@dataclass(frozen=True)
class ProbeResult:
    tls_version: str
    connected: Connected | None  # None when only TLS was tried


def probe(settings: Settings, *, timeout: float, connect: bool = True) -> ProbeResult:
    """TLS (1.2+, the broker verified against the CA with its host name) with the client's certificate, then,
    if ``connect``, one MQTT 3.1.1 CONNECT with clean session 0 as ``settings.client_id``, its CONNACK, and a
    DISCONNECT. Raises :class:`ProbeError`.

    Written by hand, not with :class:`Client`, because of what must *not* happen. The county broker makes
    the certificate CN the client id, so this CONNECT is the station's own session: a clean session would
    wipe it, and with it every ack and command the broker holds while the agent is down. Resuming it is
    safe only if nothing queued is consumed, and a resumed session makes the broker send its queued QoS 1
    messages right after the CONNACK: a paho client reads and (by default) PUBACKs them, and even with
    manual acks paho's loop reads past the CONNACK. Here exactly the 4 CONNACK bytes are read, then
    DISCONNECT is sent (no will is published) and the socket closed; whatever the broker sent meanwhile
    stays unacknowledged and is delivered to the agent again. MQTT 3.1.1 because every broker speaks it,
    and because an MQTT 5 CONNECT without the agent's Session Expiry Interval would shorten the session's
    expiry to zero. Nothing is published or subscribed. ``settings.protocol`` and the other connection
    options are not used.
    """
    try:
        context = tls_context(settings.ca_file, settings.cert_file, settings.key_file)
    except (OSError, ssl.SSLError) as exc:
        raise ProbeError("tls_files", str(exc)) from None
    host, port = settings.host, settings.port
    try:
        raw = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as exc:
        raise ProbeError("resolve", str(exc.strerror or exc)) from None
    except ConnectionRefusedError:
        raise ProbeError("refused") from None
    except TimeoutError:
        raise ProbeError("timeout") from None
    except OSError as exc:
        raise ProbeError("unreachable", str(exc.strerror or exc)) from None
    try:
        with raw:
            return _probe_tls(raw, context, settings, connect)
    except TimeoutError:
        raise ProbeError("no_answer") from None


def _probe_tls(raw: socket.socket, context: ssl.SSLContext, settings: Settings, connect: bool) -> ProbeResult:
    try:
        tls = context.wrap_socket(raw, server_hostname=settings.host)
    except ssl.SSLCertVerificationError as exc:
        raise ProbeError("untrusted", str(exc.verify_message)) from None
    except (ssl.SSLError, OSError) as exc:
        raise ProbeError("tls", ssl_reason(exc)) from None
    with tls:
        version = tls.version() or "TLS"
        if not connect:
            return ProbeResult(version, None)
        try:
            tls.sendall(connect_packet(settings.client_id))
            answer = _read_exact(tls, 4)
        except (ssl.SSLError, OSError) as exc:  # a time-out too: a broker that drops us never answers
            raise ProbeError("certificate", ssl_reason(exc)) from None
        if answer is None:
            raise ProbeError("closed")
        if answer[0] != 0x20 or answer[1] != 2:
            raise ProbeError("not_mqtt")
        if answer[3] != 0:
            raise ProbeError("connack", f"code {answer[3]}", code=answer[3])
        with contextlib.suppress(OSError):
            tls.sendall(b"\xe0\x00")  # DISCONNECT: a clean goodbye, so no will is published
        return ProbeResult(version, Connected(bool(answer[2] & 1)))


def connect_packet(client_id: str, keepalive: int = 10) -> bytes:
    """MQTT 3.1.1 CONNECT with clean-session 0, no will, no user name (see :func:`probe`)."""
    ident = client_id.encode()
    variable = b"\x00\x04MQTT" + bytes([4, 0x00]) + keepalive.to_bytes(2, "big")
    body = variable + len(ident).to_bytes(2, "big") + ident
    length, encoded = len(body), b""
    while True:
        byte, length = length % 128, length // 128
        encoded += bytes([byte | (0x80 if length else 0)])
        if not length:
            break
    return b"\x10" + encoded + body


def _read_exact(sock: ssl.SSLSocket, count: int) -> bytes | None:
    data = b""
    while len(data) < count:
        chunk = sock.recv(count - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def ssl_reason(exc: BaseException) -> str:
    """A TLS error as words ("tlsv13 alert certificate required")."""
    reason = getattr(exc, "reason", None)
    return str(reason or getattr(exc, "strerror", None) or exc).replace("_", " ").lower()


__all__ = [
    "NO_MATCHING_SUBSCRIBERS", "PROTOCOLS", "SUCCESS", "Client", "ConnectFailed", "Connected", "Disconnected",
    "Event", "Message", "MqttSetupError", "ProbeError", "ProbeResult", "Published", "Reason", "Refused",
    "Settings", "Sink", "Subscribed", "Will", "connect_packet", "error_string", "no_delay", "probe",
    "publish_ok", "ssl_reason",
]  # fmt: skip
