"""Edges of the dlib-exact alignment: pyramid arithmetic, faces at or off the border, a bundle without it."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from appliance.vision.align import DLIB_FIVE_POINT_TEMPLATE
from appliance.vision.bundle import MANIFEST, Bundle, BundleError
from appliance.vision.dlib_chip import chip_details, dlib_face_chip, pyramid_down
from appliance.vision.embedder import Embedder
from appliance.vision.shape_predictor import BOX_JITTER, SHAPE_PREDICTOR_ROLE, face_box, face_points, jittered_boxes


def _points(scale: float, offset: tuple[float, float]) -> np.ndarray:
    return (0.25 + DLIB_FIVE_POINT_TEMPLATE) / 1.5 * 150 * scale + offset


def test_pyramid_is_dlibs_integer_filter() -> None:
    flat = np.full((41, 40, 3), 200, np.uint8)
    assert pyramid_down(flat).shape == (19, 18, 3) and (pyramid_down(flat) == 200).all()
    impulse = np.zeros((40, 40, 3), np.uint8)
    impulse[20, 20] = 255
    down = pyramid_down(impulse)[..., 0].astype(int)
    # [1 4 6 4 1] x [1 4 6 4 1] / 256, floored, centred on input pixel 2 * i + 2.
    assert down[9, 9] == 255 * 36 // 256 and down[8, 9] == down[9, 10] == 255 * 6 // 256
    assert down[8, 8] == 0 and down.sum() == down[8:11, 8:11].sum()


def test_chip_geometry_matches_the_template() -> None:
    rect, angle = chip_details(_points(2.0, (30.0, 40.0)))
    side = rect[2] - rect[0] + 1
    assert side == pytest.approx(300.0) and rect[3] - rect[1] + 1 == pytest.approx(300.0)
    assert angle == pytest.approx(0.0, abs=1e-12)
    assert (rect[0] + rect[2]) / 2 == pytest.approx(30 + 150.0)


def test_face_off_the_image_gives_a_black_chip_and_edges_are_black() -> None:
    image = np.full((300, 300, 3), 255, np.uint8)
    assert dlib_face_chip(image, _points(3.0, (900.0, 900.0))).max() == 0
    half_out = dlib_face_chip(image, _points(1.5, (-110.0, 50.0)))
    assert half_out[:, :20].max() == 0 and half_out[:, -20:].min() == 255


def test_large_face_uses_the_pyramid_and_stays_smooth() -> None:
    rng = np.random.default_rng(3)
    image = np.clip(rng.normal(128, 40, (1200, 1200, 3)), 0, 255).astype(np.uint8)
    chip = dlib_face_chip(image, _points(6.0, (100.0, 80.0)))
    # Six image pixels per chip pixel: the pyramid averages the noise away before sampling.
    assert chip.shape == (150, 150, 3) and chip.std() < 15


def test_face_points_on_a_real_face_are_in_dlib_order(shared_data: Path, analyzer, bundle) -> None:
    from appliance.imageio import read_image

    image = read_image(shared_data / "faces" / "openmpf_meds" / "meds-aa-S001-01.jpg")
    (face,) = analyzer.analyze(image, landmarks=False)
    p = face_points(Embedder(bundle).predictor, image, face.detection.box)
    assert p[0, 0] > p[1, 0] > p[4, 0] > p[3, 0] > p[2, 0] and p[4, 1] > p[:4, 1].max()
    assert np.array_equal(p, np.round(p))  # whole pixels, as dlib returns them


def test_jittered_boxes_surround_the_box_symmetrically() -> None:
    box = (100, 200, 300, 400)  # side 200: 2% is 4 pixels
    boxes = jittered_boxes(box)
    assert boxes[0] == box and len(boxes) == len(set(boxes)) == len(BOX_JITTER)
    centres = np.array([((b[0] + b[2]) / 2, (b[1] + b[3]) / 2) for b in boxes])
    sides = np.array([b[2] - b[0] for b in boxes])
    assert np.allclose(centres.mean(axis=0), (200, 300)) and np.allclose(sides.mean(), 200)
    assert set(np.abs(centres - (200, 300)).ravel()) == {0.0, 4.0} and set(sides) == {192, 200, 208}
    assert all(b[3] - b[1] == b[2] - b[0] for b in boxes)  # square, like dlib's detector boxes


def test_template_is_the_mean_over_the_jittered_chips(shared_data: Path, analyzer, bundle) -> None:
    from appliance.imageio import read_image

    image = read_image(shared_data / "faces" / "openmpf_meds" / "meds-aa-S001-01.jpg")
    (face,) = analyzer.analyze(image, landmarks=False)
    embedder = Embedder(bundle)
    chips = embedder.chips(image, face)
    assert sum(n for _, n in chips) == len(BOX_JITTER) and len(chips) > 1
    box, points = face_box(embedder.predictor, image, face.detection.box)
    assert np.array_equal(points, face_points(embedder.predictor, image, face.detection.box))
    assert any(np.array_equal(chip, embedder.chip(image, face)) for chip, _ in chips)
    want = sum(n * embedder.embed_chip(chip).astype(np.float64) for chip, n in chips) / len(BOX_JITTER)
    template = embedder.embed_face(image, face)
    assert template.dtype == np.float32 and np.allclose(template, want, atol=1e-6)
    # Not just the box's own chip: the neighbours move it (dlib's points move with a pixel of box).
    assert np.linalg.norm(template - embedder.embed_chip(embedder.chip(image, face))) > 1e-3
    # Without jitter (a slow device's profile): the box's own chip alone, and still near the mean.
    single = Embedder(bundle, jitter=False).embed_face(image, face)
    assert np.array_equal(single, embedder.embed_chip(embedder.chip(image, face)))
    assert np.linalg.norm(template - single) < 0.05


def test_bundle_without_the_predictor_cannot_embed(tmp_path: Path, bundle) -> None:
    root = tmp_path / "bundle"
    shutil.copytree(bundle.root, root)
    text = (root / MANIFEST).read_text()
    kept = [block for block in text.split("\n[") if f'role = "{SHAPE_PREDICTOR_ROLE}"' not in block]
    (root / MANIFEST).write_text("\n[".join(kept))
    with pytest.raises(BundleError, match=SHAPE_PREDICTOR_ROLE):
        Embedder(Bundle.load(root))
