"""Registry, score mappings, measure config and profiles (shipped, county overrides, validation)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.quality import QualityProfileError, available_profiles, load_profile, mapping
from appliance.quality.registry import all_measures, load_measure_config

JSON_NAMES = [
    "unified_quality_score", "background_uniformity", "illumination_uniformity", "luminance_mean",
    "luminance_variance", "under_exposure_prevention", "over_exposure_prevention", "dynamic_range", "sharpness",
    "compression_artifacts", "natural_colour", "single_face_present", "eyes_open", "mouth_closed", "eyes_visible",
    "mouth_occlusion_prevention", "face_occlusion_prevention", "inter_eye_distance", "head_size", "leftward_crop",
    "rightward_crop", "margin_above", "margin_below", "head_pose_yaw", "head_pose_pitch", "head_pose_roll",
    "expression_neutrality", "no_head_coverings", "glasses_glare",
]


def test_registry_has_every_measure_of_the_design_in_id_order() -> None:
    specs = all_measures()
    assert list(specs) == JSON_NAMES
    ids = [s.qaa_id for s in specs.values() if s.qaa_id is not None]
    assert ids == list(range(0x41, 0x5D))
    assert specs["glasses_glare"].qaa_id is None


def test_live_measures_need_only_landmarks() -> None:
    live = {n for n, s in all_measures().items() if s.live}
    assert {"head_pose_yaw", "inter_eye_distance", "eyes_open", "single_face_present"} <= live
    assert not live & {"sharpness", "background_uniformity", "compression_artifacts", "unified_quality_score",
                       "face_occlusion_prevention", "no_head_coverings"}


@pytest.mark.parametrize("spec,raw,want", [
    ({"kind": "cos2"}, 5.0, 99), ({"kind": "cos2"}, 8.0, 98), ({"kind": "cos2"}, 30.0, 75),
    ({"kind": "sigmoid", "x0": 70, "w": 20}, 90.0, 73), ({"kind": "sigmoid", "x0": 70, "w": 20}, 120.0, 92),
    ({"kind": "sigmoid", "h": 200, "a": 1, "s": -1, "centre": 0.45, "x0": 0, "w": 0.05}, 0.5, 54),
    ({"kind": "power", "p": 0.3}, 0.5, 81), ({"kind": "reciprocal", "eps": 0.01}, 0.0, 100),
    ({"kind": "linear", "scale": 12.5}, 9.0, 100), ({"kind": "linear", "scale": -100, "offset": 100}, 0.25, 75),
])
def test_score_mappings_match_ofiq_figures(spec: dict, raw: float, want: float) -> None:
    assert mapping.score(raw, spec) == want


def test_unknown_mapping_kind_is_rejected() -> None:
    with pytest.raises(mapping.MappingError, match="unknown score mapping"):
        mapping.score(1.0, {"kind": "magic"}, "x")


def test_measure_config_covers_every_measure() -> None:
    config = load_measure_config()
    assert set(config.score) == set(JSON_NAMES)


def test_shipped_profiles() -> None:
    assert {"nist-sap30", "nist-sap40", "icao"} <= set(available_profiles())
    sap30, sap40, icao = (load_profile(n) for n in ("nist-sap30", "nist-sap40", "icao"))
    assert (sap30.sap, sap40.sap) == (30, 40)
    assert (sap30.geometry.width, sap30.geometry.height) == (480, 600)
    assert (sap40.geometry.width, sap40.geometry.height) == (768, 1024)
    assert sap30.geometry.width * 5 == sap30.geometry.height * 4
    assert sap40.geometry.width * 4 == sap40.geometry.height * 3
    assert sap30.geometry.output_ied >= 90
    yaw = sap30.gate("head_pose_yaw")
    assert (yaw.on, yaw.min, yaw.max, yaw.live) == ("raw", -5.0, 5.0, True)
    assert (sap30.gate("head_pose_roll").min, sap30.gate("head_pose_roll").max) == (-8.0, 8.0)
    assert sap30.gate("inter_eye_distance").min >= 90
    assert not sap30.gate("sharpness").live
    # SAP 40 inherits every SAP 30 gate and needs more pixels between the eyes.
    assert [g.measure for g in sap40.gates] == [g.measure for g in sap30.gates]
    assert sap40.gate("inter_eye_distance").min > sap30.gate("inter_eye_distance").min
    assert icao.gate("glasses_glare").max < sap30.gate("glasses_glare").max


def test_every_failing_gate_has_one_code_and_message() -> None:
    for name in ("nist-sap30", "nist-sap40", "icao"):
        p = load_profile(name)
        for g in p.gates:
            for code in (g.code_below, g.code_above):
                if code:
                    message = p.message(code)
                    assert message != code and message.endswith(".") and len(message) < 120


def test_county_override_merges_over_the_shipped_profile(tmp_path: Path) -> None:
    (tmp_path / "nist-sap30.toml").write_text(
        '[gates.head_pose_yaw]\nmin = -3.0\nmax = 3.0\n'
        '[gates.glasses_glare]\nenabled = false\n'
        '[messages]\nturn_left = "Turn left a bit, please."\n'
    )
    p = load_profile("nist-sap30", tmp_path)
    yaw = p.gate("head_pose_yaw")
    assert (yaw.min, yaw.max, yaw.live, yaw.code_above) == (-3.0, 3.0, True, "turn_left")
    assert p.gate("glasses_glare") is None
    assert p.message("turn_left") == "Turn left a bit, please."
    assert p.gate("sharpness") is not None and p.geometry.width == 480
    assert len(p.sources) == 2


def test_county_profile_extends_a_shipped_one(tmp_path: Path) -> None:
    (tmp_path / "county-strict.toml").write_text(
        '[profile]\nextends = "nist-sap40"\ntitle = "County strict"\n[gates.sharpness]\nmin = 70\n'
    )
    assert "county-strict" in available_profiles(tmp_path)
    p = load_profile("county-strict", tmp_path)
    assert p.name == "county-strict" and p.sap == 40 and p.title == "County strict"
    assert p.gate("sharpness").min == 70 and p.geometry.width == 768


@pytest.mark.parametrize("text,match", [
    ('[gates.no_such_measure]\nmin = 1\ncode_below = "blurry"\n', "no such measure"),
    ('[gates.sharpness]\nlive = true\n', "cannot be live"),
    ('[gates.sharpness]\ncode_below = "nonsense_code"\n', "has no message"),
    ('[gates.sharpness]\nminn = 3\n', "unknown key"),
    ('[output]\nwidth = "wide"\n', "non-number"),
    ('[profile\n', "not valid TOML"),
])
def test_invalid_county_files_are_rejected(tmp_path: Path, text: str, match: str) -> None:
    (tmp_path / "nist-sap30.toml").write_text(text)
    with pytest.raises(QualityProfileError, match=match):
        load_profile("nist-sap30", tmp_path)


def test_unknown_profile_and_missing_folder(tmp_path: Path) -> None:
    with pytest.raises(QualityProfileError, match="unknown profile 'sap99'.*nist-sap30"):
        load_profile("sap99")
    with pytest.raises(QualityProfileError, match="folder not found"):
        load_profile("nist-sap30", tmp_path / "missing")


def test_extends_cycle_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text('[profile]\nextends = "b"\n')
    (tmp_path / "b.toml").write_text('[profile]\nextends = "a"\n')
    with pytest.raises(QualityProfileError, match="extends itself"):
        load_profile("a", tmp_path)
