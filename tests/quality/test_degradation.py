"""Each degradation of a real photo fails the gate of the measure that names it, and the untouched photo
passes that same gate (profile nist-sap30). Degradations are in `tests/quality/synth.py`.

Base images: img33 (studio portrait, plain light background, 2048x2048) and the MEDS-II mug-shot S029
(480x384, plain wall). The shared set has no closed eyes, masks, caps or spectacle glare, so those are
painted onto the real photos (see synth.py; glare on drawn spectacle frames); it does have open mouths and
smiles (img1, img50).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from appliance.quality import QualityEngine
from tests.quality import synth

Degrade = Callable[[np.ndarray, object], np.ndarray]

CASES: list[tuple[str, str, str, Degrade]] = [
    # (id, base image, measure whose gate must fail, degradation)
    ("blur", "img33.jpg", "sharpness", lambda im, f: synth.blur(im, f, 0.03)),
    ("under_exposed_mean", "img33.jpg", "luminance_mean", lambda im, f: synth.exposure(im, 0.02)),
    ("under_exposed_share", "meds-aa-S029-01.jpg", "under_exposure_prevention", lambda im, f: synth.exposure(im, 0.05)),
    ("over_exposed", "img33.jpg", "over_exposure_prevention", lambda im, f: synth.exposure(im, 6.0)),
    ("over_exposed_mean", "meds-aa-S029-01.jpg", "luminance_mean", lambda im, f: synth.exposure(im, 12.0)),
    ("rotated_ccw", "img33.jpg", "head_pose_roll", lambda im, f: synth.rotate(im, f, 14)),
    ("rotated_cw", "meds-aa-S029-01.jpg", "head_pose_roll", lambda im, f: synth.rotate(im, f, -14)),
    ("off_centre_left", "img33.jpg", "leftward_crop", lambda im, f: synth.off_centre(im, f, "left")),
    ("off_centre_right", "img33.jpg", "rightward_crop", lambda im, f: synth.off_centre(im, f, "right")),
    ("downscaled", "img33.jpg", "inter_eye_distance", lambda im, f: synth.downscale(im, f, 60)),
    ("cluttered_background", "meds-aa-S029-01.jpg", "background_uniformity", synth.cluttered_background),
    ("closed_eyes", "meds-aa-S029-01.jpg", "eyes_open", synth.close_eyes),
    ("closed_eyes_2", "img33.jpg", "eyes_open", synth.close_eyes),
    ("jpeg_q8", "img33.jpg", "compression_artifacts", lambda im, f: synth.jpeg(im, 8)),
    ("sunglasses", "img33.jpg", "eyes_visible", synth.sunglasses),
    ("medical_mask", "img33.jpg", "mouth_occlusion_prevention", synth.medical_mask),
    ("medical_mask_face", "meds-aa-S029-01.jpg", "face_occlusion_prevention", synth.medical_mask),
    ("cap", "img33.jpg", "no_head_coverings", synth.cap),
    ("lens_glare", "img33.jpg", "glasses_glare", lambda im, f: synth.lens_glare(synth.glasses(im, f), f)),
]


def _gate(engine: QualityEngine, image: np.ndarray, measure: str):
    report = engine.full(image)
    assert measure in report.gates, f"{measure} is not a gate of {engine.profile.name}"
    return report.gates[measure], report.measures[measure], report


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_degradation_fails_its_measure(case, load, face_of, engine: QualityEngine) -> None:
    _, base, measure, degrade = case
    image = load(base)
    gate, result, _ = _gate(engine, image, measure)
    assert gate.passed, f"untouched {base} must pass {measure}: {result}"
    damaged = degrade(image, face_of(image))
    gate, result, report = _gate(engine, damaged, measure)
    assert not gate.passed, f"degraded {base} must fail {measure}: {result}"
    assert gate.code in {g.code for g in report.guidance}


def test_second_face_pasted_in(load, face_of, engine: QualityEngine) -> None:
    image, other = load("meds-aa-S029-01.jpg"), load("img33.jpg")
    gate, result, _ = _gate(engine, image, "single_face_present")
    assert gate.passed and result.raw == 0
    crowded = synth.paste_second_face(image, face_of(image), other, face_of(other), relative_size=0.6)
    gate, result, report = _gate(engine, crowded, "single_face_present")
    assert report.faces == 2
    assert not gate.passed and result.raw > 0.2
    assert report.guidance[0].code == "second_face"
    # The subject is still the larger face: the other measures describe them, not the intruder.
    assert report.measures["inter_eye_distance"].raw == pytest.approx(
        engine.full(image).measures["inter_eye_distance"].raw, rel=0.05)


def test_open_mouth_on_real_photos(load, engine: QualityEngine) -> None:
    """img1 (open smile, teeth showing) fails mouth closed; img2 (same subject, lips together) passes."""
    gate, result, _ = _gate(engine, load("img1.jpg"), "mouth_closed")
    assert not gate.passed, result
    gate, result, _ = _gate(engine, load("img2.jpg"), "mouth_closed")
    assert gate.passed, result


@pytest.mark.parametrize("smiling,neutral", [("img1.jpg", "img2.jpg"), ("img50.jpg", "img47.jpg"),
                                              ("img58.jpg", "img57.jpg")])
def test_smile_fails_expression_neutrality(smiling: str, neutral: str, load, engine: QualityEngine) -> None:
    """Same subject, smiling vs. neutral (real photos)."""
    gate, result, _ = _gate(engine, load(smiling), "expression_neutrality")
    assert not gate.passed, result
    gate, result, _ = _gate(engine, load(neutral), "expression_neutrality")
    assert gate.passed, result


def test_blur_lowers_sharpness_monotonically(load, face_of, engine: QualityEngine) -> None:
    image = load("meds-aa-S001-01.jpg")
    face = face_of(image)
    values = [engine.full(synth.blur(image, face, f) if f else image).measures["sharpness"].raw
              for f in (0, 0.01, 0.02, 0.04)]
    assert values == sorted(values, reverse=True)


def test_compression_rises_with_jpeg_quality_falling(load, engine: QualityEngine) -> None:
    image = load("img33.jpg")
    values = [engine.full(synth.jpeg(image, q)).measures["compression_artifacts"].raw for q in (95, 50, 20, 8)]
    assert values == sorted(values)
