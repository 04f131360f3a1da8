"""Conformance test in the manner of OFIQ's `test_conformance_table`: recompute every measure on every
golden image and compare with `golden.csv` (regenerate with `python -m tests.quality.make_golden`).

Tolerances are per measure, in the raw value's own unit. They allow for floating-point differences
between machines (XNNPACK kernels differ by CPU, so landmarks move by hundredths of a pixel), not for
changes of method: those need a regenerated golden file and a reason.
"""

from __future__ import annotations

import csv
from pathlib import Path

from appliance.quality.registry import all_measures
from tests.quality.make_golden import GOLDEN, compute, golden_images

# Absolute tolerance on the raw value, per measure.
TOLERANCE = {
    "unified_quality_score": 1.0,  # 0-100
    "background_uniformity": 1.5,  # Scharr gradient units (0-~500)
    "illumination_uniformity": 0.02,  # histogram overlap 0-1
    "luminance_mean": 0.003,
    "luminance_variance": 0.001,
    "under_exposure_prevention": 0.005,  # pixel shares 0-1
    "over_exposure_prevention": 0.005,
    "dynamic_range": 0.03,  # bits
    "sharpness": 0.01,  # ratio 0-1
    "compression_artifacts": 0.01,  # ratio ~1-4
    "natural_colour": 0.5,  # CIELAB distance
    "single_face_present": 0.01,  # area ratio
    "eyes_open": 0.003,  # / T
    "mouth_closed": 0.003,
    "eyes_visible": 0.02,  # occluded shares 0-1
    "mouth_occlusion_prevention": 0.03,
    "face_occlusion_prevention": 0.01,
    "inter_eye_distance": 0.5,  # pixels
    "head_size": 0.002,
    "leftward_crop": 0.01,  # IED
    "rightward_crop": 0.01,
    "margin_above": 0.01,  # T
    "margin_below": 0.01,
    "head_pose_yaw": 0.3,  # degrees
    "head_pose_pitch": 0.3,
    "head_pose_roll": 0.3,
    "expression_neutrality": 0.1,  # index
    "no_head_coverings": 0.02,  # share 0-1
    "glasses_glare": 0.002,  # share 0-1
}


def _golden() -> dict[str, dict[str, tuple[str, str]]]:
    table: dict[str, dict[str, tuple[str, str]]] = {}
    with open(GOLDEN, newline="", encoding="utf-8") as fh:
        for row in csv.DictReader(fh):
            table.setdefault(row["image"], {})[row["measure"]] = (row["raw"], row["reason"])
    return table


def test_every_measure_has_a_tolerance() -> None:
    assert set(TOLERANCE) == set(all_measures())


def test_golden_file_covers_every_image_and_measure(shared_data: Path) -> None:
    golden = _golden()
    assert {name for name, _ in golden_images(shared_data)} == set(golden)
    for image, measures in golden.items():
        assert set(measures) == set(all_measures()), image


def test_measures_match_golden_values(shared_data: Path, analyzer) -> None:
    golden = _golden()
    problems = []
    for name, path in golden_images(shared_data):
        for measure, (raw, _score, reason) in compute(analyzer, path).items():
            want_raw, want_reason = golden[name][measure]
            if want_raw == "":
                if raw is not None:
                    problems.append(f"{name} {measure}: golden failed to assess ({want_reason}), now {raw:.6g}")
                continue
            if raw is None:
                problems.append(f"{name} {measure}: golden {want_raw}, now failed to assess ({reason})")
            elif abs(raw - float(want_raw)) > TOLERANCE[measure]:
                problems.append(f"{name} {measure}: golden {want_raw}, now {raw:.6g} (tolerance {TOLERANCE[measure]})")
    assert not problems, "\n".join(problems)


def test_golden_values_are_not_constant() -> None:
    """A measure returning one value for every image measures nothing. Glasses glare is the exception: no
    shared photo shows glare on glasses (the two with glasses, img24 and img25, have none), so it is 0 on
    all of them; test_glare.py checks it on painted highlights."""
    golden = _golden()
    for measure in all_measures():
        if measure == "glasses_glare":
            assert {golden[image][measure][0] for image in golden} == {"0"}
            continue
        values = {golden[image][measure][0] for image in golden} - {""}
        assert len(values) >= 2, f"{measure} is constant over the golden images: {values}"
