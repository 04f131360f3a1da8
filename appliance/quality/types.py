"""Result records of the quality engine. Every record has `to_json()` giving plain JSON-ready values."""

from __future__ import annotations

import math
from dataclasses import dataclass, field


class CannotAssess(Exception):  # noqa: N818 - reads as a verdict, like OFIQ's FailureToAssess
    """Raised by a measure that cannot give a value on this image; the message is the reason.

    Measures raise this for expected situations (no face, no background visible, a greyscale image for a
    colour measure). Anything else a measure raises is caught by the engine and reported the same way,
    so one broken measure never takes the whole report down.
    """


def _num(value: float | None, digits: int = 4) -> float | None:
    if value is None or not math.isfinite(value):
        return None
    return round(float(value), digits)


@dataclass
class MeasureResult:
    """One measure on one image: raw value in natural units and 0-100 score, or why neither exists."""

    name: str
    raw: float | None
    score: float | None
    reason: str | None = None  # set exactly when the measure failed to assess
    detail: dict[str, float] = field(default_factory=dict)  # extra raw numbers (e.g. a*, b*)

    @property
    def assessed(self) -> bool:
        return self.reason is None

    @classmethod
    def failed(cls, name: str, reason: str) -> MeasureResult:
        return cls(name=name, raw=None, score=None, reason=reason)

    def to_json(self) -> dict:
        out: dict = {"raw": _num(self.raw), "score": None if self.score is None else _num(self.score, 1)}
        if self.reason is not None:
            out["reason"] = self.reason
        if self.detail:
            out["detail"] = {k: _num(v) for k, v in self.detail.items()}
        return out


@dataclass
class Guidance:
    """One thing for the officer to fix: a short machine code for the UI and one plain sentence."""

    code: str
    message: str
    measure: str | None = None  # the gate that produced it (None for no_face)

    def to_json(self) -> dict:
        return {"code": self.code, "message": self.message}


@dataclass
class GateResult:
    """A profile gate evaluated on a measure result."""

    measure: str
    passed: bool
    value: float | None  # the raw value or score the gate compared, per the gate's `on`
    on: str  # "raw" or "score"
    code: str | None = None  # guidance code when failed
    live: bool = False

    def to_json(self) -> dict:
        return {"measure": self.measure, "passed": self.passed, "on": self.on, "value": _num(self.value),
                "code": self.code}
