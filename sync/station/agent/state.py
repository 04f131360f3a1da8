"""The sync agent's state: what it has in flight, its connection, its status bookkeeping."""

from __future__ import annotations

import queue
import threading
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from appliance.store import Store
from sync.protocol import mqtt, sdnotify, topics
from sync.station.checks import CheckCarrier
from sync.station.config import SyncConfig
from sync.station.remote import CommandHandler, CommandOutcome


@dataclass
class InFlight:
    """A record published on connection ``generation`` and not yet answered by the gallery."""

    record_id: str
    generation: int
    mid: int
    deadline: float
    attempts: int


class AgentState:
    """The agent's state, shared by its parts (`DeliveryMixin`, `IncomingMixin`, `StatusMixin`,
    `ConnectionMixin`) and made by :class:`~sync.station.agent.loop.SyncAgent`'s constructor. Everything here is
    owned by the agent thread, except ``_events`` (the queue the network thread fills) and the
    connection generation counter the network thread advances."""

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
        self.answers_topic = topics.answers_topic(self.county, self.station)
        self.status_interval = config.status_interval
        self.stats: Counter[str] = Counter()
        self.ready = threading.Event()  # set while subscribed (tests and the CLI wait on it)
        self.last_error: str | None = None
        self.command_outcomes: list[CommandOutcome] = []
        self._events: queue.Queue[mqtt.Event] = queue.Queue()
        self._net_stop = threading.Event()
        self._net_thread: threading.Thread | None = None
        self._generation = 0
        self._conn_gen = -1
        self._conn_client: mqtt.Client | None = None
        self._pub_client: mqtt.Client | None = None
        self._inflight: dict[str, InFlight] = {}
        self._by_mid: dict[tuple[int, int], str] = {}
        #: Delivered acks held for one transaction (``IncomingMixin._flush_acks``): (ack, generation, message).
        self._acks_due: list[tuple[Any, int, mqtt.Message]] = []
        self._last_delivered_mono: float | None = None
        self._last_ack_at: datetime | None = None
        self._status_due = 0.0
        self._status_sent = 0.0
        self._status_dirty = True
        self._refusing_alarm = False
        self._broker_alarm = False
        self._store: Store | None = None
        self._key: Ed25519PrivateKey | None = None
        self._signers: ThreadPoolExecutor | None = None  # made on the first send (DeliveryMixin._signer)
        self._commands: CommandHandler | None = None
        self._checks: CheckCarrier | None = None  # booking-time checks ([sync] booking_check)
        self._checks_swept = 0.0
        self._reconnect_requested = False  # set by a certificate rotation: the next connection uses new files
        self._rotate_retry_at = 0.0  # monotonic time of the next retry of a failed rotation (0: at start)
        self._watchdog = sdnotify.Watchdog.from_environment()

    def _require_store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the sync agent is not set up (call setup() or run())")
        return self._store
