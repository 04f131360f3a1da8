"""Head pose (yaw, pitch, roll in degrees) from the 468-point face mesh.

Method
------
FaceMesh gives every point in 3D: x and y in image pixels and a relative depth z on the same scale (see
`appliance.vision.landmarks.FaceMesh.run`). We fit a fixed canonical 3D face (`face_template.toml`) to the
observed points with a least-squares similarity transform (Umeyama / Kabsch with scale: rotation R,
scale s, translation t minimising ``|P - (s R T + t)|``) over the *rigid* points only - forehead,
temples, cheekbones and nose, not lips, jaw, eyelids or brows, which move with expression - and read the
angles off R. This is one 3x3 SVD per frame (a few microseconds), so pose is a live gate.

The template is the symmetrised mean shape of the mesh over the shared real portraits (generalised
Procrustes analysis), so yaw and roll are zero exactly when the face's own left-right symmetry plane
faces the camera. Symmetry cannot fix pitch; zero pitch is the mean head orientation in the two
mug-shots of NIST's MEDS-II set (camera at eye level, subject looking ahead as the NIST best practice
prescribes). The generator is `python -m tests.quality.make_template`.

Sign convention (the subject's point of view; the camera frame is x right, y down, z into the scene)
-----------------------------------------------------------------------------------------------------
- **yaw > 0**: the head is turned towards the subject's own *right* (their nose moves towards the
  image's left edge). Guidance for yaw above the limit: "turn the head to their left".
- **pitch > 0**: chin up (the nose points above the camera). Guidance above the limit: "lower the chin".
- **roll > 0**: the head leans towards the subject's *right* shoulder (in the image the head rotates
  counter-clockwise: the subject's right eye, on the image's left, is lower). For a level, frontal face
  roll equals ``-atan2(yL - yR, xL - xR)`` of the eye centres. Rotating the picture counter-clockwise by
  a (``cv2.getRotationMatrix2D(c, a, 1)``) adds a to roll; mirroring the picture negates yaw and roll.

Both positive yaw and positive roll move the face towards the image's left; the rotation is composed as
R = Rz(-roll) . Ry(yaw) . Rx(-pitch), so an in-plane rotation of the image changes roll only.

Limits: the mesh is a 2.5D prediction from one crop; past about 45 degrees of yaw its hidden side is
guessed, so large angles are approximate (the gates work at 5-8 degrees, where it is accurate).
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

TEMPLATE_FILE = Path(__file__).with_name("face_template.toml")


@dataclass(frozen=True)
class FaceTemplate:
    """The canonical frontal face: points (468, 3), unit inter-eye distance, origin at the eye midpoint."""

    points: np.ndarray
    mirror: np.ndarray  # index of each point's left-right counterpart (itself on the midline)
    rigid: np.ndarray  # indices used for the pose fit


@dataclass(frozen=True)
class Pose:
    """Head orientation in degrees (convention in the module docstring) plus the fit behind it."""

    yaw: float
    pitch: float
    roll: float
    scale: float  # template units (inter-eye distances) to image pixels
    rms: float  # fit residual in inter-eye distances: large when the mesh is not a face-like shape
    rotation: np.ndarray  # 3x3, template to camera frame


@lru_cache(maxsize=1)
def load_template(path: Path = TEMPLATE_FILE) -> FaceTemplate:
    """The shipped canonical face (cached: every session shares it)."""
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    points = np.asarray(data["points"], dtype=float)
    mirror = np.asarray(data["mirror"], dtype=int)
    rigid = np.asarray(data["rigid"], dtype=int)
    if points.shape != (468, 3) or mirror.shape != (468,):
        raise ValueError(f"{path}: expected 468 points and 468 mirror indices")
    return FaceTemplate(points=points, mirror=mirror, rigid=rigid)


def similarity_fit(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) minimising |dst - (s R src + t)| over point pairs (Umeyama 1991), R a proper rotation."""
    ms, md = src.mean(axis=0), dst.mean(axis=0)
    a, b = src - ms, dst - md
    u, sv, vt = np.linalg.svd(b.T @ a)
    d = np.ones(3)
    if np.linalg.det(u @ vt) < 0:
        d[2] = -1.0
    rot = u @ np.diag(d) @ vt
    var = float((a**2).sum())
    scale = float((sv * d).sum() / var) if var > 0 else 0.0
    return scale, rot, md - scale * rot @ ms


def angles_from_rotation(rot: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees for R = Rz(-roll) Ry(yaw) Rx(-pitch)."""
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, -float(rot[2, 0])))))
    pitch = -math.degrees(math.atan2(float(rot[2, 1]), float(rot[2, 2])))
    roll = -math.degrees(math.atan2(float(rot[1, 0]), float(rot[0, 0])))
    return yaw, pitch, roll


def rotation_from_angles(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Inverse of `angles_from_rotation` (used by tests and the template tool)."""
    y, p, r = math.radians(yaw), math.radians(-pitch), math.radians(-roll)
    ry = np.array([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = np.array([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def estimate_pose(mesh: np.ndarray, template: FaceTemplate | None = None) -> Pose:
    """Head pose of one face from its (468, 3) mesh in image pixels."""
    template = template or load_template()
    idx = template.rigid
    src = template.points[idx]
    dst = np.asarray(mesh, dtype=float)[idx, :3]
    scale, rot, t = similarity_fit(src, dst)
    resid = dst - (scale * (rot @ src.T)).T - t
    rms = float(np.sqrt((resid**2).sum(axis=1).mean()) / scale) if scale > 0 else float("inf")
    yaw, pitch, roll = angles_from_rotation(rot)
    return Pose(yaw=yaw, pitch=pitch, roll=roll, scale=scale, rms=rms, rotation=rot)
