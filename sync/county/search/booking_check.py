"""The gallery's side of the booking-time check: answer "was this face booked before?" from the index.

A gallery worker with ``[search] booking_check = true`` subscribes to every station's ``checks`` topic
(shared among the workers) and answers each verified request on that station's own ``answers`` topic
with up to five prior bookings whose frontal template is within ``booking_check_threshold`` (nearest
first, one entry per booking). Before it searches it catches the index up with the store, so a record
stored or imported a moment ago is found. Every answer, and every request it refuses, is audited in the
gallery store. The answer is signed by the county command key: the worker needs to read it.

Refused without an answer (the station then says the check was not done): a request that does not verify
(unknown, revoked or other-county station, bad signature, a signer that is not the topic's station), one
older than :data:`~sync.protocol.check.MAX_REQUEST_AGE`, one that names a response topic other than
the station's own ``answers`` topic, and a station's requests beyond ``max_per_minute`` (a booking desk
asks once per accepted frontal; a station asking far more is searching the gallery, not booking).

Photos go with the answer only where the county's policy allows the booking desk to see earlier mug shots
(``[search] booking_check_photos``, off by default): then each prior booking carries a thumbnail of its
frontal (:func:`thumbnail`: longest side :data:`~sync.protocol.check.MAX_PHOTO_SIDE` pixels, at most
:data:`~sync.protocol.check.MAX_PHOTO_BYTES` bytes), signed with the rest of the answer. A prior whose
photo cannot be read or shrunk to the cap goes without one: the text is what the officer needs.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

import cv2
import numpy as np

from sync.county.gallery.store import GalleryStore
from sync.county.search.index import SearchIndex
from sync.protocol import topics
from sync.protocol.check import (
    ANSWER_CONTENT_TYPE,
    MAX_PHOTO_BYTES,
    MAX_PHOTO_SIDE,
    MAX_PRIORS,
    MAX_REQUEST_AGE,
    CheckAnswer,
    CheckRequest,
    PriorBooking,
    decode_request,
    encode_answer,
    reply_topic,
)
from sync.protocol.wire import WireError

log = logging.getLogger(__name__)

DEFAULT_THRESHOLD = 0.6  # dlib's same-person distance, the bundle's match threshold
DEFAULT_MAX_PER_MINUTE = 30
ACTOR = "booking-check"
#: JPEG qualities tried in turn until a thumbnail fits :data:`MAX_PHOTO_BYTES` (160 px faces take 5-8 KB at 85).
THUMBNAIL_QUALITIES = (85, 70, 55, 40)
_REDUCED = ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4), (2, cv2.IMREAD_REDUCED_COLOR_2))


def thumbnail(jpeg: bytes, *, side: int = MAX_PHOTO_SIDE, max_bytes: int = MAX_PHOTO_BYTES,
              size: tuple[int, int] | None = None) -> bytes | None:
    """A JPEG at most ``side`` pixels on its longest side and ``max_bytes`` long, or None when ``jpeg`` does
    not decode or no quality fits. ``size`` (width, height, known from the record) lets the decoder skip
    straight to a reduced scale: a 10 MP capture then decodes in a few milliseconds, not 100."""
    flag = cv2.IMREAD_COLOR
    if size is not None:
        longest = max(size)
        flag = next((f for r, f in _REDUCED if longest // r >= side), cv2.IMREAD_COLOR)
    try:
        image = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), flag)
    except cv2.error:
        return None
    if image is None or image.ndim != 3 or image.size == 0:
        return None
    height, width = image.shape[:2]
    scale = side / max(height, width)
    if scale < 1:
        image = cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))),
                           interpolation=cv2.INTER_AREA)
    for quality in THUMBNAIL_QUALITIES:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if ok and buf.size <= max_bytes:
            return buf.tobytes()
    return None


@dataclass(frozen=True)
class Reply:
    """What to publish: the answer on the station's answers topic, with the request's correlation data."""

    topic: str
    payload: bytes
    correlation: bytes | None
    answer: CheckAnswer


class BookingCheckResponder:
    """Answers booking-time checks from ``index`` over ``store``, signing with the county key."""

    content_type = ANSWER_CONTENT_TYPE

    def __init__(self, store: GalleryStore, index: SearchIndex, *, county: str, key: Any, kid: str,
                 threshold: float = DEFAULT_THRESHOLD, max_per_minute: int = DEFAULT_MAX_PER_MINUTE,
                 photos: bool = False, clock: Callable[[], datetime] | None = None) -> None:
        self.store = store
        self.index = index
        self.county = county
        self.key = key
        self.kid = kid
        self.threshold = threshold
        self.photos = photos
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self.max_per_minute = max_per_minute
        self._recent: defaultdict[str, deque[float]] = defaultdict(deque)

    def _verified(self, topic_name: str, payload: bytes) -> CheckRequest:
        parsed = topics.parse_topic(topic_name)
        if parsed.kind != "checks" or parsed.county != self.county:
            raise WireError("bad_topic", "not this county's checks")
        device = self.store.get_device(parsed.station)
        if device is None or not device.active or device.county != self.county:
            raise WireError("unknown_station", f"station {parsed.station!r} is not an active station of this county")

        def lookup(kid: str) -> Any:
            return device.verify_key() if kid == parsed.station else None

        request = decode_request(payload, lookup)
        if (request.county, request.station) != (parsed.county, parsed.station):
            raise WireError("wrong_target", "the request names another station than its topic")
        if self.clock() - request.asked_at > MAX_REQUEST_AGE:
            raise WireError("expired", "the request is too old to answer")
        recent, now = self._recent[request.station], time.monotonic()
        while recent and now - recent[0] > 60:
            recent.popleft()
        if len(recent) >= self.max_per_minute:
            raise WireError("rate_limited", f"more than {self.max_per_minute} checks in a minute")
        recent.append(now)
        return request

    def handle(self, topic_name: str, payload: bytes, *, response_topic: str | None,
               correlation: bytes | None) -> Reply | None:
        """The reply to one request, or None (refused: logged and audited, no answer)."""
        try:
            request = self._verified(topic_name, payload)
            target = reply_topic(request, response_topic)
        except (WireError, topics.TopicError) as exc:
            code = getattr(exc, "code", "bad_topic")
            log.warning("booking check on %s refused: %s", topic_name[:200], exc)
            self.store.audit(ACTOR, "booking_check_refused", topic_name[:200], {"reason": code})
            return None
        answer = self._answer(request)
        self.store.audit(ACTOR, "booking_check", request.station, {
            "request_id": request.request_id, "status": answer.status, "searched": answer.searched,
            "priors": [f"{p.ori}/{p.booking_number}" for p in answer.priors], "reason": answer.reason,
            "photos": sum(p.photo is not None for p in answer.priors)})
        payload_out = encode_answer(answer, self.key, kid=self.kid)
        return Reply(target, payload_out, correlation if correlation and len(correlation) <= 64 else None, answer)

    def _answer(self, request: CheckRequest) -> CheckAnswer:
        def unavailable(reason: str) -> CheckAnswer:
            return CheckAnswer(request.request_id, request.county, request.station, "unavailable", self.clock(),
                               reason=reason)

        template = request.template
        if template.dim != 128 or (self.index.model is not None and template.model != self.index.model):
            return unavailable(f"the gallery has no templates of model {template.model} ({template.dim} values)")
        try:
            self.index.catch_up(self.store)
            found = self.index.search(self.store, np.frombuffer(template.values, "<f4"), k=MAX_PRIORS * 5,
                                      threshold=self.threshold)
        except Exception as exc:  # an index failure: the booking goes on, the screen says not done
            log.exception("booking check search failed")
            return unavailable(f"search failed: {type(exc).__name__}")
        priors: list[PriorBooking] = []
        seen: set[tuple[str, str]] = set()
        for c in found.candidates:
            if (c.ori, c.booking_number) in seen:
                continue
            seen.add((c.ori, c.booking_number))
            photo = self._photo(c.record_id) if self.photos else None
            priors.append(PriorBooking(c.booking_number, c.ori, c.captured_at.date(), c.distance, photo))
            if len(priors) == MAX_PRIORS:
                break
        return CheckAnswer(request.request_id, request.county, request.station, "answered", self.clock(),
                           searched=found.searched, priors=tuple(priors))


    def _photo(self, record_id: str) -> bytes | None:
        """The thumbnail of the record's frontal (its first photo when it has none), or None (logged)."""
        from sync.county.gallery.export import load_record

        try:
            record = load_record(self.store, record_id)
        except Exception as exc:  # a record that no longer verifies or was purged a moment ago: text only
            log.warning("booking check: no photo of record %s: %s", record_id, exc)
            return None
        frontal = [c for c in record.captures if c.pose == "frontal"] or list(record.captures)
        if not frontal:
            return None
        capture = frontal[0]
        photo = thumbnail(capture.jpeg, size=(capture.width, capture.height))
        if photo is None:
            log.warning("booking check: the frontal of record %s could not be made a thumbnail", record_id)
        return photo


def responder_from_config(store: GalleryStore, index: SearchIndex | None, county: str) -> BookingCheckResponder | None:
    """The responder a gallery worker runs when ``[search] booking_check`` is on (it needs the search index and
    the county command key: ``[search] booking_check_key``, a copy the worker's user may read, else the one in
    ``[ca] dir``); None, logged, when it is off or cannot run."""
    from sync.county.config import current_config
    from sync.protocol.enroll import default_command_kid

    config = current_config()
    if not config.search.booking_check:
        return None
    if index is None:
        log.error("[search] booking_check is on, but there is no search index: stations' checks go unanswered")
        return None
    key = _answer_key(config, county)
    if key is None:
        return None
    log.info("answering booking-time checks (threshold %.2f, %s)", config.search.booking_check_threshold,
             "with photos" if config.search.booking_check_photos else "no photos")
    return BookingCheckResponder(store, index, county=county, key=key, kid=default_command_kid(county),
                                 threshold=config.search.booking_check_threshold,
                                 photos=config.search.booking_check_photos)


def _answer_key(config: Any, county: str) -> Any:
    """The Ed25519 key that signs answers, or None (logged)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from sync.county.gallery.devices import CommandError, load_command_key

    path = config.search.booking_check_key
    if path is not None:
        try:
            key = serialization.load_pem_private_key(path.read_bytes(), password=None)
        except (OSError, ValueError, TypeError) as exc:
            log.error("booking checks are off: cannot read [search] booking_check_key %s: %s", path, exc)
            return None
        if not isinstance(key, Ed25519PrivateKey):
            log.error("booking checks are off: %s is not an Ed25519 key", path)
            return None
        return key
    if config.ca_dir is None:
        log.error("booking checks are off: set [search] booking_check_key or [ca] dir (the key signs answers)")
        return None
    try:
        ca, key = load_command_key(config.ca_dir)
    except CommandError as exc:
        log.error("booking checks are off: %s", exc)
        return None
    if ca.county != county:
        log.error("booking checks are off: the CA in %s is county %s, this worker serves %s", config.ca_dir,
                  ca.county, county)
        return None
    return key
