"""The ``[sync]`` section of the station config: where the broker is, who this station is, how hard to retry.

Why a section of its own, and why it falls back to the provisioned sections
--------------------------------------------------------------------------
Provisioning (``firmware/provision.py``) writes ``[station]`` (county, station, enroll_url), ``[mqtt]`` (host, port)
and ``[keys]`` (tls_key, tls_cert, ca_cert, signing_key, county_command_key) into ``station.toml``. A
provisioned station must sync without anyone editing the file again, so every identity, address and
key path here defaults to those sections, and then to the fixed layout under ``DATA_DIR/keys``.
``[sync]`` holds what county IT may want to tune (protocol version, in-flight window, timeouts,
backoff caps) and can override any of the provisioned values.

:class:`SyncConfig` is a plain dataclass whose constructor takes exactly the ``[sync]`` keys, so
``appliance.config`` can list it in its ``SECTIONS`` table like the other sections (unknown keys are
refused there). Range checks run in ``__post_init__``; identity and paths are only required once
:meth:`SyncConfig.complete` has filled them in, because a ``[sync]`` table alone may leave them to the
provisioned sections.

This module imports nothing heavy (no paho, no store) so the station config can import it cheaply.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field, fields, replace
from os import PathLike
from pathlib import Path
from typing import Any

from sync.protocol.enroll import default_command_kid
from sync.protocol.topics import TopicError, check_slug
from sync.protocol.wire import DEFAULT_MAX_RECORD_BYTES

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_CONFIG = Path("/etc/booking-station/station.toml")
DEFAULT_DATA_DIR = Path("/var/lib/booking-station")
PROTOCOLS = ("5", "3.1.1")


class SyncConfigError(ValueError):
    """The sync configuration cannot work; the message names the key and the fix."""


@dataclass
class SyncConfig:
    """``[sync]`` in ``station.toml``. Empty strings mean "take it from the provisioned sections".

    Timing keys are seconds. ``max_in_flight`` bounds how many records wait for a gallery ack at once
    (it bounds the burst a reconnecting station sends, and memory: paho holds a record's bytes until the
    broker's PUBACK, so at worst ``max_in_flight`` x the record size). 16 keeps a loopback or LAN link
    busy (measured: 8 gave 139 records/s, 16 gave 370, 32 no more); ``ack_timeout`` is how long a
    published record may wait for the gallery's ack before the attempt counts as failed. It must
    exceed the time to send ``max_in_flight`` records on the slowest link the station uses.
    """

    county: str = ""
    station: str = ""
    host: str = ""
    port: int = 0
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    signing_key: str = ""
    command_keys: dict[str, str] = field(default_factory=dict)
    protocol: str = "5"
    keepalive: int = 30
    session_expiry: int = 7 * 24 * 3600
    max_in_flight: int = 16
    ack_timeout: float = 120.0
    retry_base: float = 5.0
    retry_cap: float = 300.0
    reconnect_min: float = 1.0
    reconnect_max: float = 60.0
    status_interval: float = 60.0
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    #: The enrolment server's ``/enroll`` URL, for certificate rotation; defaults to ``[station] enroll_url``.
    enroll_url: str = ""
    #: Seconds between attempts of a certificate rotation that failed (network, server), until it expires.
    rotate_retry: float = 300.0
    #: Ask the county gallery for prior bookings of the face once the frontal is accepted (advice, never a
    #: block; the county must answer them too: ``[search] booking_check`` in county.toml).
    booking_check: bool = False
    #: Seconds the officer's screen waits for that answer before it says the check was not done.
    booking_check_timeout: float = 5.0

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise SyncConfigError(f"[sync] protocol must be \"5\" or \"3.1.1\", not {self.protocol!r}")
        for name in ("county", "station"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise SyncConfigError(f"[sync] {name} must be text")
            if value:
                try:
                    check_slug(value, name)
                except TopicError as exc:
                    raise SyncConfigError(f"[sync] {exc}") from None
        if not isinstance(self.port, int) or isinstance(self.port, bool) or not 0 <= self.port <= 65535:
            raise SyncConfigError(f"[sync] port must be 1-65535, not {self.port!r}")
        if not isinstance(self.command_keys, dict) or not all(
            isinstance(k, str) and k and isinstance(v, str) and v for k, v in self.command_keys.items()
        ):
            raise SyncConfigError("[sync] command_keys must be a table of key id = \"public key file\"")
        _int_range("keepalive", self.keepalive, 5, 65535)
        _int_range("session_expiry", self.session_expiry, 0, 0xFFFFFFFF)
        _int_range("max_in_flight", self.max_in_flight, 1, 1000)
        _int_range("max_record_bytes", self.max_record_bytes, 1024, 256 * 1024 * 1024)
        if not isinstance(self.enroll_url, str):
            raise SyncConfigError("[sync] enroll_url must be text (an https:// URL)")
        if not isinstance(self.booking_check, bool):
            raise SyncConfigError(f"[sync] booking_check must be true or false, not {self.booking_check!r}")
        for name in ("ack_timeout", "retry_base", "retry_cap", "reconnect_min", "reconnect_max", "status_interval",
                     "rotate_retry", "booking_check_timeout"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 7 * 24 * 3600:
                raise SyncConfigError(f"[sync] {name} must be a number of seconds above 0, not {value!r}")
            setattr(self, name, float(value))
        if self.retry_cap < self.retry_base:
            raise SyncConfigError("[sync] retry_cap must not be below retry_base")
        if self.reconnect_max < self.reconnect_min:
            raise SyncConfigError("[sync] reconnect_max must not be below reconnect_min")

    @property
    def v5(self) -> bool:
        return self.protocol == "5"

    def complete(self, data_dir: Path | str, document: dict[str, Any] | None = None) -> SyncConfig:
        """A copy with every empty value filled from the provisioned ``[station]``, ``[mqtt]`` and
        ``[keys]`` tables of ``document`` (the whole parsed station.toml), then from the
        ``DATA_DIR/keys`` layout provisioning uses. Raises :class:`SyncConfigError` if the station
        still has no county, station id or broker host: it could not connect, so it must not start."""
        doc = document or {}
        station_t, mqtt_t, keys_t = (_table(doc, name) for name in ("station", "mqtt", "keys"))
        keys_dir = Path(data_dir) / "keys"
        county = self.county or str(station_t.get("county") or "")
        station = self.station or str(station_t.get("station") or "")
        host = self.host or str(mqtt_t.get("host") or "")
        port = self.port or int(mqtt_t.get("port") or 8883)
        missing = [n for n, v in (("county", county), ("station", station), ("host", host)) if not v]
        if missing:
            raise SyncConfigError(
                f"no {', '.join(missing)} for the sync agent: provision the station (writes [station] and [mqtt]) "
                f"or set them in [sync]"
            )

        def path(own: str, key: str, fallback: str) -> str:
            return own or str(keys_t.get(key) or keys_dir / fallback)

        command_keys = dict(self.command_keys)
        if not command_keys:
            command_keys = {default_command_kid(county): path("", "county_command_key", "county-command.pub")}
        return replace(
            self,
            county=county,
            station=station,
            host=host,
            port=port,
            ca_file=path(self.ca_file, "ca_cert", "ca.crt"),
            cert_file=path(self.cert_file, "tls_cert", "tls.crt"),
            key_file=path(self.key_file, "tls_key", "tls.key"),
            signing_key=path(self.signing_key, "signing_key", "signing.key"),
            command_keys=command_keys,
            enroll_url=self.enroll_url or str(station_t.get("enroll_url") or ""),
        )


def _int_range(name: str, value: object, lo: int, hi: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise SyncConfigError(f"[sync] {name} must be an integer {lo}-{hi}, not {value!r}")


def _table(doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise SyncConfigError(f"[{name}] must be a table")
    return value


def read_document(path: str | PathLike[str]) -> dict[str, Any]:
    """The whole station.toml, parsed; a clear error for a missing or broken file."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise SyncConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SyncConfigError(f"config file {path} cannot be read: {exc}") from None


def from_document(document: dict[str, Any], data_dir: Path | str, *, source: str = "station.toml") -> SyncConfig:
    """The completed sync configuration from a parsed station.toml (see :meth:`SyncConfig.complete`)."""
    table = _table(document, "sync")
    known = {f.name for f in fields(SyncConfig)}
    unknown = set(table) - known
    if unknown:
        raise SyncConfigError(f"{source}: unknown key(s) in [sync]: {', '.join(sorted(unknown))}")
    try:
        config = SyncConfig(**table)
    except SyncConfigError as exc:
        raise SyncConfigError(f"{source}: {exc}") from None
    return config.complete(data_dir, document)


def load_sync_config(path: str | PathLike[str] | None, data_dir: Path | str) -> SyncConfig:
    """Read ``path`` (default /etc/booking-station/station.toml) and return the completed config."""
    path = Path(path) if path is not None else DEFAULT_CONFIG
    return from_document(read_document(path), data_dir, source=str(path))
