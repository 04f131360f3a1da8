"""Auto-capture: take the best frame once every live gate has passed for a short, unbroken stable window.

An officer at a busy desk should not have to time the shutter; an arrestee who moves must not end up in a
blurred or turned photo. So the live analysis feeds every preview frame's verdict here, and a capture
happens only after the gates have held continuously for `stable_seconds`: a single lucky frame in a
stream of failures is not a pose, it is noise. The frame kept is the best-scoring one of that window.

Pure logic: no camera, no threads of its own, and time comes from an injectable clock, so it is tested
exactly. Memory is bounded by construction: the window is "every frame since the streak began", so only
the best frame so far needs keeping, never the window's frames.

The manual path is always open (the officer decides), but a manual capture that fails a gate needs an
override reason, recorded with the operator for the audit log.
"""

from __future__ import annotations

import math
import threading
import time
import unicodedata
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

Clock = Callable[[], float]

MAX_REASON_CHARS = 200


class OverrideRequired(ValueError):
    """A manual capture failed a quality gate and has no (valid) override reason; the message says what
    is missing, in words the UI can show the officer."""


class Action(str, Enum):
    """What the caller should do with the frame it just fed."""

    WAIT = "wait"  # keep feeding frames; `progress` says how far the stable window has got
    CAPTURE = "capture"  # take `Decision.capture` as this pose's photo
    DONE = "done"  # already captured; ignoring frames until `rearm()` for the next pose


@dataclass(frozen=True)
class ChosenFrame:
    """A frame chosen as a pose's photo, automatically or by hand."""

    frame: Any
    score: float | None
    mode: str  # "auto" or "manual"
    at: float  # clock time of the decision
    passed: bool  # all gates passed for this frame
    operator: str | None = None  # manual captures: who pressed the button
    override_reason: str | None = None  # manual captures that failed a gate: why the officer took it anyway
    report: Any = None  # manual captures: the quality report the officer saw
    guidance: tuple[str, ...] = ()


@dataclass(frozen=True)
class Decision:
    """The outcome of feeding one frame."""

    action: Action
    progress: float = 0.0  # 0..1: share of the stable window held so far (for a progress ring in the UI)
    guidance: tuple[str, ...] = ()  # the fed frame's guidance, passed through for the UI
    capture: ChosenFrame | None = None  # set when action is CAPTURE

    @property
    def captured(self) -> bool:
        return self.action is Action.CAPTURE


@dataclass
class _Window:
    """The current unbroken run of passing frames: when it began, when its last frame came, its best."""

    started: float
    last: float
    best_frame: Any
    best_score: float
    best_guidance: tuple[str, ...] = field(default_factory=tuple)
    frames: int = 1


def validate_reason(reason: object, max_chars: int = MAX_REASON_CHARS) -> str:
    """An override reason fit for an append-only audit log: a human sentence, trimmed, bounded, and
    free of control and invisible formatting characters (newlines or bidi overrides could forge or hide
    log lines when the audit is printed)."""
    if reason is None:
        raise OverrideRequired("this capture fails a quality check: enter a reason to take it anyway")
    if not isinstance(reason, str):
        raise OverrideRequired(f"the override reason must be text, got {type(reason).__name__}")
    text = unicodedata.normalize("NFC", reason).strip()
    if not text:
        raise OverrideRequired("this capture fails a quality check: enter a reason to take it anyway")
    bad = [ch for ch in text if unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn")]
    if bad:
        raise OverrideRequired(
            f"the override reason contains control characters ({', '.join(f'U+{ord(ch):04X}' for ch in bad[:3])});"
            " use plain text on one line"
        )
    if len(text) > max_chars:
        raise OverrideRequired(f"the override reason is too long ({len(text)} characters, at most {max_chars})")
    return text


def _report_passed(report: object) -> bool:
    """Whether a quality report passed its gates: an object with `.passed`, or a mapping with "passed"."""
    if isinstance(report, Mapping):
        if "passed" not in report:
            raise TypeError("the quality report has no 'passed' entry")
        value = report["passed"]
    elif hasattr(report, "passed"):
        value = report.passed
    else:
        raise TypeError(f"the quality report ({type(report).__name__}) has no 'passed' attribute")
    if not isinstance(value, bool):
        raise TypeError(f"the quality report's 'passed' must be a bool, got {value!r}")
    return value


class AutoCapture:
    """The auto-capture state machine for one pose at a time.

    stable_seconds: how long every gate must hold, unbroken, before the capture (0 = first passing frame).
    max_gap: longest time between two fed frames that still counts as unbroken. When analysis stalls or
        the camera hiccups, nobody saw what happened in between, so the window starts again rather than
        capturing on two observations far apart. None disables the check.
    clock: monotonic seconds; injectable for tests.

    Thread-safe: the live loop feeds frames while the UI thread may capture by hand or re-arm.
    """

    def __init__(
        self,
        stable_seconds: float = 0.5,
        *,
        max_gap: float | None = 0.3,
        clock: Clock = time.monotonic,
        max_reason_chars: int = MAX_REASON_CHARS,
    ) -> None:
        if not (isinstance(stable_seconds, (int, float)) and math.isfinite(stable_seconds) and stable_seconds >= 0):
            raise ValueError(f"stable_seconds must be a number >= 0, got {stable_seconds!r}")
        if max_gap is not None and not (isinstance(max_gap, (int, float)) and max_gap > 0):
            raise ValueError(f"max_gap must be a number > 0 or None, got {max_gap!r}")
        if not (isinstance(max_reason_chars, int) and max_reason_chars > 0):
            raise ValueError(f"max_reason_chars must be a positive whole number, got {max_reason_chars!r}")
        self.stable_seconds = float(stable_seconds)
        self.max_gap = None if max_gap is None else float(max_gap)
        self.max_reason_chars = max_reason_chars
        self._clock = clock
        self._lock = threading.Lock()
        self._window: _Window | None = None
        self._last_capture: ChosenFrame | None = None

    @property
    def armed(self) -> bool:
        """True while looking for a capture; False after one, until `rearm()`."""
        return self._last_capture is None

    @property
    def last_capture(self) -> ChosenFrame | None:
        return self._last_capture

    def feed(self, frame: Any, passed: bool, score: float, guidance: Sequence[str] = ()) -> Decision:
        """Give the verdict of the live gates on one frame; returns what to do now.

        A frame whose score is not a finite number counts as failing: a measure that could not be
        assessed must not be able to win the window.
        """
        guidance = (guidance,) if isinstance(guidance, str) else tuple(guidance)
        with self._lock:
            now = self._clock()
            if self._last_capture is not None:
                return Decision(Action.DONE, 1.0, guidance)
            try:
                value = float(score)
            except (TypeError, ValueError):
                value = math.nan
            if not bool(passed) or not math.isfinite(value):
                self._window = None
                return Decision(Action.WAIT, 0.0, guidance)
            window = self._window
            if window is None or self._broken(window, now):
                window = self._window = _Window(now, now, frame, value, guidance)
            else:
                window.last = now
                window.frames += 1
                if value >= window.best_score:  # on a tie the newer frame: closer to the scene as it is now
                    window.best_frame, window.best_score, window.best_guidance = frame, value, guidance
            elapsed = now - window.started
            if elapsed < self.stable_seconds:
                return Decision(Action.WAIT, elapsed / self.stable_seconds, guidance)
            capture = ChosenFrame(window.best_frame, window.best_score, "auto", now, True,
                                  guidance=window.best_guidance)
            self._last_capture = capture
            self._window = None
            return Decision(Action.CAPTURE, 1.0, guidance, capture)

    def _broken(self, window: _Window, now: float) -> bool:
        gap = now - window.last
        return gap < 0 or (self.max_gap is not None and gap > self.max_gap)

    def manual(
        self,
        frame: Any,
        report: Any,
        *,
        operator: str,
        override_reason: str | None = None,
        score: float | None = None,
    ) -> ChosenFrame:
        """The officer pressed capture. Always accepted when the frame passes its gates; a frame that
        fails one needs `override_reason` (raises OverrideRequired otherwise). A reason given for a passing
        frame is validated and kept too. Either way this pose is then done until `rearm()`, so auto-capture
        cannot take a second photo behind the officer's back. It is accepted after an auto-capture too:
        the officer's retake replaces it (the latest capture is the pose's photo).

        report: the frame's quality report: an object with a bool `.passed`, or a mapping with "passed".
        """
        if not isinstance(operator, str) or not operator.strip():
            raise ValueError("a manual capture needs the operator's id")
        passed = _report_passed(report)
        reason = None
        if override_reason is not None or not passed:
            reason = validate_reason(override_reason, self.max_reason_chars)
        with self._lock:
            capture = ChosenFrame(
                frame,
                score,
                "manual",
                self._clock(),
                passed,
                operator=operator.strip(),
                override_reason=reason,
                report=report,
            )
            self._last_capture = capture
            self._window = None
            return capture

    def rearm(self) -> None:
        """Start looking for the next capture (the next pose, or a retake) with an empty window."""
        with self._lock:
            self._last_capture = None
            self._window = None

    def reset(self) -> None:
        """Drop the current window without changing armed state (e.g. the officer switched pose)."""
        with self._lock:
            self._window = None
