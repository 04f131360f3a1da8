"""The booking in progress, kept on disk (encrypted) so a server restart or a power cut loses no photo.

The store keeps only committed records and has no draft facility, so the UI keeps its own: one file,
``DATA_DIR/ui/draft.bin`` (directory 0700, file 0600), rewritten after every accepted capture and every
change to the set of accepted captures, and removed once the booking is saved (after the store's commit)
or discarded by an officer. On start-up the server reads it back and reopens the booking with those
captures, so the officer signs in again and carries on.

What is kept: the booking fields and every *accepted* capture exactly as it will go into the record
(standardized JPEG, full quality report, template and model id, operator, override reason, SMT
description). A candidate still waiting for accept or retake is not kept: the officer has not vouched
for it, and retaking it costs seconds.

Encryption: the same AES-256-GCM key and cipher as the store's images (`appliance.store.crypto`,
``DATA_DIR/keys/store.key``), because a draft holds the same criminal justice information as a record.
The whole CBOR document is one blob bound to the label ``ui-draft``; a damaged or foreign file fails to
decrypt and is set aside (renamed ``draft.bin.damaged-<time>``) rather than deleted, so county IT can
look at it. Writes go to a temporary file that is fsynced and renamed over the old one: a crash leaves
either the old draft or the new one, never half of either.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import cbor2

from appliance.capture.processing import Hint, ProcessedCapture
from appliance.capture.session import AcceptedCapture
from appliance.store import Booking
from appliance.store.clock import from_text, to_text, utc_now
from appliance.store.crypto import BlobCipher
from appliance.store.errors import DecryptError
from sync.protocol.files import fsync_dir, write_private_file

DRAFT_DIR = "ui"
DRAFT_FILE = "draft.bin"
FORMAT = 1
_RECORD = "ui-draft"
_LABEL = "booking"


class DraftError(Exception):
    """The draft file cannot be read; the message says what was done with it."""


@dataclass(frozen=True)
class Draft:
    """A booking in progress: its fields, who opened it and when, and its accepted captures."""

    booking: Booking
    opened_by: str
    opened_at: datetime
    accepted: tuple[AcceptedCapture, ...]


def _capture_doc(item: AcceptedCapture) -> dict[str, Any]:
    p = item.processed
    return {
        "pose": p.pose, "jpeg": p.jpeg, "width": p.width, "height": p.height, "passed": p.passed,
        "guidance": [[h.code, h.message] for h in p.guidance], "quality": p.quality,
        "template": None if p.template is None else list(p.template), "template_model": p.template_model,
        "mode": p.mode, "captured_at": to_text(p.captured_at), "frame_sequence": p.frame_sequence,
        "notes": list(p.notes), "operator_id": item.operator_id, "override_reason": item.override_reason,
        "accepted_at": to_text(item.accepted_at), "smt_description": item.smt_description,
    }


def _capture_from(doc: dict[str, Any]) -> AcceptedCapture:
    processed = ProcessedCapture(
        pose=doc["pose"], jpeg=bytes(doc["jpeg"]), width=int(doc["width"]), height=int(doc["height"]),
        passed=bool(doc["passed"]), guidance=tuple(Hint(c, m) for c, m in doc["guidance"]),
        quality=dict(doc["quality"]),
        template=None if doc["template"] is None else tuple(float(v) for v in doc["template"]),
        template_model=doc["template_model"], mode=doc["mode"], captured_at=from_text(doc["captured_at"]),
        frame_sequence=doc["frame_sequence"], notes=tuple(doc["notes"]))
    return AcceptedCapture(processed, doc["operator_id"], doc["override_reason"], from_text(doc["accepted_at"]),
                           doc["smt_description"])


class DraftStore:
    """The one draft file of a data directory."""

    def __init__(self, data_dir: Path | str, cipher: BlobCipher) -> None:
        self.dir = Path(data_dir) / DRAFT_DIR
        self.path = self.dir / DRAFT_FILE
        self.cipher = cipher

    def save(self, draft: Draft) -> None:
        """Write the draft atomically (temp file, fsync, rename, fsync the directory)."""
        b = draft.booking
        doc = {
            "format": FORMAT,
            "booking": {"agency_ori": b.agency_ori, "booking_number": b.booking_number,
                        "operator_id": b.operator_id, "captured_at": to_text(b.captured_at),
                        "station_id": b.station_id},
            "opened_by": draft.opened_by, "opened_at": to_text(draft.opened_at),
            "accepted": [_capture_doc(item) for item in draft.accepted],
        }
        blob = self.cipher.encrypt(cbor2.dumps(doc), _RECORD, _LABEL)
        self._ensure_dir()
        write_private_file(self.path, blob)

    def load(self) -> Draft | None:
        """The draft, or None if there is none. A file that does not decrypt or parse is renamed aside and
        `DraftError` raised, naming where it went."""
        try:
            blob = self.path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            doc = cbor2.loads(self.cipher.decrypt(blob, _RECORD, _LABEL))
            if doc.get("format") != FORMAT:
                raise ValueError(f"unknown draft format {doc.get('format')!r}")
            bk = doc["booking"]
            booking = Booking(agency_ori=bk["agency_ori"], booking_number=bk["booking_number"],
                              operator_id=bk["operator_id"], captured_at=from_text(bk["captured_at"]),
                              station_id=bk["station_id"])
            accepted = tuple(_capture_from(c) for c in doc["accepted"])
            return Draft(booking, doc["opened_by"], from_text(doc["opened_at"]), accepted)
        except (DecryptError, ValueError, KeyError, TypeError, cbor2.CBORDecodeError) as exc:
            aside = self.path.with_name(f"{DRAFT_FILE}.damaged-{utc_now().strftime('%Y%m%dT%H%M%SZ')}")
            with contextlib.suppress(OSError):
                os.replace(self.path, aside)
            raise DraftError(f"the saved booking in progress ({self.path}) cannot be read ({exc}); it was moved "
                             f"to {aside} for county IT") from None

    def clear(self) -> None:
        """Remove the draft (after the booking was saved or discarded)."""
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
            fsync_dir(self.dir)

    def _ensure_dir(self) -> None:
        if not self.dir.exists():
            self.dir.mkdir(mode=0o700, parents=True)
            os.chmod(self.dir, 0o700)
