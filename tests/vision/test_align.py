"""Face chips: dlib's geometry, and chips that look like the ones dlib cut from the same photos."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from appliance.imageio import read_image
from appliance.vision.align import (
    DLIB_FIVE_POINT_TEMPLATE,
    chip_to_image,
    face_chip,
    five_points,
    similarity_transform,
)
from appliance.vision.types import Detection, Face


def test_similarity_transform_recovers_a_known_one() -> None:
    src = np.array([[0, 0], [10, 0], [0, 5], [7, 9], [3, 3]], dtype=float)
    a, scale = math.radians(25), 1.7
    m = scale * np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
    dst = src @ m.T + [40, -12]
    fit = similarity_transform(src, dst)
    assert np.allclose(fit[:, :2], m) and np.allclose(fit[:, 2], [40, -12])


def test_similarity_transform_is_least_squares() -> None:
    rng = np.random.default_rng(0)
    src = rng.uniform(0, 100, (5, 2))
    dst = src * 0.5 + rng.normal(0, 2, (5, 2))
    fit = similarity_transform(src, dst)
    best = np.sum((src @ fit[:, :2].T + fit[:, 2] - dst) ** 2)
    for _ in range(50):  # any perturbed similarity fits worse
        d = rng.normal(0, 0.01, 4)
        a, b = fit[0, 0] + d[0], fit[1, 0] + d[1]
        other = np.array([[a, -b, fit[0, 2] + d[2]], [b, a, fit[1, 2] + d[3]]])
        assert np.sum((src @ other[:, :2].T + other[:, 2] - dst) ** 2) >= best


def test_template_points_land_on_dlib_template() -> None:
    """Points already at the padded template positions give (nearly) the identity, per dlib's rectangle rule."""
    size, padding = 150, 0.25
    template = (padding + DLIB_FIVE_POINT_TEMPLATE) / (2 * padding + 1) * size
    affine = chip_to_image(template, size, padding)
    # dlib maps chip pixel 0 and size-1 onto a rectangle of side size*scale - 1 around the fitted centre.
    assert np.allclose(affine[:, :2], np.eye(2))
    assert np.allclose(affine[:, 2], [0.5, 0.5])


def test_chip_of_shifted_scaled_image_is_the_same_picture() -> None:
    rng = np.random.default_rng(1)
    base = (rng.uniform(0, 255, (60, 60, 3))).astype(np.uint8)
    image = np.kron(base, np.ones((8, 8, 1), np.uint8))  # 480x480, smooth enough to resample
    template = (0.25 + DLIB_FIVE_POINT_TEMPLATE) / 1.5 * 150
    a = face_chip(image, template * 2 + [30, 20])
    b = face_chip(image, template * 2 + [30 + 8, 20 + 16])
    # Moving the points by one block moves the sampled picture by half a block in the chip.
    assert np.abs(a[20:-20, 24:-20].astype(int) - b[20:-20, 20:-24].astype(int)).mean() > 5
    assert np.abs(a[28:-20, 24:-20].astype(int) - b[20:-28, 20:-24].astype(int)).mean() < 8
    assert a.shape == (150, 150, 3) and a.dtype == np.uint8


def test_chip_outside_the_image_is_black() -> None:
    image = np.full((200, 200, 3), 255, np.uint8)
    template = (0.25 + DLIB_FIVE_POINT_TEMPLATE) / 1.5 * 150
    chip = face_chip(image, template * 3 + [500, 500])  # face entirely off the image
    assert chip.max() == 0


def test_five_points_order_on_a_frontal_face(faces_dir: Path, analyzer) -> None:
    (face,) = analyzer.analyze(read_image(faces_dir / "openmpf_meds" / "meds-aa-S001-01.jpg"), iris=False)
    p = five_points(face)
    # dlib order: subject's left eye outer, inner; right eye outer, inner; under the nose.
    assert p[0, 0] > p[1, 0] > p[4, 0] > p[3, 0] > p[2, 0]
    assert p[4, 1] > p[:4, 1].max()


def test_five_points_needs_a_mesh() -> None:
    face = Face(detection=Detection(box=np.zeros(4), score=1.0, keypoints=np.zeros((6, 2))))
    with pytest.raises(ValueError, match="mesh"):
        five_points(face)


def test_chips_resemble_dlibs_own(shared_data: Path, analyzer, capsys) -> None:
    """Every row of dlib-parity/chips.npy was cut by dlib (5-point predictor, get_face_chip 150/0.25)
    from the image named in keys.txt. Our chip from mesh points must look like it.

    For images with several faces we do not know which one dlib's detector listed first, so the
    closest of our chips counts. The bound is a measured one with margin: the residual is the
    difference between dlib's landmark model and the mesh's idea of where the corners and nose base are
    (a pixel or two at chip scale), not an interpolation difference.
    """
    parity = shared_data / "dlib-parity"
    chips = np.load(parity / "chips.npy")
    keys = (parity / "keys.txt").read_text().split()
    assert len(keys) == len(chips)
    diffs = []
    for key, want in zip(keys, chips, strict=True):
        image = read_image(shared_data / "faces" / key)
        faces = analyzer.analyze(image, iris=False, all_landmarks=True)
        assert faces, f"no face in {key}"
        diffs.append(min(float(np.abs(face_chip(image, five_points(f)).astype(float) - want).mean()) for f in faces))
    d = np.array(diffs)
    with capsys.disabled():
        print(
            f"\n[align] {len(d)} chips vs dlib: mean abs difference {d.mean():.2f} grey levels "
            f"(median {np.median(d):.2f}, max {d.max():.2f} on {keys[int(d.argmax())]})"
        )
    assert d.mean() < 14
    assert d.max() < 30
