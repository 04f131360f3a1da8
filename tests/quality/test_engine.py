"""QualityEngine: the live path computes only live gates, the full path everything; reports serialise."""

from __future__ import annotations

import json

import pytest

from appliance.quality import QualityEngine, QualitySession, load_profile
from appliance.quality.engine import evaluate_gate, guidance_for
from appliance.quality.registry import all_measures
from appliance.quality.types import GateResult, MeasureResult
from tests.quality import synth


def test_live_computes_only_live_gates(load, engine: QualityEngine, monkeypatch) -> None:
    computed: list[str] = []
    original = QualitySession.result

    def spy(self, name):
        computed.append(name)
        return original(self, name)

    monkeypatch.setattr(QualitySession, "result", spy)
    result = engine.live(load("meds-aa-S029-01.jpg"))
    live_names = {g.measure for g in engine.profile.live_gates}
    assert set(computed) == live_names
    assert set(result.measures) == live_names
    assert all(all_measures()[n].live for n in computed)
    assert {g.measure for g in result.gates} == live_names


def test_live_and_full_agree_on_live_gates(load, engine: QualityEngine) -> None:
    image = load("img33.jpg")
    live, full = engine.live(image), engine.full(image)
    for gate in live.gates:
        assert full.gates[gate.measure].passed == gate.passed
        assert full.measures[gate.measure].raw == pytest.approx(live.measures[gate.measure].raw)


def test_capture_scale_judges_resolution_of_the_capture(load, face_of, engine: QualityEngine) -> None:
    image = load("img33.jpg")
    small = synth.downscale(image, face_of(image), 60)  # a preview frame of a high-resolution capture
    assert "too_far" in [g.code for g in engine.live(small).guidance]
    assert "too_far" not in [g.code for g in engine.live(small, capture_scale=4.0).guidance]


def test_report_json_shape(load, engine: QualityEngine) -> None:
    report = engine.full(load("img2.jpg"))
    out = json.loads(json.dumps(report.to_json()))
    assert out["profile"] == "nist-sap30" and out["sap"] == 30 and out["faces"] == 1
    assert list(out["measures"]) == list(all_measures())
    gated = {g.measure for g in engine.profile.gates}
    for name, entry in out["measures"].items():
        assert set(entry) >= {"raw", "score"}
        assert ("passed" in entry) == (name in gated)
    assert out["passed"] == all(out["measures"][n]["passed"] for n in gated)
    assert all(set(g) == {"code", "message"} for g in out["guidance"])
    assert out["passed"] == (out["guidance"] == [])


def test_guidance_merges_opposite_edges_and_dedupes() -> None:
    profile = load_profile("nist-sap30")
    gates = [
        GateResult("leftward_crop", False, 1.0, "raw", "off_left"),
        GateResult("rightward_crop", False, 1.0, "raw", "off_right"),
        GateResult("luminance_mean", False, 0.01, "raw", "too_dark"),
        GateResult("under_exposure_prevention", False, 0.9, "raw", "too_dark"),
        GateResult("head_pose_yaw", True, 1.0, "raw", None),
    ]
    assert [g.code for g in guidance_for(profile, gates, 1)] == ["too_close", "too_dark"]
    assert [g.code for g in guidance_for(profile, gates, 0)] == ["no_face"]


def test_gate_on_failed_measure() -> None:
    profile = load_profile("nist-sap30")
    failed = MeasureResult.failed("sharpness", "face region too small")
    r = evaluate_gate(profile.gate("sharpness"), failed)
    assert not r.passed and r.code == "not_checked"
    r = evaluate_gate(profile.gate("no_head_coverings"), MeasureResult.failed("no_head_coverings", "off image"))
    assert r.passed


def test_engine_with_county_profile(tmp_path, analyzer, load) -> None:
    (tmp_path / "nist-sap30.toml").write_text("[gates.head_pose_pitch]\nmin = -30.0\nmax = 30.0\n")
    strict = QualityEngine(analyzer, "nist-sap30")
    relaxed = QualityEngine(analyzer, "nist-sap30", county_dir=tmp_path)
    image = load("img2.jpg")  # chin down about 12 degrees
    assert "chin_up" in [g.code for g in strict.live(image).guidance]
    assert "chin_up" not in [g.code for g in relaxed.live(image).guidance]
