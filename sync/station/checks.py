"""The booking-time check on the station: the officer UI asks, the sync agent carries it over MQTT.

The sync agent owns the station's one MQTT connection (the broker makes the certificate CN the client id,
so a second connection would throw the agent off), so the UI never talks to the broker. They meet in a
private spool folder, ``DATA_DIR/sync/checks`` (0700, the agent's state folder):

* the agent writes ``enabled.json`` (with the timeout) when ``[sync] booking_check`` is on and removes it
  when it is off, so the UI asks only when someone will carry the question;
* the UI writes ``{request_id}.req`` (the frontal template, never the photo) after the officer accepts the
  frontal, then looks for ``{request_id}.ans`` on each screen refresh until the timeout;
* the agent, within one loop step, signs the request with the station key, publishes it on the station's
  ``checks`` topic (MQTT 5 response topic and correlation data; ``reply_to`` in the payload over 3.1.1),
  renames the file ``.sent``, and writes ``{request_id}.ans`` when the county's signed answer arrives
  (verified with the county command key) or drops an answer nobody asked for.

Where the county's policy sends photos, each prior booking may carry a small JPEG of its frontal. The agent
keeps only those it can decode (base64 in the ``.ans`` file); an answer whose photos this station cannot
read is still shown, as text, and logged once. The UI serves a kept photo to the screen by its position
(:meth:`CheckStatus.photo`), never inside the booking's JSON, which the screen polls four times a second.

Every file is written atomically, so a reader sees all of it or nothing. The agent audits the question
and the answer in the station's audit log; the UI audits a check that timed out. Files older than
:data:`SPOOL_MAX_AGE` are removed by the agent.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import json
import logging
import struct
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from sync.protocol import check, topics
from sync.protocol.files import make_private_dir, write_file_atomic
from sync.protocol.record import new_uuid7
from sync.protocol.wire import WireError, WireTemplate, check_uuid7

log = logging.getLogger(__name__)

SPOOL = "checks"
ENABLED = "enabled.json"
SPOOL_MAX_AGE = 600.0
DEFAULT_TIMEOUT = 5.0
FILE_MODE = 0o600


def spool_dir(data_dir: str | Path) -> Path:
    """``DATA_DIR/sync/checks``."""
    return Path(data_dir) / "sync" / SPOOL


@dataclass(frozen=True)
class CheckStatus:
    """What the officer's screen shows: ``pending``, ``answered`` (with 0-5 priors) or ``not_done``."""

    request_id: str
    state: str
    priors: list[dict[str, Any]] = field(default_factory=list)
    message: str = ""

    @property
    def final(self) -> bool:
        return self.state != "pending"

    def to_json(self) -> dict[str, Any]:
        """For the screen: each prior says whether it has a photo (``photo``: true), not the photo itself."""
        priors = [{**{k: v for k, v in p.items() if k != "photo"}, "photo": bool(p.get("photo"))} for p in self.priors]
        return {"request_id": self.request_id, "state": self.state, "priors": priors, "message": self.message}

    def photo(self, index: int) -> bytes | None:
        """The JPEG of prior booking ``index`` (0 = nearest), or None when it came without one."""
        if not 0 <= index < len(self.priors):
            return None
        encoded = self.priors[index].get("photo")
        if not isinstance(encoded, str):
            return None
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            return None


def usable_photo(jpeg: bytes) -> bool:
    """True when ``jpeg`` is a JPEG this station decodes to a picture no larger than the protocol's thumbnail
    (a county's photo is shown only if it is one: whatever else came is not put on the officer's screen)."""
    if not jpeg.startswith(b"\xff\xd8"):
        return False
    try:
        image = cv2.imdecode(np.frombuffer(jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error:
        return False
    return image is not None and image.size > 0 and max(image.shape[:2]) <= check.MAX_PHOTO_SIDE


# ------------------------------------------------------------------------------------------- UI side
class CheckSpool:
    """The UI's side: ask, then read the status (see the module docstring)."""

    def __init__(self, data_dir: str | Path, *, clock: Callable[[], float] = time.time) -> None:
        self.folder = spool_dir(data_dir)
        self.clock = clock

    def timeout(self) -> float | None:
        """Seconds to wait for an answer, or None when the agent does not carry checks."""
        try:
            doc = json.loads((self.folder / ENABLED).read_text(encoding="utf-8"))
            return float(doc["timeout"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def ask(self, template: Sequence[float], model: str) -> str:
        """Queue one question for the agent; returns its request id."""
        request_id = new_uuid7()
        values = struct.pack(f"<{len(template)}f", *template)
        body = {"request_id": request_id, "asked_at": self.clock(), "model": model,
                "template": base64.b64encode(values).decode()}
        write_file_atomic(self.folder / f"{request_id}.req", json.dumps(body).encode(), FILE_MODE)
        return request_id

    def status(self, request_id: str, *, asked_at: float, timeout: float) -> CheckStatus:
        answer = self.folder / f"{request_id}.ans"
        try:
            doc = json.loads(answer.read_text(encoding="utf-8"))
        except FileNotFoundError:
            if self.clock() - asked_at <= timeout:
                return CheckStatus(request_id, "pending", message="Checking the county gallery for prior bookings...")
            self.forget(request_id)
            return CheckStatus(request_id, "not_done", message=f"The check for prior bookings was not done: no "
                               f"answer from the county gallery within {timeout:g} s. The booking goes on.")
        except (OSError, ValueError):
            return CheckStatus(request_id, "not_done", message="The check for prior bookings was not done.")
        if doc.get("status") != "answered":
            return CheckStatus(request_id, "not_done", message="The check for prior bookings was not done: "
                               f"{doc.get('reason') or 'the gallery could not search'}.")
        priors = list(doc.get("priors", []))
        message = ("Possible prior bookings (advice only: check them before relying on them)." if priors
                   else "No prior bookings of this face in the county gallery.")
        return CheckStatus(request_id, "answered", priors, message)

    def forget(self, request_id: str) -> None:
        """Remove the question and any answer (the officer moved on)."""
        for suffix in (".req", ".sent", ".ans"):
            with contextlib.suppress(OSError):
                (self.folder / f"{request_id}{suffix}").unlink()


# ---------------------------------------------------------------------------------------- agent side
@dataclass(frozen=True)
class Outgoing:
    """A signed request ready to publish."""

    request_id: str
    topic: str
    payload: bytes
    response_topic: str


class CheckCarrier:
    """The agent's side: turn spooled questions into signed requests and answers into spooled answers."""

    def __init__(self, data_dir: str | Path, *, county: str, station: str, key: Ed25519PrivateKey,
                 command_keys: Mapping[str, Ed25519PublicKey], v5: bool, audit: Callable[[str, dict[str, Any]], None],
                 clock: Callable[[], float] = time.time) -> None:
        self.folder = spool_dir(data_dir)
        self.county, self.station = county, station
        self.key = key
        self.command_keys = dict(command_keys)
        self.v5 = v5
        self.audit = audit
        self.clock = clock
        self.topic = topics.checks_topic(county, station)
        self.answers_topic = topics.answers_topic(county, station)

    def enable(self, timeout: float) -> None:
        make_private_dir(self.folder.parent)
        make_private_dir(self.folder)
        write_file_atomic(self.folder / ENABLED, json.dumps({"timeout": timeout}).encode(), FILE_MODE)

    @staticmethod
    def disable(data_dir: str | Path) -> None:
        with contextlib.suppress(OSError):
            (spool_dir(data_dir) / ENABLED).unlink()

    def outgoing(self) -> Iterator[Outgoing]:
        """The spooled questions not sent yet, signed (a malformed file is removed)."""
        for path in sorted(self.folder.glob("*.req")):
            request_id = path.stem
            try:
                doc = json.loads(path.read_text(encoding="utf-8"))
                values = base64.b64decode(doc["template"], validate=True)
                request = check.CheckRequest(
                    check_uuid7(request_id, "request_id"), self.county, self.station,
                    WireTemplate(str(doc["model"]), len(values) // 4, values),
                    datetime.fromtimestamp(float(doc["asked_at"]), timezone.utc),
                    None if self.v5 else self.answers_topic)
                payload = check.encode_request(request, self.key)
            except (OSError, ValueError, KeyError, TypeError, WireError):
                with contextlib.suppress(OSError):
                    path.unlink()
                continue
            yield Outgoing(request_id, self.topic, payload, self.answers_topic)

    def sent(self, request_id: str) -> None:
        with contextlib.suppress(OSError):
            (self.folder / f"{request_id}.req").rename(self.folder / f"{request_id}.sent")
        self.audit("booking_check_asked", {"request_id": request_id})

    def on_answer(self, payload: bytes) -> bool:
        """Spool a verified answer to a question this station asked; False when it is dropped."""
        try:
            answer = check.decode_answer(payload, self.command_keys.get, county=self.county, station=self.station)
        except WireError as exc:
            self.audit("booking_check_answer_refused", {"code": exc.code})
            return False
        if not (self.folder / f"{answer.request_id}.sent").exists():
            return False  # the UI gave up (timeout) or never asked
        priors, unusable = [], 0
        for p in answer.priors:
            prior: dict[str, Any] = {"booking_number": p.booking_number, "ori": p.ori,
                                     "captured_on": p.captured_on.isoformat(), "distance": p.distance}
            if p.photo is not None and usable_photo(p.photo):
                prior["photo"] = base64.b64encode(p.photo).decode()
            elif p.photo is not None:
                unusable += 1
            priors.append(prior)
        if unusable:  # one line per answer, not per photo nor per screen refresh
            log.warning("the answer to booking check %s carried %d photo(s) this station cannot decode; the "
                        "officer sees the prior bookings without them", answer.request_id, unusable)
        body = {"status": answer.status, "searched": answer.searched, "reason": answer.reason, "priors": priors}
        write_file_atomic(self.folder / f"{answer.request_id}.ans", json.dumps(body).encode(), FILE_MODE)
        self.audit("booking_check_answered", {"request_id": answer.request_id, "status": answer.status,
                                              "priors": [f"{p.ori}/{p.booking_number}" for p in answer.priors],
                                              "photos": sum("photo" in p for p in priors),
                                              "photos_unusable": unusable})
        return True

    def sweep(self) -> None:
        """Remove spool files older than :data:`SPOOL_MAX_AGE` (answers nobody read, questions never sent)."""
        cutoff = self.clock() - SPOOL_MAX_AGE
        for path in self.folder.glob("*.*"):
            if path.name == ENABLED:
                continue
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()
