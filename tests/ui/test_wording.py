"""Plain words for the officer: what the store, the sync agent and the quality engine say for county IT is
reworded, and the technical text is kept as the detail (never lost, never on the officer's line)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from appliance.store import DiskFullError, QueueFullError, StationStoreError
from appliance.store.space import ensure_space
from appliance.ui.review_words import review_hints
from appliance.ui.wording import capture_problem, delivery_error, store_refusal

TECHNICAL = re.compile(r"PUBACK|0x[0-9a-f]{2}|[KMGT]iB|/[a-z]+/|px between|upscaling", re.I)


def test_a_full_disk_is_said_without_paths_or_byte_counts(tmp_path: Path) -> None:
    with pytest.raises(DiskFullError) as info:
        ensure_space(tmp_path, floor_bytes=900 * 2**50)  # the floor of the finding: "818.5 TiB"
    assert "TiB" in str(info.value) and str(tmp_path) in str(info.value)  # the store's words, for county IT
    words = store_refusal(info.value)
    assert words.text.startswith("Booking NOT saved: the station's disk is full.")
    assert not TECHNICAL.search(words.text) and str(tmp_path) not in words.text
    assert words.detail is not None and words.detail.startswith("store_full: disk_full (free_bytes=")
    assert str(tmp_path) not in words.detail


def test_a_full_queue_and_other_store_failures_keep_their_cause_as_detail() -> None:
    queue = store_refusal(QueueFullError("the outbox holds 500 undelivered records (max_pending = 500)"))
    assert "too many bookings are waiting" in queue.text and "max_pending = 500" in (queue.detail or "")
    other = store_refusal(StationStoreError("database is locked"))
    assert other.text.startswith("Booking NOT saved") and other.detail == "store_error: database is locked"


@pytest.mark.parametrize(("error", "words"), [
    ("no gallery is subscribed on the broker (PUBACK 0x10)", "not taking bookings right now"),
    ("broker refused the record: Not authorized (0x87)", "refused this station's delivery"),
    ("no ack from the gallery within 30 s", "has not confirmed it yet"),
    ("connection lost before the gallery's ack (keepalive timeout)", "connection to the county dropped"),
    ("something new and strange", "Not delivered yet"),
])
def test_delivery_errors_in_words(error: str, words: str) -> None:
    plain = delivery_error(error)
    assert plain is not None and words in plain.text and plain.detail == error
    assert not TECHNICAL.search(plain.text)


def test_no_delivery_error_says_nothing() -> None:
    assert delivery_error(None) is None and delivery_error("") is None


def test_the_standard_crops_pixel_arithmetic_is_said_once_in_words() -> None:
    engine = ("the source has too few pixels for this profile: 28 px between the eyes, 86 px needed for a "
              "480x600 output with at least 90 px between the eyes (upscaling is limited to 5%); move the "
              "camera closer or use a higher resolution")
    guidance = [{"code": "eyes_closed", "message": "Ask the subject to open their eyes."},
                {"code": "not_standardized", "message": f"The photo cannot be cropped to the standard: {engine}"}]
    notes = [f"not standardized ({engine}); the frame is kept as captured",
             "no template: the gallery cannot search this booking by face"]
    hints, kept = review_hints(guidance, notes)
    assert hints[0] == guidance[0]
    assert hints[1]["message"].startswith("The face is too small in the picture. Move the camera closer")
    assert engine in hints[1]["detail"]
    assert kept == ["no template: the gallery cannot search this booking by face"]
    shown = " ".join([h["message"] for h in hints] + kept)
    assert not TECHNICAL.search(shown)

    # With the live gate's own "too far away" hint, the crop's problem is that hint's detail: said once.
    too_far = {"code": "too_far", "message": "The subject is too far away: ask them to step closer."}
    hints, kept = review_hints([too_far, guidance[1]], notes[:1])
    assert [h["code"] for h in hints] == ["too_far"] and hints[0]["message"] == too_far["message"]
    assert engine in hints[0]["detail"] and kept == []


def test_an_unknown_processing_failure_still_reads_as_a_sentence() -> None:
    plain = capture_problem("cv2.error: (-215:Assertion failed) !ssize.empty()")
    assert plain.text == "The photo could not be processed. Capture again." and "cv2.error" in (plain.detail or "")
