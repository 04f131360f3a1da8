"""Glasses glare is glare on glasses: bright bare skin round the eyes must pass, a highlight on a
spectacle lens must fail (profile nist-sap30, real mug shots with painted changes from synth.py)."""

from __future__ import annotations

import pytest

from appliance.quality import QualityEngine
from tests.quality import synth

BASES = ["meds-aa-S001-01.jpg", "meds-aa-S029-01.jpg", "img33.jpg"]


def _glare(engine: QualityEngine, image):
    report = engine.full(image)
    return report.gates["glasses_glare"], report.measures["glasses_glare"], report


@pytest.mark.parametrize("name", BASES)
def test_washed_out_skin_round_bare_eyes_is_not_glare(name: str, load, face_of, engine: QualityEngine) -> None:
    """The held-out case: a washed-out mug shot without glasses. The skin round the eyes is bright and
    colourless (the specular count alone is far over the limit) and exposure fails, glare does not."""
    image = load(name)
    face = face_of(image)
    washed = synth.skin_highlights(synth.eye_skin_brightened(image, face), face)
    gate, result, report = _glare(engine, washed)
    assert result.detail["specular_share"] > 0.1  # what the lens-zone count alone would have flagged
    assert result.detail["glasses"] == 0.0
    assert gate.passed and result.raw == 0.0
    assert "glare" not in {g.code for g in report.guidance}
    assert not report.gates["over_exposure_prevention"].passed  # the real fault is still reported


@pytest.mark.parametrize("name", BASES)
def test_highlight_on_drawn_glasses_is_glare(name: str, load, face_of, engine: QualityEngine) -> None:
    image = load(name)
    face = face_of(image)
    framed = synth.glasses(image, face)
    gate, result, _ = _glare(engine, framed)
    assert result.detail["glasses"] == 1.0
    assert gate.passed  # frames alone are not glare
    gate, result, report = _glare(engine, synth.lens_glare(framed, face))
    assert not gate.passed and result.raw > 0.05
    assert "glare" in {g.code for g in report.guidance}


def test_real_glasses_are_recognised_and_bare_faces_are_not(load, engine: QualityEngine) -> None:
    """img24 and img25 wear dark-rimmed glasses; the MEDS mug shots and img33 do not."""
    for name in ("img24.jpg", "img25.jpg"):
        assert engine.full(load(name)).measures["glasses_glare"].detail["glasses"] == 1.0, name
    for name in BASES:
        assert engine.full(load(name)).measures["glasses_glare"].detail["glasses"] == 0.0, name


def test_washed_out_face_behind_real_glasses_is_glare(load, face_of, engine: QualityEngine) -> None:
    image = load("img24.jpg")
    gate, _, _ = _glare(engine, image)
    assert gate.passed
    gate, result, _ = _glare(engine, synth.eye_skin_brightened(image, face_of(image)))
    assert not gate.passed and result.raw > 0.05
