"""The station's sync agent: delivers the SQLite outbox to the county gallery over MQTT with mutual TLS.

The rules it is built around
----------------------------
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
oldest pending age, last ack time, software version, free disk beside the ``[store] floor_bytes`` floor) whose
last will marks the station offline.
Reconnects use capped exponential backoff with jitter, so a fleet that lost the broker at once does
not come back in lockstep. Incoming messages are acknowledged to the broker (manual PUBACK) only after
they were handled, so an ack or command that arrives just before a crash is delivered again.

Threads: paho's network thread only puts events (typed, from :mod:`sync.protocol.mqtt`, whose client
factory makes each connection) on a queue; one agent thread owns the SQLite store
(connections belong to one thread) and does all the work. A third, small thread owns the connection
life cycle (connect, backoff, reconnect).

Modules: ``records`` (a stored record as a signed wire record), ``state`` (what the agent keeps),
``delivery`` (the in-flight window and failed attempts), ``incoming`` (acks and commands), ``status``
(status message and file), ``connection`` (the network thread) and ``loop`` (:class:`SyncAgent`: life cycle
and the loop step). Everything is importable from here.
"""

from __future__ import annotations

from sync.station.agent.common import (
    ALARM_ACK_CONFLICT,
    ALARM_BROKER_REFUSING,
    ALARM_GALLERY_REFUSING,
    ALARM_RECORD_REJECTED,
    ALARM_RECORD_UNSENDABLE,
    NO_MATCHING_SUBSCRIBERS,
    POLL_SECONDS,
    RECORD_EXPIRY_SECONDS,
    SOFTWARE,
    STATUS_CONTENT_TYPE,
    STATUS_FILE,
    STATUS_MIN_INTERVAL,
    SyncSetupError,
)
from sync.station.agent.loop import SyncAgent
from sync.station.agent.records import Unsendable, encode_stored, load_signing_key, to_wire_record
from sync.station.agent.state import InFlight

__all__ = [
    "ALARM_ACK_CONFLICT", "ALARM_BROKER_REFUSING", "ALARM_GALLERY_REFUSING", "ALARM_RECORD_REJECTED",
    "ALARM_RECORD_UNSENDABLE", "NO_MATCHING_SUBSCRIBERS", "POLL_SECONDS", "RECORD_EXPIRY_SECONDS", "SOFTWARE",
    "STATUS_CONTENT_TYPE", "STATUS_FILE", "STATUS_MIN_INTERVAL", "InFlight", "SyncAgent", "SyncSetupError",
    "Unsendable", "encode_stored", "load_signing_key", "to_wire_record",
]  # fmt: skip
