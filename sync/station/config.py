"""The ``[sync]`` section of the station config: where the broker is, who this station is, how hard to retry.

Why a section of its own, and why it falls back to the provisioned sections
--------------------------------------------------------------------------
Provisioning (``firmware/provision.py``) writes ``[station]`` (county, station, enroll_url), ``[mqtt]`` (host, port)
and ``[keys]`` (tls_key, tls_cert, ca_cert, signing_key, county_command_key) into ``station.toml``. A
provisioned station must sync without anyone editing the file again, so every identity, address and
key path here defaults to those sections, and then to the fixed layout under ``DATA_DIR/keys``.
``[sync]`` holds what county IT may want to tune (protocol version, in-flight window, timeouts,
backoff caps) and can override any of the provisioned values.

:class:`SyncConfig` is one section of the station's typed configuration (``appliance.config``): a strict
pydantic model whose fields are the ``[sync]`` keys with their defaults and ranges, so the one station
model refuses unknown keys and wrong values here as in every other section. Identity and paths are only
required once :meth:`SyncConfig.complete` has filled them in, because a ``[sync]`` table alone may leave
them to the provisioned sections. The agent reads station.toml through that same model
(:func:`load_sync_config`), so a file the agent accepts is a file every other command accepts.

This module imports nothing heavy (no paho, no store) so the station config can import it cheaply.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from appliance.config_section import ConfigSection
from sync.protocol.enroll import default_command_kid
from sync.protocol.topics import TopicError, check_slug
from sync.protocol.wire import DEFAULT_MAX_RECORD_BYTES

#: A time in seconds: above 0 and at most a week (a bigger value is a typo for minutes or milliseconds).
Seconds = Annotated[float, Field(gt=0, le=7 * 24 * 3600)]


class SyncConfigError(ValueError):
    """The sync configuration cannot work; the message names the key and the fix."""


class SyncConfig(ConfigSection):
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
    port: int = Field(0, ge=0, le=65535)
    ca_file: str = ""
    cert_file: str = ""
    key_file: str = ""
    signing_key: str = ""
    #: County command public keys: key id = "public key file".
    command_keys: dict[Annotated[str, Field(min_length=1)], Annotated[str, Field(min_length=1)]] = Field(
        default_factory=dict)
    protocol: Literal["5", "3.1.1"] = "5"
    keepalive: int = Field(30, ge=5, le=65535)
    session_expiry: int = Field(7 * 24 * 3600, ge=0, le=0xFFFFFFFF)
    max_in_flight: int = Field(16, ge=1, le=1000)
    ack_timeout: Seconds = 120.0
    retry_base: Seconds = 5.0
    retry_cap: Seconds = 300.0
    reconnect_min: Seconds = 1.0
    reconnect_max: Seconds = 60.0
    status_interval: Seconds = 60.0
    max_record_bytes: int = Field(DEFAULT_MAX_RECORD_BYTES, ge=1024, le=256 * 1024 * 1024)
    #: The enrolment server's ``/enroll`` URL, for certificate rotation; defaults to ``[station] enroll_url``.
    enroll_url: str = ""
    #: Seconds between attempts of a certificate rotation that failed (network, server), until it expires.
    rotate_retry: Seconds = 300.0
    #: Ask the county gallery for prior bookings of the face once the frontal is accepted (advice, never a
    #: block; the county must answer them too: ``[search] booking_check`` in county.toml).
    booking_check: bool = False
    #: Seconds the officer's screen waits for that answer before it says the check was not done.
    booking_check_timeout: Seconds = 5.0

    @field_validator("county", "station")
    @classmethod
    def _slug(cls, value: str, info: ValidationInfo) -> str:
        if value:
            try:
                check_slug(value, str(info.field_name))
            except TopicError as exc:
                raise ValueError(str(exc)) from None
        return value

    @model_validator(mode="after")
    def _ordered(self) -> SyncConfig:
        if self.retry_cap < self.retry_base:
            raise ValueError("retry_cap must not be below retry_base")
        if self.reconnect_max < self.reconnect_min:
            raise ValueError("reconnect_max must not be below reconnect_min")
        return self

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
        return self.model_copy(update=dict(
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
        ))


def _table(doc: dict[str, Any], name: str) -> dict[str, Any]:
    value = doc.get(name, {})
    if not isinstance(value, dict):
        raise SyncConfigError(f"[{name}] must be a table")
    return value


def from_document(document: dict[str, Any], data_dir: Path | str, *, source: str = "station.toml") -> SyncConfig:
    """The completed sync configuration from a parsed station.toml, read through the one station model
    (every section checked, the device profile layered under it), then :meth:`SyncConfig.complete`."""
    from appliance.config import StationConfigError, build_config

    try:
        config = build_config(document, source)
    except StationConfigError as exc:
        raise SyncConfigError(str(exc)) from None
    return config.sync.complete(data_dir, document)


def load_sync_config(path: str | PathLike[str] | None, data_dir: Path | str) -> SyncConfig:
    """Read ``path`` (default /etc/booking-station/station.toml) and return the completed config."""
    return load_agent_settings(path, data_dir)[0]


def load_agent_settings(path: str | PathLike[str] | None, data_dir: Path | str) -> tuple[SyncConfig, dict[str, Any]]:
    """The completed sync configuration and the options the agent opens the store with.

    The store options carry ``[store] floor_bytes``: the agent reports free disk against the floor the
    capture side enforces, and a status that quoted the built-in default instead would tell county IT
    the wrong margin. One read of the file, checked once, for both.
    """
    from appliance.config import DEFAULT_CONFIG, StationConfigError, build_config, read_document

    path = Path(path) if path is not None else DEFAULT_CONFIG
    try:
        document = read_document(path)
        config = build_config(document, str(path))
    except StationConfigError as exc:
        raise SyncConfigError(str(exc)) from None
    return config.sync.complete(data_dir, document), {"floor_bytes": config.store.floor_bytes}
