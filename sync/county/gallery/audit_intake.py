"""The receiver's handling of a station's audit stream: verify a batch, hold what links, ack it; and
compare the signed chain head each status carries with the county's copy (:mod:`sync.county.gallery.audit`).

Separate from the record path on purpose: audit batches never touch records, exports or their acks.
A batch is checked like a record (the topic's station must be a registered, active device of this
county, and the batch must be signed by that station's key); a refusal is logged as a rejection and
acked ``rejected`` so the station keeps the entries and retries.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sync.county.gallery.audit import AuditChains
from sync.county.gallery.store import GalleryStore
from sync.protocol import mqtt, topics
from sync.protocol.audit_wire import (
    AUDIT_ACK_CONTENT_TYPE,
    AuditAck,
    encode_audit_ack,
    verify_batch,
    verify_head,
)
from sync.protocol.wire import WireError

if TYPE_CHECKING:
    from sync.county.gallery.receiver import GalleryReceiver

log = logging.getLogger(__name__)


def handle_audit(receiver: GalleryReceiver, topic_name: str, payload: bytes) -> tuple[AuditAck | None, str | None]:
    """Verify and hold one audit batch; return the ack and its topic (None, None for a topic naming no
    station of this county). Store failures propagate (no ack: the station sends the batch again)."""
    received_at = receiver.clock()
    try:
        parsed = topics.parse_topic(topic_name)
    except topics.TopicError as exc:
        receiver._reject(topic_name, None, payload, WireError("bad_topic", str(exc)), received_at)
        return None, None
    if parsed.kind != "audit" or parsed.county != receiver.config.county:
        receiver._reject(topic_name, parsed.station, payload, WireError("bad_topic", "not this county's audit"),
                         received_at)
        return None, None
    station = parsed.station
    ack_topic = topics.audit_acks_topic(parsed.county, station)
    try:
        key = _station_key(receiver.store, station, parsed.county)

        def lookup(kid: str) -> Any:
            if kid != station:
                raise WireError("kid_mismatch", f"signed by {kid!r} but sent on {station!r}'s topic")
            return key

        batch = verify_batch(payload, lookup)
        if batch.county != parsed.county:
            raise WireError("county_mismatch", f"audit batch is for county {batch.county!r}")
    except WireError as exc:
        receiver._reject(topic_name, station, payload, exc, received_at)
        return AuditAck(0, "rejected", exc.code), ack_topic
    ack = AuditChains(receiver.store).receive(batch, now=received_at)
    receiver.stats.counts[f"audit_{ack.status}"] += 1
    if ack.status == "conflict":
        log.error("audit log of %s does not match the county's copy (%s at or before entry %d): see "
                  "booking-gallery audit verify --station %s", station, ack.reason, ack.through_seq, station)
    return ack, ack_topic


def publish_audit_ack(client: mqtt.Client, ack_topic: str, ack: AuditAck, expiry: int) -> None:
    client.publish(ack_topic, encode_audit_ack(ack), qos=1, retain=False, content_type=AUDIT_ACK_CONTENT_TYPE,
                   expiry=expiry)


def check_status_head(store: GalleryStore, station: str, county: str, body: dict[str, Any], *,
                      now: datetime | None = None) -> str:
    """The status's signed ``audit_head`` against the county's copy; returns the alarm kind raised or ''.
    ``now`` is when the gallery received the status (the truncation check trusts only the gallery's clock,
    never the status's own ``at``). A status without a head (older software, the last will) or with a bad
    signature changes nothing."""
    head = body.get("audit_head")
    if head is None:
        return ""
    try:
        seq, digest = verify_head(head, county, station, _station_key(store, station, county))
    except WireError as exc:
        log.warning("ignored the audit head in %s's status: %s", station, exc)
        return ""
    return AuditChains(store).check_head(station, seq, digest, from_status=True, now=now)


def _station_key(store: GalleryStore, station: str, county: str) -> Any:
    device = store.get_device(station)
    if device is None:
        raise WireError("unknown_station", f"station {station!r} is not registered with this gallery")
    if not device.active:
        raise WireError("revoked_device", f"station {station!r} was revoked")
    if device.county != county:
        raise WireError("wrong_county", f"station {station!r} is registered to {device.county!r}")
    return device.verify_key()
