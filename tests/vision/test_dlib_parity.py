"""Our templates against dlib's own, image by image.

Two references, both made by dlib 20.0.1 on the images of the shared dlib-parity fixture:
- `dlib_reference.json` (this folder, from `make_dlib_reference.py`): dlib's HOG detector's rectangle,
  the 5-point predictor's points in it and the hash of dlib's chip. With those, our predictor and our
  chip cutter must reproduce dlib exactly, pixel for pixel, which makes the template dlib's (the
  network's parity with dlib is tested in tests/firmware/test_dlib_convert.py).
- the shared fixture's `descriptors.npy`: dlib's descriptors of its own chips of the same images.

The whole pipeline starts from BlazeFace, not dlib's HOG detector, and the predictor's points depend
on the rectangle to the pixel; the distance table shows what that leaves, beside the single-box
template the averaged one replaced and the FaceMesh alignment before that.

The issue's target (median 0.02, max 0.05 from dlib's template) is below what dlib reaches against
itself: a one-pixel shift of dlib's own box moves its template a median 0.033, and the fixture was made
by none of dlib's stock detector settings (`variants` in the reference: its chip equals the one from
HOG at upsampling 0 or 1, or the CNN detector, for one to three images each), so the fixture's box
cannot be reproduced. The bounds below are what is measured, with a little margin.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from appliance.imageio import read_image
from appliance.vision.align import face_chip, five_points
from appliance.vision.dlib_chip import dlib_face_chip
from appliance.vision.embedder import Embedder
from appliance.vision.shape_predictor import jittered_boxes

REFERENCE = Path(__file__).with_name("dlib_reference.json")


@pytest.fixture(scope="module")
def reference() -> dict:
    return json.loads(REFERENCE.read_text())["images"]


@pytest.fixture(scope="module")
def embedder(bundle) -> Embedder:
    return Embedder(bundle)


@pytest.fixture(scope="module")
def images(shared_data: Path) -> dict[str, np.ndarray]:
    keys = (shared_data / "dlib-parity" / "keys.txt").read_text().split()
    return {key: read_image(shared_data / "faces" / key) for key in keys}


def test_reference_covers_the_fixture(reference: dict, images: dict) -> None:
    assert set(reference) <= set(images)
    assert len(reference) >= len(images) - 1  # dlib's HOG detector misses at most one of these faces


def test_fixture_was_made_by_none_of_dlibs_stock_detectors() -> None:
    """The recorded comparison behind the module docstring: each detector setting reproduces the fixture's
    chip on a few images at most (by chance: one pixel of box changes the chip), never on most."""
    variants = json.loads(REFERENCE.read_text())["variants"]
    for name in ("hog0", "hog1", "cnn0"):
        tried = [v[name]["fixture_chip_diff"] for v in variants.values() if name in v]
        exact = sum(d == 0 for d in tried)
        assert len(tried) >= 25 and exact <= len(tried) // 10, (name, exact, len(tried))


def test_predictor_finds_dlibs_points_in_dlibs_box(reference: dict, images: dict, embedder: Embedder) -> None:
    wrong = {}
    for key, row in reference.items():
        points = embedder.predictor(images[key], tuple(row["box"]))
        if not np.array_equal(points, np.array(row["points"], float)):
            wrong[key] = (points.tolist(), row["points"])
    assert not wrong, f"{len(wrong)} of {len(reference)} differ from dlib: {wrong}"


def test_chip_is_dlibs_chip_pixel_for_pixel(reference: dict, images: dict) -> None:
    wrong = [
        key
        for key, row in reference.items()
        if hashlib.sha256(dlib_face_chip(images[key], np.array(row["points"], float)).tobytes()).hexdigest()
        != row["chip_sha256"]
    ]
    assert not wrong, f"chips differ from dlib's for {wrong}"


def _closest(templates: list[np.ndarray], want: np.ndarray) -> float:
    return min(float(np.linalg.norm(t - want)) for t in templates)


def _dlib_box_floor(embedder: Embedder, image: np.ndarray, box: tuple, dlib_hog: np.ndarray) -> dict[str, float]:
    """What boxes other than dlib's own reach: dlib's HOG box moved by one pixel (mean over the four
    directions), and our jittered mean centred on dlib's exact box (the best any box centre can do)."""

    def template(b: tuple) -> np.ndarray:
        return embedder.embed_chip(dlib_face_chip(image, embedder.predictor(image, b)))

    left, top, right, bottom = box
    moved = [(left + dx, top + dy, right + dx, bottom + dy) for dx, dy in ((1, 0), (-1, 0), (0, 1), (0, -1))]
    centred = np.mean([template(b) for b in jittered_boxes(box)], axis=0)
    return {
        "pixel": float(np.mean([np.linalg.norm(template(b) - dlib_hog) for b in moved])),
        "centred": float(np.linalg.norm(centred - dlib_hog)),
    }


def test_distance_to_dlibs_templates(
    reference: dict, images: dict, shared_data: Path, analyzer, embedder: Embedder, capsys
) -> None:
    """The table: our pipeline's template against dlib's HOG-box template and the fixture's descriptor.

    For images with several faces the closest of ours counts (we do not know which face dlib took).
    """
    keys = list(images)
    fixture = np.load(shared_data / "dlib-parity" / "descriptors.npy")
    rows = []
    for key, want_fixture in zip(keys, fixture, strict=True):
        image = images[key]
        faces = analyzer.analyze(image, iris=False, all_landmarks=True)
        assert faces, f"no face in {key}"
        ours = [embedder.embed_face(image, f) for f in faces]
        single = [embedder.embed_chip(embedder.chip(image, f)) for f in faces]
        mesh = [embedder.embed_chip(face_chip(image, five_points(f))) for f in faces]
        row = {"key": key, "fixture": _closest(ours, want_fixture), "single_fixture": _closest(single, want_fixture),
               "mesh_fixture": _closest(mesh, want_fixture)}
        if key in reference:
            dlib_hog = embedder.embed_chip(dlib_face_chip(image, np.array(reference[key]["points"], float)))
            row |= {"hog": _closest(ours, dlib_hog), "single_hog": _closest(single, dlib_hog),
                    "hog_fixture": float(np.linalg.norm(dlib_hog - want_fixture))}
            row |= _dlib_box_floor(embedder, image, tuple(reference[key]["box"]), dlib_hog)
        rows.append(row)

    def stats(name: str) -> tuple[float, float]:
        values = np.array([r[name] for r in rows if name in r])
        return float(np.median(values)), float(values.max())

    with capsys.disabled():
        print(f"\n[dlib parity] {len(rows)} images; Euclidean distance between templates (median / max)")
        for name, what in (
            ("fixture", "ours (mean over jittered BlazeFace-derived boxes) vs fixture descriptors"),
            ("hog", "ours vs dlib's HOG-box pipeline (face_recognition's default)"),
            ("single_fixture", "one BlazeFace-derived box (before) vs fixture descriptors"),
            ("single_hog", "one BlazeFace-derived box (before) vs dlib's HOG-box pipeline"),
            ("hog_fixture", "dlib's HOG-box pipeline vs fixture descriptors (dlib against itself)"),
            ("pixel", "dlib's HOG box moved one pixel vs dlib's HOG-box pipeline"),
            ("centred", "our jittered mean centred on dlib's HOG box vs its pipeline (the floor)"),
            ("mesh_fixture", "FaceMesh alignment (before that) vs fixture descriptors"),
        ):
            med, top = stats(name)
            print(f"  {med:.4f} / {top:.4f}  {what}")
        for r in rows:
            print(f"  {r['key']:<48} fixture {r['fixture']:.4f}  hog {r.get('hog', float('nan')):.4f}"
                  f"  mesh {r['mesh_fixture']:.4f}")

    fixture_med, fixture_max = stats("fixture")
    mesh_med, _ = stats("mesh_fixture")
    hog_med, hog_max = stats("hog")
    dlib_med, _ = stats("hog_fixture")
    # Measured bounds with a little margin (not the 0.02 / 0.05 target: see the module docstring).
    assert fixture_med <= 0.030 and fixture_max <= 0.085
    assert hog_med <= 0.029 and hog_max <= 0.095
    assert fixture_med < dlib_med and hog_med < dlib_med  # nearer to each dlib template than they are apart
    assert fixture_med <= stats("single_fixture")[0] - 0.005 and hog_med <= stats("single_hog")[0] - 0.005
    assert fixture_med <= mesh_med / 4  # at least 4x closer to dlib than the FaceMesh alignment
    # One pixel of box already costs about what the single box did, and centring the mean on dlib's
    # exact box would gain little: the 0.02 target is below the floor, not missed by a bad box.
    assert stats("pixel")[0] >= 0.025 and stats("centred")[0] >= 0.02 and hog_med <= stats("centred")[0] + 0.004
