"""Face templates: dlib's ResNet descriptor, converted to TFLite, run on an aligned 150x150 chip.

The model name travels with every template (the gallery never compares templates of different
models), and the match threshold comes from the bundle manifest, not from code.

The chip is cut the way dlib cuts it (dlib's 5-point landmarks from the bundle's shape predictor, then
dlib's get_face_chip), so our templates sit with those other dlib users hold; FaceMesh serves the
quality measures, not the template. The stored template is the mean of the descriptors of the chips
cut from a few boxes around the face (`shape_predictor.BOX_JITTER`): dlib's points, and so its
template, change with a one-pixel change of its detector's box, and the mean lies nearer to whichever
box dlib's user had than any single box of ours does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from appliance.vision.bundle import Bundle, BundleError
from appliance.vision.dlib_chip import dlib_face_chip
from appliance.vision.runtime import Model, RuntimeOptions
from appliance.vision.shape_predictor import (
    SHAPE_PREDICTOR_ROLE,
    ShapePredictor,
    face_box,
    face_points,
    jittered_boxes,
)
from appliance.vision.types import Face

CHIP_SIZE = 150


@dataclass(frozen=True)
class Comparison:
    similarity: float  # cosine similarity of the two templates
    distance: float  # Euclidean distance (dlib's metric)
    same_person: bool
    threshold: float


class Embedder:
    def __init__(self, bundle: Bundle, options: RuntimeOptions | None = None, *, jitter: bool = True) -> None:
        self.model_name = bundle.embedding
        # Off: one chip per template (about a fifth of the time on a slow device; templates then sit a
        # median 0.035 from dlib's instead of 0.027, both far inside the 0.6 threshold).
        self.jitter = jitter
        self.threshold = bundle.match_threshold
        self._model = Model(bundle.embedding_path, options or RuntimeOptions())
        self.dim = int(self._model.outputs[0]["shape"][-1])
        roles = {m.role for m in bundle.models.values()}
        if SHAPE_PREDICTOR_ROLE not in roles:
            raise BundleError(
                f"model bundle {bundle.root} has no dlib 5-point shape predictor (role '{SHAPE_PREDICTOR_ROLE}'); "
                "rebuild it with `make install` or `python -m firmware.models.build --out DIR`"
            )
        self.predictor = ShapePredictor.load(bundle.path(SHAPE_PREDICTOR_ROLE))

    def embed_chip(self, chip_rgb: np.ndarray) -> np.ndarray:
        """Template of one aligned chip (150x150x3 RGB, uint8 or float 0..255)."""
        if chip_rgb.shape != (CHIP_SIZE, CHIP_SIZE, 3):
            raise ValueError(f"an aligned chip must be {CHIP_SIZE}x{CHIP_SIZE}x3 RGB, got shape {chip_rgb.shape}")
        (out,) = self._model.run(chip_rgb.astype(np.float32)[None])
        return out.reshape(-1).astype(np.float32)

    def chip(self, image_rgb: np.ndarray, face: Face) -> np.ndarray:
        """The 150x150 chip dlib would cut for this detected face (its 5-point landmarks, get_face_chip)."""
        return dlib_face_chip(image_rgb, face_points(self.predictor, image_rgb, face.detection.box))

    def chips(self, image_rgb: np.ndarray, face: Face) -> list[tuple[np.ndarray, int]]:
        """The distinct chips the template averages, each with how many of the jittered boxes gave it
        (neighbouring boxes often give the same five points, and so the same chip)."""
        box, at_box = face_box(self.predictor, image_rgb, face.detection.box)
        counts: dict[bytes, list] = {}
        for jittered in jittered_boxes(box):
            points = at_box if jittered == box else self.predictor(image_rgb, jittered)
            entry = counts.setdefault(points.tobytes(), [points, 0])
            entry[1] += 1
        return [(dlib_face_chip(image_rgb, points), n) for points, n in counts.values()]

    def embed_face(self, image_rgb: np.ndarray, face: Face) -> np.ndarray:
        """Template of one detected face: the one way every part of the product, station capture and
        county search alike, turns a face into a template, so they stay comparable. The mean of the
        descriptors of the jittered boxes' chips (see the module docstring), each chip counted as often
        as boxes gave it."""
        if not self.jitter:
            return self.embed_chip(self.chip(image_rgb, face))
        chips = self.chips(image_rgb, face)
        total = np.zeros(self.dim, np.float64)
        for chip, n in chips:
            total += n * self.embed_chip(chip)
        return (total / sum(n for _, n in chips)).astype(np.float32)

    def compare(self, a: np.ndarray, b: np.ndarray) -> Comparison:
        return compare_templates(a, b, self.threshold)


def compare_templates(a: np.ndarray, b: np.ndarray, threshold: float) -> Comparison:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    distance = float(np.linalg.norm(a - b))
    similarity = float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-12))
    return Comparison(similarity=similarity, distance=distance, same_person=distance <= threshold, threshold=threshold)
