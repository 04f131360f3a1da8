"""Raw value -> 0-100 score mappings, parameterised from `measures.toml` (never hard-coded per measure).

The mapping kinds are those OFIQ (ISO/IEC 29794-5) uses, so a county can copy its parameters across:

- ``sigmoid``: Q(x) = h * (a + s * 1 / (1 + exp((x0 - x) / w))), optionally on |x - centre| (head size)
- ``power``: 100 * x^p (illumination uniformity)
- ``reciprocal``: 1 / (x + eps) (over-exposure)
- ``cos2``: 100 * max(0, cos(x degrees))^2 (head pose)
- ``band``: 100 * sigmoid(x; lo, w) * (1 - sigmoid(x; hi, w)) (luminance mean)
- ``sin_variance``: 100 * sin(pi * k x / (k x + 1)) (luminance variance)
- ``linear``: scale * x + offset (dynamic range 12.5 * bits, single face 100 * (1 - f))

Every score is clipped to [0, 100] and rounded to an integer unless the table says `round = false`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any


class MappingError(ValueError):
    """A mapping table in the config is malformed; the message names the measure and the key."""


def _sigmoid(x: float, x0: float, w: float) -> float:
    z = (x0 - x) / w
    if z > 700:
        return 0.0
    return 1.0 / (1.0 + math.exp(z))


def score(raw: float, spec: Mapping[str, Any], name: str = "?") -> float:
    """Map a raw value to its 0-100 score per `spec` (one `[measure.score]` table)."""
    kind = spec.get("kind")
    try:
        if kind == "sigmoid":
            x = abs(raw - float(spec["centre"])) if "centre" in spec else raw
            h, a, s = float(spec.get("h", 100.0)), float(spec.get("a", 0.0)), float(spec.get("s", 1.0))
            value = h * (a + s * _sigmoid(x, float(spec["x0"]), float(spec["w"])))
        elif kind == "power":
            value = 100.0 * max(0.0, raw) ** float(spec["p"])
        elif kind == "reciprocal":
            value = 1.0 / (max(0.0, raw) + float(spec.get("eps", 0.01)))
        elif kind == "cos2":
            value = 100.0 * max(0.0, math.cos(math.radians(raw))) ** 2
        elif kind == "band":
            w = float(spec["w"])
            value = 100.0 * _sigmoid(raw, float(spec["lo"]), w) * (1.0 - _sigmoid(raw, float(spec["hi"]), w))
        elif kind == "sin_variance":
            k = float(spec.get("k", 60.0))
            value = 100.0 * math.sin(math.pi * k * raw / (k * raw + 1.0))
        elif kind == "linear":
            value = float(spec.get("scale", 1.0)) * raw + float(spec.get("offset", 0.0))
        else:
            raise MappingError(f"measure {name}: unknown score mapping kind {kind!r}")
    except KeyError as exc:
        raise MappingError(f"measure {name}: score mapping '{kind}' needs key {exc.args[0]!r}") from exc
    value = min(100.0, max(0.0, value))
    return float(round(value)) if spec.get("round", True) else value


def validate(spec: Mapping[str, Any], name: str) -> None:
    """Fail early (at config load) on a mapping that would fail on every image."""
    score(0.5, spec, name)
