"""Profiles: which measures gate a capture, their thresholds, guidance codes and the output geometry.

Profiles are TOML files (syntax in `profiles/nist-sap30.toml`): pass/fail is policy, and counties change
policy without a software release. Shipped profiles live in `appliance/quality/profiles/`; a county
folder (`--profile-dir`, or the station config) may hold files that

- have a shipped profile's name: merged over it, table by table and key by key (a gate table with
  `enabled = false` removes that gate; a [messages] table rewords guidance);
- have a new name: a profile of their own, usually starting from `extends = "<shipped name>"`.

Everything is validated at load (unknown measure, a live gate on a heavy measure, an unknown guidance
code, a gate without thresholds) so a typo fails at start-up, not at the booking desk.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from appliance.quality.registry import all_measures

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

PROFILES_DIR = Path(__file__).with_name("profiles")
GUIDANCE_FILE = Path(__file__).with_name("guidance.toml")
GATE_KEYS = {"on", "min", "max", "live", "code_below", "code_above", "enabled", "if_not_assessed"}
OUTPUT_KEYS = {"width", "height", "eye_line_from_bottom", "head_width_ratio", "head_width_in_ied",
               "head_width_tolerance", "min_output_ied", "eye_line_tolerance", "centre_tolerance", "max_upscale",
               "jpeg_quality"}
INT_KEYS = ("width", "height", "jpeg_quality")


class QualityProfileError(ValueError):
    """A profile cannot be found or is invalid; the message names the file and the problem."""


@dataclass(frozen=True)
class Gate:
    """Pass/fail rule on one measure."""

    measure: str
    on: str  # "raw" or "score"
    min: float | None
    max: float | None
    live: bool
    code_below: str | None
    code_above: str | None
    pass_if_not_assessed: bool = False

    def check(self, value: float) -> str | None:
        """None when `value` passes, else the guidance code for the direction it failed in."""
        if self.min is not None and value < self.min:
            return self.code_below or self.code_above
        if self.max is not None and value > self.max:
            return self.code_above or self.code_below
        return None


@dataclass(frozen=True)
class Geometry:
    """The standardized output (see `appliance.quality.standardize`)."""

    width: int
    height: int
    eye_line_from_bottom: float
    head_width_ratio: float
    head_width_in_ied: float = 2.5
    eye_line_tolerance: float = 0.05
    centre_tolerance: float = 0.05
    head_width_tolerance: float = 0.10
    min_output_ied: float = 90.0
    max_upscale: float = 1.05
    jpeg_quality: int = 95

    @property
    def output_ied(self) -> float:
        """Inter-eye distance the output composition implies, in output pixels."""
        return self.head_width_ratio * self.width / self.head_width_in_ied


@dataclass(frozen=True)
class Profile:
    name: str
    title: str
    sap: int | None
    gates: tuple[Gate, ...]
    geometry: Geometry
    messages: dict[str, str] = field(default_factory=dict)
    sources: tuple[str, ...] = ()

    @property
    def live_gates(self) -> tuple[Gate, ...]:
        return tuple(g for g in self.gates if g.live)

    def gate(self, measure: str) -> Gate | None:
        return next((g for g in self.gates if g.measure == measure), None)

    def message(self, code: str) -> str:
        return self.messages.get(code, code)


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise QualityProfileError(f"profile file {path} cannot be read: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise QualityProfileError(f"profile file {path} is not valid TOML: {exc}") from exc


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def available_profiles(county_dir: Path | str | None = None) -> list[str]:
    names = {p.stem for p in PROFILES_DIR.glob("*.toml")}
    if county_dir is not None and Path(county_dir).is_dir():
        names |= {p.stem for p in Path(county_dir).glob("*.toml")}
    return sorted(names)


def _raw_profile(name: str, county_dir: Path | None, seen: tuple[str, ...]) -> tuple[dict[str, Any], list[str]]:
    if name in seen:
        raise QualityProfileError(f"profile {name!r} extends itself (chain: {' -> '.join((*seen, name))})")
    shipped = PROFILES_DIR / f"{name}.toml"
    county = county_dir / f"{name}.toml" if county_dir is not None else None
    layers: list[tuple[Path, dict[str, Any]]] = []
    if shipped.is_file():
        layers.append((shipped, _read(shipped)))
    if county is not None and county.is_file():
        layers.append((county, _read(county)))
    if not layers:
        raise QualityProfileError(f"unknown profile {name!r} (available: {', '.join(available_profiles(county_dir))})")
    data: dict[str, Any] = {}
    sources: list[str] = []
    for path, layer in layers:
        parent = layer.get("profile", {}).get("extends")
        if parent and not data:
            data, sources = _raw_profile(str(parent), county_dir, (*seen, name))
        data = _merge(data, layer)
        sources.append(str(path))
    return data, sources


def _guidance_catalog() -> dict[str, str]:
    return dict(_read(GUIDANCE_FILE).get("messages", {}))


def load_profile(name: str, county_dir: Path | str | None = None) -> Profile:
    """The named profile, with the county folder's overrides applied and everything validated."""
    county = Path(county_dir) if county_dir is not None else None
    if county is not None and not county.is_dir():
        raise QualityProfileError(f"county profile folder not found: {county}")
    data, sources = _raw_profile(name, county, ())
    where = " + ".join(sources)
    head = data.get("profile", {})
    measures = all_measures()
    messages = _guidance_catalog()
    messages.update({str(k): str(v) for k, v in data.get("messages", {}).items()})
    gates: list[Gate] = []
    for measure, table in data.get("gates", {}).items():
        gate = _gate(where, measure, table, measures, messages)
        if gate is not None:  # None: the county switched the gate off
            gates.append(gate)
    geometry = _geometry(where, data.get("output", {}))
    sap = head.get("sap")
    return Profile(name=name, title=str(head.get("title", name)), sap=None if sap is None else int(sap),
                   gates=tuple(gates), geometry=geometry, messages=messages, sources=tuple(sources))


def _gate(where: str, measure: str, table: Any, measures: dict[str, Any], messages: dict[str, str]) -> Gate | None:
    """The ``[gates.<measure>]`` table as a `Gate`, None when it is disabled (``enabled = false``)."""
    if not isinstance(table, dict):
        raise QualityProfileError(f"{where}: [gates.{measure}] must be a table")
    unknown = set(table) - GATE_KEYS
    if unknown:
        raise QualityProfileError(f"{where}: [gates.{measure}] has unknown key(s): {', '.join(sorted(unknown))}")
    if not table.get("enabled", True):
        return None
    spec = measures.get(measure)
    if spec is None:
        raise QualityProfileError(f"{where}: [gates.{measure}]: no such measure (known: {', '.join(measures)})")
    on = table.get("on", "score")
    if on not in ("raw", "score"):
        raise QualityProfileError(f"{where}: [gates.{measure}] on = {on!r}: must be 'raw' or 'score'")
    lo, hi = table.get("min"), table.get("max")
    if lo is None and hi is None:
        raise QualityProfileError(f"{where}: [gates.{measure}] needs min and/or max")
    live = bool(table.get("live", False))
    if live and not spec.live:
        raise QualityProfileError(f"{where}: [gates.{measure}] cannot be live: the measure is too expensive per frame")
    below, above = table.get("code_below"), table.get("code_above")
    if not below and not above:
        raise QualityProfileError(f"{where}: [gates.{measure}] needs code_below and/or code_above")
    for code in (below, above):
        if code and code not in messages:
            raise QualityProfileError(f"{where}: [gates.{measure}] guidance code {code!r} has no message")
    not_assessed = table.get("if_not_assessed", "fail")
    if not_assessed not in ("pass", "fail"):
        raise QualityProfileError(f"{where}: [gates.{measure}] if_not_assessed must be 'pass' or 'fail'")
    return Gate(measure=measure, on=on, min=None if lo is None else float(lo),
                max=None if hi is None else float(hi), live=live, code_below=below, code_above=above,
                pass_if_not_assessed=not_assessed == "pass")


def _geometry(where: str, out: dict[str, Any]) -> Geometry:
    """The ``[output]`` table as a usable `Geometry`."""
    unknown = set(out) - OUTPUT_KEYS
    if unknown:
        raise QualityProfileError(f"{where}: [output] has unknown key(s): {', '.join(sorted(unknown))}")
    try:
        geometry = Geometry(**{k: (int(v) if k in INT_KEYS else float(v)) for k, v in out.items()})
    except (TypeError, ValueError) as exc:
        raise QualityProfileError(f"{where}: [output] is incomplete or has a non-number: {exc}") from exc
    if geometry.width < 16 or geometry.height < 16 or not 0 < geometry.eye_line_from_bottom < 1:
        raise QualityProfileError(f"{where}: [output] geometry is not usable: {geometry}")
    if not 1 <= geometry.jpeg_quality <= 100:
        raise QualityProfileError(f"{where}: [output] jpeg_quality must be 1-100")
    return geometry
