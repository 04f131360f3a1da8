"""The measure registry (OFIQ's measure-factory pattern): every measure registers itself by its JSON name.

A measure is a function ``fn(session, params) -> raw`` (or ``(raw, detail)``) decorated with
`@measure(name, qaa_id, live=...)`. It reads everything it needs from the per-image `QualitySession`
(which computes detection, landmarks, masks once) and its own `params` table from `measures.toml`. It
returns the raw value in natural units; the engine maps raw to score with the configured mapping, so
measures never contain score arithmetic. A measure that cannot assess raises `CannotAssess(reason)`.

`live=True` marks measures that need only detection, mesh and iris (plus a few arithmetic operations):
only those may be live gates in a profile, which is what keeps the preview path at frame rate.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.quality import mapping

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

if TYPE_CHECKING:
    from appliance.quality.session import QualitySession

MEASURES_FILE = Path(__file__).with_name("measures.toml")

MeasureFn = Callable[["QualitySession", Mapping[str, Any]], "float | tuple[float, dict[str, float]]"]


@dataclass(frozen=True)
class MeasureSpec:
    name: str
    qaa_id: int | None  # ISO/IEC 29794-5 quality measure id (0x41-0x5c); None for non-ISO measures
    fn: MeasureFn
    live: bool
    summary: str


REGISTRY: dict[str, MeasureSpec] = {}


def measure(name: str, qaa_id: int | None, live: bool = False) -> Callable[[MeasureFn], MeasureFn]:
    """Register `fn` as measure `name`. The first docstring line becomes the measure's summary."""

    def register(fn: MeasureFn) -> MeasureFn:
        if name in REGISTRY:
            raise ValueError(f"measure {name!r} registered twice")
        summary = (fn.__doc__ or "").strip().splitlines()[0] if fn.__doc__ else name
        REGISTRY[name] = MeasureSpec(name=name, qaa_id=qaa_id, fn=fn, live=live, summary=summary)
        return fn

    return register


def all_measures() -> dict[str, MeasureSpec]:
    """Every registered measure, in the order of the design's table (import order of the modules)."""
    import appliance.quality.measures  # noqa: F401 - registers the measures

    if list(REGISTRY) != sorted(REGISTRY, key=_order):
        ordered = sorted(REGISTRY.items(), key=lambda item: _order(item[0]))
        REGISTRY.clear()
        REGISTRY.update(ordered)
    return REGISTRY


def _order(name: str) -> tuple[int, str]:
    qaa = REGISTRY[name].qaa_id
    return (qaa if qaa is not None else 0x100, name)


class MeasuresConfigError(ValueError):
    """`measures.toml` is malformed; the message says where."""


@dataclass(frozen=True)
class MeasureConfig:
    """Per-measure score mapping and method parameters, read from `measures.toml`."""

    score: dict[str, dict[str, Any]] = field(default_factory=dict)
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    source: str = ""

    def params_for(self, name: str) -> dict[str, Any]:
        return self.params.get(name, {})


def load_measure_config(path: Path | None = None) -> MeasureConfig:
    """Read and check the measure config (default: the shipped `measures.toml`)."""
    return _load(path or MEASURES_FILE)


@lru_cache(maxsize=8)
def _load(path: Path) -> MeasureConfig:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise MeasuresConfigError(f"measure config {path} cannot be read: {exc}") from exc
    specs = all_measures()
    unknown = sorted(set(data) - set(specs))
    if unknown:
        raise MeasuresConfigError(f"{path}: unknown measure(s): {', '.join(unknown)}")
    missing = sorted(set(specs) - set(data))
    if missing:
        raise MeasuresConfigError(f"{path}: no configuration for measure(s): {', '.join(missing)}")
    scores, params = {}, {}
    for name, table in data.items():
        if "score" not in table:
            raise MeasuresConfigError(f"{path}: [{name}] has no [{name}.score] mapping")
        try:
            mapping.validate(table["score"], name)
        except mapping.MappingError as exc:
            raise MeasuresConfigError(f"{path}: {exc}") from exc
        scores[name] = dict(table["score"])
        params[name] = dict(table.get("params", {}))
    return MeasureConfig(score=scores, params=params, source=str(path))
