"""Mosquitto 2.0 configuration and ACL for a county's booking broker.

County IT runs ``generate`` (or calls :func:`write_broker_files`) and gets a ``mosquitto.conf``
and an ``acl`` file. The tests start the real broker from these same files, so what is shipped is
what is tested.

Identity
--------
Every client authenticates with a certificate from the county CA (mutual TLS; no passwords, no
anonymous access). ``use_identity_as_username`` makes the certificate **CN** the MQTT user name,
and ``use_username_as_clientid`` makes it the client id too, so one device cannot take over
another's session by reusing its client id.

* A station's CN is its **station slug** (e.g. ``st-042``). The ACL patterns put ``%u`` in the
  station level of the topic, so the broker itself guarantees a station writes only its own
  ``records`` and ``status`` and reads only its own ``acks`` and ``commands``. (Mosquitto refuses
  pattern access to any name containing ``/``, ``+`` or ``#``; slugs cannot contain them, which is
  why the CN is the bare slug and not ``station:{county}:{station}``.)
* A gallery worker's CN is ``gallery.{county}`` (or ``gallery-2.{county}`` ... for more workers:
  with ``use_username_as_clientid`` each worker needs its own certificate). The dot makes it
  impossible for any station slug to collide with a gallery identity.
* One broker config serves one county; the county is written into every rule, so a certificate
  from another county's CA-issued fleet gains nothing here even if the CA were shared.

Limits
------
Every limit is written into the file with its reason. None of them is load-bearing: **the protocol
never relies on the broker queue** (design, Reliability rules). Stations keep every record in their
outbox until the gallery acks it after commit, so a message the broker drops (queue over its limit,
crash between autosaves) is simply published again.

Note for county IT: Mosquitto 2.0 with an ``acl_file`` grants every SUBACK and applies ``read``
rules when it delivers, so a station subscribing to another station's ``acks`` sees a granted
subscription that never receives anything (the tests check exactly that).

Revocation
----------
A revoked station (``revoked_stations``, from ``booking-gallery devices revoke``) gets a
``user {station}`` block with ``topic deny #``. Mosquitto checks a user's ``deny`` rules before
any grant, patterns included (measured on 2.0.11), and re-reads the ACL file on SIGHUP, so after a
reload the station can no longer publish or receive anything, even on a connection it already
had. The certificate itself is refused at the TLS handshake only through ``crlfile``: Mosquitto
re-reads the CRL *file* on SIGHUP, but a ``crlfile`` line that is new needs a restart. Do both:
the ACL acts on live connections, the CRL on every new one, whatever the ACL says.

The inputs are kept beside the files (``broker.json``, :func:`save_settings`) so that revoking a
station later regenerates exactly the same ACL plus the new ``deny`` block.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from os import PathLike
from pathlib import Path
from typing import Any

from sync.protocol.files import write_file_atomic
from sync.protocol.topics import PREFIX, SHARE_GROUP, check_slug
from sync.protocol.wire import DEFAULT_MAX_RECORD_BYTES


def gallery_identity(county: str, index: int = 1) -> str:
    """The certificate CN of gallery worker ``index`` (1-based) of ``county``."""
    check_slug(county, "county")
    return f"gallery.{county}" if index == 1 else f"gallery-{index}.{county}"


@dataclass
class BrokerConfig:
    """Settings for one county broker. Paths are written into the config as given."""

    county: str
    cafile: str
    certfile: str
    keyfile: str
    acl_file: str
    port: int = 8883
    bind_address: str = ""
    crlfile: str | None = None
    gallery_workers: int = 1
    share_group: str = SHARE_GROUP
    persistence_location: str = "/var/lib/mosquitto/"
    run_as_user: str = "mosquitto"
    log_dest: str = "stderr"
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES
    max_queued_messages: int = 10_000
    max_queued_bytes: int = 1024 * 1024 * 1024
    max_inflight_messages: int = 20
    autosave_interval: int = 60
    persistent_client_expiration: str = "30d"
    extra_gallery_identities: tuple[str, ...] = field(default_factory=tuple)
    revoked_stations: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        check_slug(self.county, "county")
        check_slug(self.share_group, "share group")
        if self.gallery_workers < 1:
            raise ValueError("at least one gallery worker identity is needed")
        # Slugs only: a revoked name is written into the ACL after ``user``, and a slug can never be a
        # gallery identity (those contain a dot), so revoking cannot lock out a gallery worker.
        self.revoked_stations = tuple(sorted({check_slug(s, "revoked station") for s in self.revoked_stations}))
        self.extra_gallery_identities = tuple(self.extra_gallery_identities)

    @property
    def gallery_identities(self) -> list[str]:
        return [gallery_identity(self.county, i) for i in range(1, self.gallery_workers + 1)] + list(
            self.extra_gallery_identities
        )


def render_mosquitto_conf(cfg: BrokerConfig) -> str:
    """The ``mosquitto.conf`` text, every non-default setting with the reason for its value."""
    # message_size_limit is the payload limit; leave room for a record exactly at the gallery's
    # limit (the gallery itself enforces max_record_bytes).
    size_limit = cfg.max_record_bytes
    lines = [
        f"# Mosquitto 2.0 configuration for the booking broker of county {cfg.county}.",
        "# Generated by sync.county.broker_config; edit the generator's inputs, not this file.",
        "",
        "per_listener_settings false",
        "# No anonymous access: every client is a county-issued certificate (CJIS mutual authentication).",
        "allow_anonymous false",
        f"acl_file {cfg.acl_file}",
        "",
        "# Persistence keeps sessions, queued records and retained station status across a broker",
        "# restart. It is an optimisation: stations resend anything the gallery has not acked.",
        "persistence true",
        f"persistence_location {cfg.persistence_location}",
        "# Save every minute rather than the default 30, so a broker crash loses at most a minute of",
        "# queue (which stations resend anyway); a larger interval only delays redelivery.",
        f"autosave_interval {cfg.autosave_interval}",
        "# A decommissioned station's persistent session (and its queued acks) must not live forever.",
        f"persistent_client_expiration {cfg.persistent_client_expiration}",
        "",
        "# Queue limits. Mosquitto's defaults (1000 messages) silently DROP QoS 1 messages beyond the",
        "# queue while still PUBACKing the publisher. We raise the count so a gallery outage of a",
        "# busy day's bookings still fits, and cap the bytes so large records cannot exhaust the",
        "# broker's memory (the queue is in RAM). Whatever is dropped is never acked by the gallery,",
        "# so the station's outbox retries it: the limits tune throughput, not correctness.",
        f"max_queued_messages {cfg.max_queued_messages}",
        f"max_queued_bytes {cfg.max_queued_bytes}",
        "# 20 unacknowledged QoS 1 messages per client in flight keeps the gallery's pipeline full",
        "# on a slow link while bounding per-client memory (20 x the record limit at worst).",
        f"max_inflight_messages {cfg.max_inflight_messages}",
        "# Largest record payload accepted, the same number the gallery enforces. MQTT v5 publishers",
        "# get a PUBACK reason code when over it; the station must check size before publishing.",
        f"message_size_limit {size_limit}",
        "# Station status is a retained message (its last will marks it offline).",
        "retain_available true",
        "# Send small packets (acks, PUBACKs) at once instead of waiting ~40 ms for Nagle's algorithm:",
        "# measured 450 records/s instead of 370 on loopback with the station's window of 16.",
        "set_tcp_nodelay true",
        "",
        f"user {cfg.run_as_user}",
        f"log_dest {cfg.log_dest}",
        "log_type error",
        "log_type warning",
        "log_type notice",
        "log_type information",
        "log_timestamp true",
        "connection_messages true",
        "",
        f"listener {cfg.port}{' ' + cfg.bind_address if cfg.bind_address else ''}",
        "protocol mqtt",
        f"cafile {cfg.cafile}",
        f"certfile {cfg.certfile}",
        f"keyfile {cfg.keyfile}",
    ]
    if cfg.crlfile:
        lines += [
            "# Revoked device certificates (revoke the device in the gallery registry too).",
            f"crlfile {cfg.crlfile}",
        ]
    lines += [
        "# TLS 1.2 is the minimum (CJIS); 1.3 is negotiated when both ends have it.",
        "tls_version tlsv1.2",
        "require_certificate true",
        "# The certificate CN is the identity the ACL uses, and the client id, so one device cannot",
        "# disconnect another or take over its session by choosing its client id.",
        "use_identity_as_username true",
        "use_username_as_clientid true",
        "# QoS 2 is not used by the protocol: records and acks are QoS 1 with application acks.",
        "max_qos 1",
        "",
    ]
    return "\n".join(lines)


def render_acl(cfg: BrokerConfig) -> str:
    """The ACL file text: stations by pattern, gallery workers by name."""
    base = f"{PREFIX}/{cfg.county}"
    lines = [
        f"# ACL for the booking broker of county {cfg.county}. Generated by sync.county.broker_config.",
        "# %u is the client's certificate CN (use_identity_as_username). A station's CN is its slug,",
        "# so each station may write only its own records, status and audit entries and read only its own",
        "# acks, commands and audit acks. Patterns apply to every client, gallery included: a gallery CN contains a",
        "# dot, which no station slug can, so the pattern topics it gets are ones no one uses.",
        f"pattern write {base}/%u/records",
        f"pattern write {base}/%u/status",
        f"pattern read {base}/%u/acks",
        f"pattern read {base}/%u/commands",
        "# Booking-time check: a station asks on its own checks topic and hears the answer on its own",
        "# answers topic (the gallery answers nowhere else, whatever response topic a request names).",
        f"pattern write {base}/%u/checks",
        f"pattern read {base}/%u/answers",
        f"pattern write {base}/%u/audit",
        f"pattern read {base}/%u/audit-acks",
        "",
    ]
    for identity in cfg.gallery_identities:
        lines += [
            f"# Gallery worker {identity}: the reverse of a station, for every station of the county.",
            f"user {identity}",
            f"topic read {base}/+/records",
            f"topic read $share/{cfg.share_group}/{base}/+/records",
            f"topic read {base}/+/status",
            f"topic write {base}/+/acks",
            f"topic write {base}/+/commands",
            f"topic read {base}/+/checks",
            f"topic read $share/{cfg.share_group}/{base}/+/checks",
            f"topic write {base}/+/answers",
            f"topic read {base}/+/audit",
            f"topic read $share/{cfg.share_group}/{base}/+/audit",
            f"topic write {base}/+/audit-acks",
            "",
        ]
    for station in cfg.revoked_stations:
        lines += [
            f"# Revoked station {station} (booking-gallery devices revoke): its certificate may still be valid,",
            "# but nothing goes in or out. Mosquitto checks deny rules before every grant, patterns included.",
            f"user {station}",
            "topic deny #",
            "",
        ]
    return "\n".join(lines)


def write_broker_files(cfg: BrokerConfig, conf_path: str | PathLike[str]) -> tuple[Path, Path]:
    """Write ``mosquitto.conf`` to ``conf_path`` and the ACL to ``cfg.acl_file``; return both.

    Each file is replaced atomically: Mosquitto may re-read the ACL at any moment (SIGHUP), and half
    an ACL file would lock out the whole county.
    """
    conf = Path(conf_path)
    acl = Path(cfg.acl_file)
    write_file_atomic(conf, render_mosquitto_conf(cfg).encode())
    write_file_atomic(acl, render_acl(cfg).encode())
    return conf, acl


SETTINGS_FILE = "broker.json"


def save_settings(cfg: BrokerConfig, directory: str | PathLike[str]) -> Path:
    """Keep the generator's inputs beside the files (``broker.json``) so a later revocation can
    regenerate the same ACL with one more ``deny`` block, without county IT retyping every option."""
    path = Path(directory) / SETTINGS_FILE
    data = asdict(cfg)
    data["extra_gallery_identities"] = list(cfg.extra_gallery_identities)
    data["revoked_stations"] = list(cfg.revoked_stations)
    write_file_atomic(path, (json.dumps({"v": 1, "broker": data}, indent=2, sort_keys=True) + "\n").encode())
    return path


def load_settings(directory: str | PathLike[str]) -> BrokerConfig:
    """The :class:`BrokerConfig` saved by :func:`save_settings` in ``directory``; ValueError naming the
    file when it is missing or not one of ours."""
    path = Path(directory) / SETTINGS_FILE
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        data: dict[str, Any] = doc["broker"]
    except FileNotFoundError:
        raise ValueError(
            f"{path} does not exist: generate the broker files once with `booking-gallery broker-config --out "
            f"{Path(directory)} ...` (it keeps its settings there), then revoke again"
        ) from None
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(f"{path} is not a broker settings file: {exc}") from None
    known = {f.name for f in fields(BrokerConfig)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
    data["extra_gallery_identities"] = tuple(data.get("extra_gallery_identities", ()))
    data["revoked_stations"] = tuple(data.get("revoked_stations", ()))
    return BrokerConfig(**data)
