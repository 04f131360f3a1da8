"""Auto-capture state machine on a fake clock: stable window, resets, expiry, re-arm, manual overrides."""

from __future__ import annotations

import math
import sys
import threading

import pytest

from appliance.capture.autocapture import (
    MAX_REASON_CHARS,
    Action,
    AutoCapture,
    OverrideRequired,
    validate_reason,
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def run(auto: AutoCapture, clock: Clock, frames: list[tuple[str, bool, float]], step: float = 0.1):
    """Feed frames `step` seconds apart (the first at the current time); return the decisions."""
    decisions = []
    for i, (frame, passed, score) in enumerate(frames):
        if i:
            clock.now += step
        decisions.append(auto.feed(frame, passed, score, [] if passed else ["turn the head left a little"]))
    return decisions


@pytest.fixture
def clock() -> Clock:
    return Clock()


def test_stable_window_captures_exactly_once_with_the_best_frame(clock: Clock) -> None:
    auto = AutoCapture(stable_seconds=0.5, clock=clock)
    scores = [70, 75, 92, 80, 85, 88]  # t = 0.0 .. 0.5: the window completes on the sixth frame
    decisions = run(auto, clock, [(f"f{i}", True, s) for i, s in enumerate(scores)])
    assert [d.action for d in decisions] == [Action.WAIT] * 5 + [Action.CAPTURE]
    assert [round(d.progress, 2) for d in decisions[:5]] == [0.0, 0.2, 0.4, 0.6, 0.8]
    capture = decisions[-1].capture
    assert capture is not None and capture.frame == "f2" and capture.score == 92
    assert capture.mode == "auto" and capture.passed and capture.at == clock.now
    # It does not fire again however long the gates keep passing.
    later = run(auto, clock, [("g", True, 99)] * 20)
    assert {d.action for d in later} == {Action.DONE}
    assert not auto.armed and auto.last_capture is capture


def test_failing_frame_mid_window_resets_it(clock: Clock) -> None:
    auto = AutoCapture(stable_seconds=0.5, clock=clock)
    frames = [("a", True, 99), ("b", True, 90), ("c", True, 90), ("blink", False, 95)]
    frames += [(f"n{i}", True, 60 + i) for i in range(6)]  # a new window starts after the failure
    decisions = run(auto, clock, frames)
    actions = [d.action for d in decisions]
    assert actions == [Action.WAIT] * 9 + [Action.CAPTURE]  # 0.5 s after "n0", not after "a"
    assert decisions[3].progress == 0.0 and decisions[3].guidance == ("turn the head left a little",)
    capture = decisions[-1].capture
    assert capture.frame == "n5"  # "a" (99) belonged to the broken window and is forgotten


def test_window_does_not_complete_before_its_time(clock: Clock) -> None:
    auto = AutoCapture(stable_seconds=0.5, clock=clock)
    decisions = run(auto, clock, [("x", True, 50)] * 5, step=0.099)  # 0.396 s of passing frames
    assert all(d.action is Action.WAIT for d in decisions)
    clock.now += 0.104  # exactly 0.5 s after the window began
    assert auto.feed("y", True, 40, []).action is Action.CAPTURE


def test_window_expires_when_frames_stop_coming(clock: Clock) -> None:
    """Two passing frames far apart are not a continuous pose: nobody saw what happened in between."""
    auto = AutoCapture(stable_seconds=0.5, max_gap=0.3, clock=clock)
    assert auto.feed("a", True, 99).action is Action.WAIT
    clock.now += 0.2
    assert auto.feed("b", True, 50).action is Action.WAIT
    clock.now += 2.0  # analysis stalled / camera hiccup
    decision = auto.feed("c", True, 10)
    assert decision.action is Action.WAIT and decision.progress == 0.0  # a new window, from "c"
    decisions = run(auto, clock, [("d", True, 20)] * 6)
    assert decisions[-1].action is Action.CAPTURE
    assert decisions[-1].capture.frame == "d"  # not "a" from the expired window


def test_clock_going_backwards_restarts_the_window(clock: Clock) -> None:
    auto = AutoCapture(stable_seconds=0.5, clock=clock)
    auto.feed("a", True, 99)
    clock.now -= 5
    assert auto.feed("b", True, 1).progress == 0.0


def test_gap_check_can_be_disabled(clock: Clock) -> None:
    auto = AutoCapture(stable_seconds=0.5, max_gap=None, clock=clock)
    auto.feed("a", True, 99)
    clock.now += 10
    assert auto.feed("b", True, 1).capture.frame == "a"


def test_rearm_starts_a_fresh_window_for_the_next_pose(clock: Clock) -> None:
    auto = AutoCapture(stable_seconds=0.3, clock=clock)
    first = run(auto, clock, [("front", True, 90)] * 4)[-1].capture
    assert first.frame == "front"
    run(auto, clock, [("moving", True, 99)] * 3)  # ignored: not armed
    auto.rearm()
    assert auto.armed
    decisions = run(auto, clock, [("profile", True, 80)] * 4)
    assert [d.action for d in decisions] == [Action.WAIT] * 3 + [Action.CAPTURE]
    assert decisions[-1].capture.frame == "profile"


def test_ties_go_to_the_newer_frame_and_unassessable_scores_fail(clock: Clock) -> None:
    auto = AutoCapture(stable_seconds=0.2, clock=clock)
    decisions = run(auto, clock, [("old", True, 80), ("new", True, 80), ("last", True, 70)])
    assert decisions[-1].capture.frame == "new"
    auto.rearm()
    for bad in (math.nan, math.inf, None, "high"):
        decision = auto.feed("x", True, bad)
        assert decision.action is Action.WAIT and decision.progress == 0.0


def test_zero_stable_seconds_captures_the_first_passing_frame(clock: Clock) -> None:
    auto = AutoCapture(stable_seconds=0, clock=clock)
    assert auto.feed("a", False, 99).action is Action.WAIT
    assert auto.feed("b", True, 1).capture.frame == "b"


def test_memory_is_bounded_over_a_long_window(clock: Clock) -> None:
    """Only the best frame of the window is held: frames that lost are released at once."""
    auto = AutoCapture(stable_seconds=1000, max_gap=None, clock=clock)
    best = object()
    auto.feed(best, True, 100)
    refs_before = sys.getrefcount(best)
    for i in range(10_000):
        clock.now += 0.01
        loser = bytearray(1000)
        auto.feed(loser, True, i % 50)
        assert sys.getrefcount(loser) == 2  # ours + getrefcount's argument: the machine kept none
    assert sys.getrefcount(best) == refs_before


@pytest.mark.parametrize("kwargs", [{"stable_seconds": -1}, {"stable_seconds": math.nan}, {"max_gap": 0}])
def test_bad_settings_are_refused(kwargs: dict) -> None:
    with pytest.raises(ValueError):
        AutoCapture(**kwargs)


# --- manual captures ---------------------------------------------------------------------------------


class Report:
    def __init__(self, passed: bool) -> None:
        self.passed = passed


def test_manual_capture_of_a_passing_frame_needs_no_reason(clock: Clock) -> None:
    auto = AutoCapture(clock=clock)
    capture = auto.manual("f", Report(True), operator="  badge-1142 ")
    assert capture.mode == "manual" and capture.passed and capture.override_reason is None
    assert capture.operator == "badge-1142" and capture.at == clock.now
    assert not auto.armed  # auto-capture will not take a second photo of this pose behind the officer


def test_manual_capture_failing_a_gate_requires_a_reason(clock: Clock) -> None:
    auto = AutoCapture(clock=clock)
    for missing in (None, "", "   \t "):
        with pytest.raises(OverrideRequired, match="enter a reason"):
            auto.manual("f", {"passed": False}, operator="badge-1142", override_reason=missing)
    assert auto.armed and auto.last_capture is None  # nothing was captured
    capture = auto.manual(
        "f", {"passed": False}, operator="badge-1142", override_reason="  subject will not open eyes; medical  "
    )
    assert capture.override_reason == "subject will not open eyes; medical"
    assert capture.operator == "badge-1142" and not capture.passed
    assert capture.report == {"passed": False}


def test_manual_capture_ends_a_running_window(clock: Clock) -> None:
    auto = AutoCapture(stable_seconds=0.5, clock=clock)
    run(auto, clock, [("a", True, 90)] * 3)
    auto.manual("m", Report(True), operator="op")
    assert auto.feed("b", True, 99).action is Action.DONE
    auto.rearm()
    assert auto.feed("c", True, 99).progress == 0.0


@pytest.mark.parametrize(
    ("reason", "message"),
    [
        ("line one\nline two", "control characters"),
        ("tab\there", "control characters"),
        ("bell\x07", "control characters"),
        ("spoof \u202eevil", "control characters"),  # bidi override could disguise an audit line
        ("zero\u200bwidth", "control characters"),
        ("x" * (MAX_REASON_CHARS + 1), "too long"),
        (42, "must be text"),
    ],
)
def test_override_reason_rules(reason, message: str) -> None:
    with pytest.raises(OverrideRequired, match=message):
        validate_reason(reason)


def test_override_reason_limits_are_inclusive_and_unicode_is_fine() -> None:
    assert validate_reason("x" * MAX_REASON_CHARS) == "x" * MAX_REASON_CHARS
    assert validate_reason("  Sujeto se niega — ojos cerrados  ") == "Sujeto se niega — ojos cerrados"


def test_manual_capture_checks_operator_and_report(clock: Clock) -> None:
    auto = AutoCapture(clock=clock)
    with pytest.raises(ValueError, match="operator"):
        auto.manual("f", Report(True), operator=" ")
    with pytest.raises(TypeError, match="passed"):
        auto.manual("f", object(), operator="op")
    with pytest.raises(TypeError, match="bool"):
        auto.manual("f", {"passed": "no"}, operator="op")


def test_manual_is_accepted_after_an_auto_capture_as_the_retake(clock: Clock) -> None:
    """'Accepted always': the officer can overrule auto-capture; the latest capture is the pose's photo."""
    auto = AutoCapture(stable_seconds=0.0, clock=clock)
    assert auto.feed("auto", True, 90).captured
    clock.now += 1
    retake = auto.manual("manual", Report(True), operator="op")
    assert auto.last_capture is retake and retake.at == clock.now


def test_feed_and_manual_from_two_threads_keep_the_state_consistent(clock: Clock) -> None:
    """The live loop feeds while the UI thread captures and re-arms; the lock keeps every step whole."""
    auto = AutoCapture(stable_seconds=0.0, clock=clock)
    errors: list[BaseException] = []

    def live() -> None:
        try:
            for i in range(2000):
                auto.feed(i, True, float(i))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    def ui() -> None:
        try:
            for _ in range(500):
                auto.manual("m", Report(True), operator="op")
                auto.rearm()
        except BaseException as exc:  # pragma: no cover
            errors.append(exc)

    threads = [threading.Thread(target=live), threading.Thread(target=ui)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
