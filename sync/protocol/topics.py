"""MQTT topic names of the booking protocol, built and parsed in one place.

Every topic is ``booking/v1/{county}/{station}/{kind}``. County and station ids are *slugs*
(lower-case ASCII letters, digits and inner hyphens) so that they can never carry an MQTT
wildcard (``+``, ``#``), a level separator (``/``), a ``$`` prefix or anything Mosquitto's ACL
pattern substitution refuses. The broker identifies a station by its certificate CN, which is
the station slug itself, so the same rule keeps the ACL patterns in
:mod:`sync.county.broker_config` sound.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

PREFIX = "booking/v1"
SHARE_GROUP = "gallery"

TopicKind = Literal["records", "acks", "status", "commands", "checks", "answers", "audit", "audit-acks"]
KINDS: tuple[TopicKind, ...] = ("records", "acks", "status", "commands", "checks", "answers", "audit", "audit-acks")

#: 1-63 characters; starts and ends with a letter or digit; hyphens only inside.
SLUG_RE = re.compile(r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?")


class TopicError(ValueError):
    """A topic or slug that the protocol does not allow."""


def is_slug(value: object) -> bool:
    """True when ``value`` is a str usable as a county or station id."""
    return isinstance(value, str) and SLUG_RE.fullmatch(value) is not None


def check_slug(value: str, what: str = "id") -> str:
    """Return ``value`` unchanged, or raise :class:`TopicError` naming ``what`` if it is no slug."""
    if not is_slug(value):
        raise TopicError(f"{what} {value!r} is not a slug (1-63 of a-z, 0-9 and inner '-', e.g. 'king-county')")
    return value


def topic(county: str, station: str, kind: TopicKind) -> str:
    """The topic of one station's ``kind`` stream."""
    if kind not in KINDS:
        raise TopicError(f"unknown topic kind {kind!r}; expected one of {', '.join(KINDS)}")
    return f"{PREFIX}/{check_slug(county, 'county')}/{check_slug(station, 'station')}/{kind}"


def records_topic(county: str, station: str) -> str:
    """Device to gallery: signed records, QoS 1, never retained."""
    return topic(county, station, "records")


def acks_topic(county: str, station: str) -> str:
    """Gallery to device: per-record acks, QoS 1."""
    return topic(county, station, "acks")


def status_topic(county: str, station: str) -> str:
    """Device health, retained; the device's last will sets it offline."""
    return topic(county, station, "status")


def commands_topic(county: str, station: str) -> str:
    """County to device: signed commands with an expiry."""
    return topic(county, station, "commands")


def checks_topic(county: str, station: str) -> str:
    """Device to gallery: signed booking-time check requests ("was this face booked before?"), QoS 1."""
    return topic(county, station, "checks")


def answers_topic(county: str, station: str) -> str:
    """Gallery to device: the signed answers to the station's checks (the request's response topic)."""
    return topic(county, station, "answers")


def shared_subscription(county: str, kind: TopicKind, group: str = SHARE_GROUP) -> str:
    """Every station's ``kind`` topic of ``county`` as one MQTT shared subscription of the gallery workers.

    A shared subscription hands each message to one worker of the group, so a county can run several
    workers; the group name is a slug for the same reasons as the ids.
    """
    check_slug(group, "share group")
    return f"$share/{group}/{PREFIX}/{check_slug(county, 'county')}/+/{kind}"


def checks_subscription(county: str, group: str = SHARE_GROUP) -> str:
    """The shared subscription of the gallery workers that answer booking-time checks."""
    return shared_subscription(county, "checks", group)


def audit_topic(county: str, station: str) -> str:
    """Device to gallery: signed batches of the station's audit entries, QoS 1, never retained."""
    return topic(county, station, "audit")


def audit_acks_topic(county: str, station: str) -> str:
    """Gallery to device: one ack per audit batch, QoS 1."""
    return topic(county, station, "audit-acks")


def gallery_audit_subscription(county: str, group: str = SHARE_GROUP) -> str:
    """Every station's audit batches of ``county``, shared by the gallery workers like records."""
    return shared_subscription(county, "audit", group)


def gallery_subscription(county: str, group: str = SHARE_GROUP) -> str:
    """The shared subscription every gallery worker of a county uses for the records."""
    return shared_subscription(county, "records", group)


@dataclass(frozen=True)
class Topic:
    """A parsed protocol topic."""

    county: str
    station: str
    kind: TopicKind

    def __str__(self) -> str:
        return topic(self.county, self.station, self.kind)


def parse_topic(name: str) -> Topic:
    """Parse a concrete topic name (no wildcards) into its parts, or raise :class:`TopicError`."""
    parts = name.split("/")
    if len(parts) != 5 or "/".join(parts[:2]) != PREFIX:
        raise TopicError(f"not a {PREFIX}/{{county}}/{{station}}/{{kind}} topic: {name!r}")
    county, station, kind = parts[2], parts[3], parts[4]
    check_slug(county, "county")
    check_slug(station, "station")
    if kind not in KINDS:
        raise TopicError(f"unknown topic kind {kind!r} in {name!r}")
    return Topic(county, station, kind)  # type: ignore[arg-type]
