"""No measure ever raises: every measure on every real image gives a value or a reason; images without a
face, tiny, flat, greyscale or odd-shaped ones give clear failed-to-assess results and the no_face verdict."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from appliance.quality import QualityEngine, QualitySession
from appliance.quality.registry import all_measures
from tests.conftest import read_labels


def _check(result) -> None:
    if result.reason is None:
        assert result.raw is not None and math.isfinite(result.raw), result
        assert result.score is not None and 0 <= result.score <= 100, result
    else:
        assert result.raw is None and result.score is None, result
        assert "internal error" not in result.reason, result


def test_every_measure_on_every_real_image(shared_data, analyzer) -> None:
    """All still images of the shared set (single, multi, derived, unlabelled), every measure."""
    rows = [r for r in read_labels(shared_data) if r["kind"] != "video"]
    assert len(rows) >= 50
    from appliance.imageio import read_image

    assessed = 0
    for row in rows:
        session = QualitySession(read_image(row["path"]), analyzer=analyzer)
        for name in all_measures():
            result = session.result(name)
            _check(result)
            assessed += result.reason is None
    assert assessed > 0.95 * len(rows) * len(all_measures())


def _blank(h: int = 480, w: int = 640, value: int = 200) -> np.ndarray:
    return np.full((h, w, 3), value, np.uint8)


def test_no_face_gives_no_face_result(engine: QualityEngine) -> None:
    report = engine.full(_blank())
    assert report.faces == 0 and report.passed is False
    assert [g.code for g in report.guidance] == ["no_face"]
    assert all(r.reason == "no face found" for r in report.measures.values())
    out = report.to_json()
    assert out["passed"] is False and out["faces"] == 0
    assert out["guidance"] == [{"code": "no_face", "message": engine.profile.message("no_face")}]
    live = engine.live(_blank())
    assert live.faces == 0 and not live.passed and live.primary.code == "no_face"


@pytest.mark.parametrize("image", [
    _blank(8, 8), _blank(1, 640), _blank(480, 1), np.zeros((100, 100, 3), np.uint8),
    np.random.default_rng(1).integers(0, 256, (240, 320, 3), dtype=np.uint8),
], ids=["8x8", "1-row", "1-col", "black", "noise"])
def test_degenerate_images_never_raise(image: np.ndarray, engine: QualityEngine) -> None:
    report = engine.full(image)
    for result in report.measures.values():
        _check(result)
    assert report.passed is False


def test_greyscale_photo_fails_colour_measures_with_a_reason(load, engine: QualityEngine) -> None:
    grey = cv2.cvtColor(cv2.cvtColor(load("img33.jpg"), cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    report = engine.full(grey)
    assert report.faces == 1
    for name in ("face_occlusion_prevention", "mouth_occlusion_prevention", "eyes_visible"):
        assert report.measures[name].reason and "colour" in report.measures[name].reason
    assert report.measures["sharpness"].raw is not None
    assert report.gates["face_occlusion_prevention"].code == "not_checked"


def test_face_cut_by_the_image_edge(load, face_of, engine: QualityEngine) -> None:
    image = load("img33.jpg")
    face = face_of(image)
    half = np.ascontiguousarray(image[:, : int(face.eyes[:, 0].mean())])
    for result in engine.full(half).measures.values():
        _check(result)


def test_measure_crash_is_contained(load, analyzer, monkeypatch) -> None:
    from appliance.quality import registry

    spec = registry.REGISTRY["sharpness"]

    def boom(session, params):
        raise ZeroDivisionError("synthetic")

    monkeypatch.setitem(registry.REGISTRY, "sharpness", registry.MeasureSpec(spec.name, spec.qaa_id, boom, spec.live,
                                                                             spec.summary))
    result = QualitySession(load("img2.jpg"), analyzer=analyzer).result("sharpness")
    assert result.raw is None and "internal error" in result.reason and "ZeroDivisionError" in result.reason
