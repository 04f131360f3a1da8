"""Detection rate and genuine/impostor separation of the template on every labelled real image.

Run end to end (read, detect, align, embed) exactly as the CLI does (`Embedder.embed_face`: dlib's
5-point landmarks and chip), on all labelled single-face images in ../shared/data/faces, and compute the
equal-error rate.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from appliance.imageio import read_image
from appliance.vision.embedder import Embedder


def equal_error_rate(genuine: np.ndarray, impostor: np.ndarray) -> tuple[float, float]:
    """(EER, threshold) for distances: genuine pairs should be small, impostors large."""
    thresholds = np.unique(np.concatenate([genuine, impostor]))
    best = (1.0, 0.0)
    best_gap = np.inf
    for t in thresholds:
        frr = float(np.mean(genuine > t))  # genuine pairs rejected at this threshold
        far = float(np.mean(impostor <= t))  # impostor pairs accepted
        gap = abs(frr - far)
        if gap < best_gap:
            best_gap, best = gap, ((frr + far) / 2, float(t))
    return best


@pytest.fixture(scope="module")
def templates(labelled_singles, analyzer, bundle) -> dict:
    embedder = Embedder(bundle)
    out: dict[str, tuple[str, np.ndarray | None]] = {}
    for row in labelled_singles:
        image = read_image(row["path"])
        faces = analyzer.analyze(image, landmarks=False, iris=False)
        template = embedder.embed_face(image, faces[0]) if faces else None
        out[row["path"].name] = (row["identity"], template)
    return out


def test_every_labelled_face_is_detected(templates: dict) -> None:
    missed = [name for name, (_, t) in templates.items() if t is None]
    rate = 1 - len(missed) / len(templates)
    print(f"\ndetection rate on {len(templates)} labelled single-face images: {rate:.1%}")
    assert not missed, f"no face found in {missed}"


def test_equal_error_rate_at_most_one_percent(templates: dict, bundle) -> None:
    items = [(ident, t) for ident, t in templates.values() if t is not None]
    genuine, impostor = [], []
    for (id_a, t_a), (id_b, t_b) in itertools.combinations(items, 2):
        (genuine if id_a == id_b else impostor).append(float(np.linalg.norm(t_a - t_b)))
    genuine_a, impostor_a = np.array(genuine), np.array(impostor)
    eer, at = equal_error_rate(genuine_a, impostor_a)
    thr = bundle.match_threshold
    frr = float(np.mean(genuine_a > thr))
    far = float(np.mean(impostor_a <= thr))
    print(f"\n{len(items)} images, {len(genuine)} genuine / {len(impostor)} impostor pairs: "
          f"EER {eer:.2%} at distance {at:.3f}; at the bundle threshold {thr}: FRR {frr:.2%}, FAR {far:.2%}")
    assert len(genuine) >= 100 and len(impostor) >= 1000
    assert eer <= 0.01
    assert frr <= 0.02 and far <= 0.02


def test_equal_error_rate_helper() -> None:
    assert equal_error_rate(np.array([0.1, 0.2]), np.array([0.8, 0.9]))[0] == 0.0
    eer, _ = equal_error_rate(np.array([0.1, 0.9]), np.array([0.5, 0.95]))
    assert eer == pytest.approx(0.5)
