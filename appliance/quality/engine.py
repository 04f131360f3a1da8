"""The quality engine the capture loop uses: `live(frame)` per preview frame, `full(image)` per capture.

`live` runs detection, mesh and iris, then only the profile's live gates: landmark geometry (faces present,
size, position, pose, eyes, mouth, expression) and the face's mean luminance, which needs one small
warp. Nothing else is computed, because the session is lazy. `full` computes every registered measure,
evaluates every gate and returns the report that goes into the record.

Guidance: each failing gate gives its code and sentence, in the profile's gate order (most important
first), one entry per code. Two opposite position failures at once (too near the left *and* the right
edge, or the top *and* the bottom) mean the subject is simply too close, so they become `too_close`.
No face at all gives the single `no_face` entry.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from appliance.quality.profile import Gate, Profile, load_profile
from appliance.quality.registry import MeasureConfig, all_measures, load_measure_config
from appliance.quality.session import QualitySession
from appliance.quality.types import GateResult, Guidance, MeasureResult
from appliance.vision.types import Face

if TYPE_CHECKING:
    from appliance.vision.pipeline import FaceAnalyzer

# Raw values in image pixels: in live mode they are scaled to the capture's resolution before gating.
PIXEL_MEASURES = frozenset({"inter_eye_distance"})
OPPOSITES = ({"off_left", "off_right"}, {"off_top", "off_bottom"})
NOT_CHECKED = "not_checked"


@dataclass
class LiveResult:
    """Verdict on one preview frame: live gates only."""

    faces: int
    passed: bool
    gates: list[GateResult]
    guidance: list[Guidance]
    measures: dict[str, MeasureResult]
    face: Face | None = None

    @property
    def primary(self) -> Guidance | None:
        """The one thing to tell the officer now (None when the frame passes)."""
        return self.guidance[0] if self.guidance else None

    def to_json(self) -> dict:
        return {
            "faces": self.faces,
            "passed": self.passed,
            "measures": {n: r.to_json() for n, r in self.measures.items()},
            "guidance": [g.to_json() for g in self.guidance],
        }


@dataclass
class Report:
    """Full quality report of one capture under one profile (what the record stores)."""

    profile: str
    sap: int | None
    faces: int
    passed: bool
    measures: dict[str, MeasureResult]
    gates: dict[str, GateResult]
    guidance: list[Guidance]
    face: Face | None = None
    image_size: tuple[int, int] = (0, 0)  # width, height
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        """`{profile, sap, passed, faces, measures: {name: {raw, score[, passed][, reason]}}, guidance}`.

        `passed` appears only on gating measures; a measure that failed to assess has raw and score null
        and a `reason`.
        """
        measures = {}
        for name, result in self.measures.items():
            entry = result.to_json()
            gate = self.gates.get(name)
            if gate is not None:
                entry["passed"] = gate.passed
            measures[name] = entry
        return {
            "profile": self.profile,
            "sap": self.sap,
            "passed": self.passed,
            "faces": self.faces,
            "measures": measures,
            "guidance": [g.to_json() for g in self.guidance],
        }


def evaluate_gate(gate: Gate, result: MeasureResult, scale: float = 1.0) -> GateResult:
    """Apply one gate to one measure result (`scale` multiplies pixel-unit raw values)."""
    value = result.raw if gate.on == "raw" else result.score
    if value is None:
        passed = gate.pass_if_not_assessed
        return GateResult(gate.measure, passed, None, gate.on, None if passed else NOT_CHECKED, gate.live)
    if gate.on == "raw" and gate.measure in PIXEL_MEASURES:
        value = value * scale
    code = gate.check(value)
    return GateResult(gate.measure, code is None, value, gate.on, code, gate.live)


def guidance_for(profile: Profile, gates: list[GateResult], faces: int) -> list[Guidance]:
    """One entry per failing code, in gate order; opposite edge failures merge into `too_close`."""
    if faces == 0:
        return [Guidance("no_face", profile.message("no_face"))]
    failing = [g for g in gates if not g.passed and g.code]
    codes = {g.code for g in failing}
    out: list[Guidance] = []
    seen: set[str] = set()
    for g in failing:
        code = g.code
        assert code is not None
        if any(code in pair and pair <= codes for pair in OPPOSITES):
            code = "too_close"
        if code in seen:
            continue
        seen.add(code)
        out.append(Guidance(code, profile.message(code), g.measure))
    return out


class QualityEngine:
    """Measures, gates and guidance for one profile, on top of a `FaceAnalyzer`.

    Not thread-safe (the analyzer's interpreters are not): one engine per capture thread.
    """

    def __init__(
        self,
        analyzer: FaceAnalyzer,
        profile: Profile | str,
        config: MeasureConfig | None = None,
        county_dir: Path | str | None = None,
    ) -> None:
        self.analyzer = analyzer
        self.profile = profile if isinstance(profile, Profile) else load_profile(profile, county_dir)
        self.config = config or load_measure_config()

    def session(self, image: np.ndarray, faces: list[Face] | None = None) -> QualitySession:
        return QualitySession(image, analyzer=self.analyzer, faces=faces, config=self.config)

    def live(self, frame: np.ndarray, capture_scale: float = 1.0) -> LiveResult:
        """Live gates on one preview frame.

        `capture_scale` is capture pixels per preview pixel (e.g. 4056 / 640 for a Pi HQ still behind a
        640x480 preview), so the inter-eye distance is judged at the resolution that will be saved.
        """
        session = self.session(frame)
        faces = len(session.faces)
        if faces == 0:
            return LiveResult(0, False, [], guidance_for(self.profile, [], 0), {})
        gates = self.profile.live_gates
        results = {g.measure: session.result(g.measure) for g in gates}
        evaluated = [evaluate_gate(g, results[g.measure], capture_scale) for g in gates]
        guidance = guidance_for(self.profile, evaluated, faces)
        return LiveResult(faces, all(g.passed for g in evaluated), evaluated, guidance, results, session.faces[0])

    def full(self, image: np.ndarray, faces: list[Face] | None = None) -> Report:
        """Every measure, every gate and the guidance for a captured image (faces: reuse the live ones)."""
        session = self.session(image, faces)
        return self.report(session)

    def report(self, session: QualitySession) -> Report:
        n_faces = len(session.faces)
        results = {name: session.result(name) for name in all_measures()}
        gates = {g.measure: evaluate_gate(g, results[g.measure]) for g in self.profile.gates}
        guidance = guidance_for(self.profile, list(gates.values()), n_faces)
        passed = n_faces > 0 and all(g.passed for g in gates.values())
        return Report(
            profile=self.profile.name,
            sap=self.profile.sap,
            faces=n_faces,
            passed=passed,
            measures=results,
            gates=gates,
            guidance=guidance,
            face=session.faces[0] if n_faces else None,
            image_size=(session.width, session.height),
        )
