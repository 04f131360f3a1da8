"""The sync agent itself: its life cycle (setup, run, shutdown), the loop step that handles events, expires
attempts, fills the window and sends status, and certificate rotation."""

from __future__ import annotations

import contextlib
import queue
import sqlite3
import ssl
import threading
import time
from pathlib import Path
from typing import Any

from appliance.store import StationStoreError, Store
from firmware.provision import ProvisionError, finish_rotation, rotate_certificate
from sync.protocol import check, mqtt, sdnotify, wire
from sync.protocol.files import make_private_dir
from sync.protocol.tls import tls_context
from sync.station.agent.audit import AuditMixin
from sync.station.agent.common import (
    ALARM_BROKER_REFUSING,
    ALARM_GALLERY_REFUSING,
    CHECK_POLL_SECONDS,
    POLL_SECONDS,
    SyncSetupError,
    log,
)
from sync.station.agent.connection import ConnectionMixin
from sync.station.agent.incoming import IncomingMixin
from sync.station.agent.records import load_signing_key
from sync.station.checks import CheckCarrier
from sync.station.remote import CommandHandler, RotationFailed, load_command_keys, load_remote_settings, state_dir


class SyncAgent(AuditMixin, IncomingMixin, ConnectionMixin):
    """Delivers the outbox of ``data_dir`` as ``config`` says. Call :meth:`run` in the thread that should
    own the store; it returns when ``stop`` is set (the CLI sets it on SIGTERM)."""

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
        for key, file in (("ca_cert", cfg.ca_file), ("tls_cert", cfg.cert_file), ("tls_key", cfg.key_file)):
            if not Path(file).is_file():  # OpenSSL's error would not say which of the three is missing
                raise SyncSetupError(f"[keys] {key} {file} does not exist; provision the station first")
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
        except StationStoreError as exc:
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
        if self.config.booking_check:
            store = self._store
            self._checks = CheckCarrier(self.data_dir, county=self.county, station=self.station, key=self._key,
                                        command_keys=keys, v5=self.config.v5, clock=time.time,
                                        audit=lambda action, details: store.append_audit("sync", action, details))
            self._checks.enable(self.config.booking_check_timeout)
        else:
            CheckCarrier.disable(self.data_dir)
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
                    self.step(CHECK_POLL_SECONDS if self._checks is not None else POLL_SECONDS)
                except (StationStoreError, sqlite3.Error) as exc:
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
        if self._store is not None:
            with contextlib.suppress(StationStoreError, sqlite3.Error):
                self._flush_acks()  # what arrived is recorded; otherwise it is sent again and answered duplicate
        if client is not None and self._store is not None:
            try:
                info = self._publish_status(client, self._status_body("offline", reason="stopped"))
                if info is not None:
                    info.wait_for_publish(timeout=3)
            except (RuntimeError, ValueError, StationStoreError):
                pass
        self._net_stop.set()
        if self._net_thread is not None:
            self._net_thread.join(timeout=15)
        if self._signers is not None:
            self._signers.shutdown(wait=True)
            self._signers = None
        self.ready.clear()
        if self._store is not None:
            with contextlib.suppress(OSError, StationStoreError):
                self._write_status_file(self._status_body("offline", reason="stopped"), connected=False)
            self._store.close()
            self._store = None

    # ------------------------------------------------------------------------------ one step
    def step(self, wait: float = POLL_SECONDS) -> None:
        """One round of the agent loop: handle what arrived, expire silent attempts, fill the
        in-flight window, send status, then wait briefly for the next event."""
        self._drain_events()
        self._flush_acks()
        self._retry_rotation()
        self._reconnect_if_requested()
        self._expire()
        self._fill()
        self._send_checks()
        self._audit_tick()
        self._maybe_status()
        self._watchdog.ping_if_due()
        try:
            event = self._events.get(timeout=wait)
        except queue.Empty:
            return
        self._handle_event(event)
        self._flush_acks()

    def _drain_events(self, limit: int = 500) -> None:
        for _ in range(limit):
            try:
                event = self._events.get_nowait()
            except queue.Empty:
                return
            self._handle_event(event)

    def _handle_event(self, event: mqtt.Event) -> None:
        gen = event.client.tag if event.client is not None else -1
        if isinstance(event, mqtt.Connected):
            self._conn_gen, self._conn_client = gen, event.client
            self.last_error = None
            log.info("connected to %s:%d (session present: %s)", self.config.host, self.config.port,
                     event.session_present)
        elif isinstance(event, mqtt.Subscribed):
            if event.failed:
                self.last_error = f"broker refused the subscriptions: {', '.join(map(str, event.reasons))}"
                log.error("%s", self.last_error)
            elif gen == self._conn_gen:
                self._pub_client = event.client
                self.ready.set()
                self._status_due = 0.0  # say online now
        elif isinstance(event, mqtt.Disconnected):
            self._on_lost(gen, str(event.reason))
        elif isinstance(event, mqtt.Refused):
            self.last_error = f"broker refused the connection: {event.reason}"
            log.error("%s", self.last_error)
        elif isinstance(event, mqtt.ConnectFailed):
            self.last_error = event.error
        elif isinstance(event, mqtt.Published):
            self._on_puback(gen, event.mid, event.reason)
        elif isinstance(event, mqtt.Message):
            self._on_message(gen, event)

    def _send_checks(self) -> None:
        """Publish the booking-time checks the UI spooled (the answers come on the answers topic). Not
        connected: they wait, and the officer's screen says the check was not done when its time is up."""
        client = self._pub_client
        if self._checks is None or client is None or not self.ready.is_set():
            return
        for out in self._checks.outgoing():
            info = client.publish(out.topic, out.payload, qos=1, content_type=check.CHECK_CONTENT_TYPE,
                                  correlation_data=out.request_id.encode(), response_topic=out.response_topic,
                                  expiry=int(self.config.booking_check_timeout) + 1)
            if mqtt.publish_ok(info):
                self._checks.sent(out.request_id)
        if time.monotonic() >= self._checks_swept + 60:
            self._checks_swept = time.monotonic()
            self._checks.sweep()

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
