"""FaceMesh and iris on real images: points where the face is, named indices that mean what they say,
iris centres agreeing with the mesh, and landmarks that follow an in-plane rotation of the head."""

from __future__ import annotations

import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.imageio import read_image
from appliance.vision import landmarks as lm
from appliance.vision.landmarks import mesh_eye_centres
from appliance.vision.types import Detection, Face


@pytest.fixture(scope="module")
def single_faces(labels, analyzer) -> list[tuple[str, Face]]:
    """The largest face, with mesh and iris, of every labelled single-face image (analysed once)."""
    out = []
    for row in labels("single"):
        faces = analyzer.analyze(read_image(row["path"]))
        assert faces, f"no face in {row['path']}"
        out.append((row["file"], faces[0]))
    return out


def _angle(eyes: np.ndarray) -> float:
    d = eyes[1] - eyes[0]
    return math.degrees(math.atan2(d[1], d[0]))


def _ied(face: Face) -> float:
    e = mesh_eye_centres(face.mesh)
    return float(np.linalg.norm(e[1] - e[0]))


def test_mesh_shape_presence_and_extent(single_faces) -> None:
    for name, face in single_faces:
        assert face.mesh.shape == (468, 3) and face.iris.shape == (2, 5, 2) and face.eye_contours.shape == (2, 71, 2)
        assert face.mesh_presence > 0.9, name
        x0, y0, x1, y1 = face.box
        grow = 0.5 * max(x1 - x0, y1 - y0)
        pts = face.mesh[:, :2]
        assert (pts[:, 0] > x0 - grow).all() and (pts[:, 0] < x1 + grow).all(), name
        assert (pts[:, 1] > y0 - grow).all() and (pts[:, 1] < y1 + grow).all(), name
        # Mesh z is scaled like x and y: the face is a few hundred pixels wide, so depth spans tens of px.
        depth = np.ptp(face.mesh[:, 2])
        assert 0.1 * face.detection.width < depth < 2 * face.detection.width, name


def test_named_indices_are_where_their_names_say(single_faces) -> None:
    """Vertical order along the midline and left/right order, in a face-aligned frame (roll removed)."""
    bad = []
    for name, face in single_faces:
        eyes = mesh_eye_centres(face.mesh)
        a = -math.atan2(*(eyes[1] - eyes[0])[::-1])
        rot = np.array([[math.cos(a), -math.sin(a)], [math.sin(a), math.cos(a)]])
        p = face.mesh[:, :2] @ rot.T
        y = p[:, 1]
        x = p[:, 0]
        oval_y = y[list(lm.FACE_OVAL)]
        checks = {
            "forehead above brows": y[lm.FOREHEAD_TOP] < y[lm.RIGHT_EYEBROW_UPPER[2]],
            "brows above eyes": y[lm.RIGHT_EYEBROW_LOWER[2]] < y[lm.RIGHT_EYE_UPPER]
            and y[lm.LEFT_EYEBROW_LOWER[2]] < y[lm.LEFT_EYE_UPPER],
            "upper lids above lower": y[lm.RIGHT_EYE_UPPER] < y[lm.RIGHT_EYE_LOWER]
            and y[lm.LEFT_EYE_UPPER] < y[lm.LEFT_EYE_LOWER],
            "eyes above nose tip": max(y[lm.RIGHT_EYE_LOWER], y[lm.LEFT_EYE_LOWER]) < y[lm.NOSE_TIP],
            "nose tip above nose base": y[lm.NOSE_TIP] < y[lm.NOSE_BASE],
            "nose base above lips": y[lm.NOSE_BASE] < y[lm.UPPER_LIP_OUTER],
            # With the mouth closed the two inner lip points meet and the mesh may cross them slightly,
            # so only require them between the outer lip points.
            "lip order": y[lm.UPPER_LIP_OUTER] < min(y[lm.UPPER_LIP_INNER], y[lm.LOWER_LIP_INNER])
            and max(y[lm.UPPER_LIP_INNER], y[lm.LOWER_LIP_INNER]) < y[lm.LOWER_LIP_OUTER],
            "lips above chin": y[lm.LOWER_LIP_OUTER] < y[lm.CHIN],
            "right side on image left": x[lm.RIGHT_EYE_OUTER] < x[lm.RIGHT_EYE_INNER] < x[lm.LEFT_EYE_INNER]
            < x[lm.LEFT_EYE_OUTER]
            and x[lm.MOUTH_RIGHT] < x[lm.MOUTH_LEFT]
            and x[lm.RIGHT_FACE_EDGE] < x[lm.RIGHT_CHEEK] < x[lm.NOSE_TIP] < x[lm.LEFT_CHEEK] < x[lm.LEFT_FACE_EDGE]
            and x[lm.RIGHT_CHEEKBONE] < x[lm.NOSE_RIGHT_ALA] < x[lm.NOSE_TIP] < x[lm.NOSE_LEFT_ALA]
            < x[lm.LEFT_CHEEKBONE],
            "brows listed from the outer end": x[lm.RIGHT_EYEBROW_UPPER[0]] < x[lm.RIGHT_EYEBROW_UPPER[-1]]
            and x[lm.RIGHT_EYEBROW_LOWER[0]] < x[lm.RIGHT_EYEBROW_LOWER[-1]]
            and x[lm.LEFT_EYEBROW_UPPER[0]] > x[lm.LEFT_EYEBROW_UPPER[-1]]
            and x[lm.LEFT_EYEBROW_LOWER[0]] > x[lm.LEFT_EYEBROW_LOWER[-1]],
            "brow upper edge above lower edge": y[lm.RIGHT_EYEBROW_UPPER[2]] < y[lm.RIGHT_EYEBROW_LOWER[2]]
            and y[lm.LEFT_EYEBROW_UPPER[2]] < y[lm.LEFT_EYEBROW_LOWER[2]],
            # Up to a small margin: with the head turned, a neighbouring oval point can dip lower.
            "chin is the lowest oval point": y[lm.CHIN] >= oval_y.max() - 0.05 * _ied(face),
            "forehead top is the highest oval point": y[lm.FOREHEAD_TOP] <= oval_y.min() + 0.05 * _ied(face),
        }
        bad += [f"{name}: {what}" for what, ok in checks.items() if not ok]
    assert not bad, bad


def test_eyes_inside_box_subjects_right_eye_on_image_left(single_faces) -> None:
    bad = []
    for name, face in single_faces:
        x0, y0, x1, y1 = face.box
        for eyes in (face.eyes, mesh_eye_centres(face.mesh)):
            if not (eyes[0, 0] < eyes[1, 0] and all(x0 < e[0] < x1 and y0 < e[1] < y1 for e in eyes)):
                bad.append(name)
    assert not bad, f"eyes outside the box or mirrored: {bad}"


def test_iris_centres_near_mesh_eye_centres(single_faces, capsys) -> None:
    dists = []
    for name, face in single_faces:
        d = np.linalg.norm(face.iris[:, 0] - mesh_eye_centres(face.mesh), axis=1) / _ied(face)
        dists.append((float(d.max()), name))
        # The iris boundary points surround the centre at a plausible iris radius (~0.1 IED).
        radius = np.linalg.norm(face.iris[:, 1:] - face.iris[:, :1], axis=2).mean() / _ied(face)
        assert 0.04 < radius < 0.2, (name, radius)
    values = np.array([d for d, _ in dists])
    with capsys.disabled():
        print(f"\n[iris] distance to mesh eye centre / IED: median {np.median(values):.3f}, max {values.max():.3f}")
    far = [(name, round(d, 3)) for d, name in dists if d >= 0.1]
    assert not far, f"iris centre 0.1 IED or more from the mesh eye centre: {far}"


def _rotate(image: np.ndarray, degrees: float) -> np.ndarray:
    """Rotate about the centre (positive = counter-clockwise on screen), enlarging the canvas."""
    h, w = image.shape[:2]
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    c, s = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * s + w * c), int(h * c + w * s)
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    return cv2.warpAffine(image, m, (nw, nh), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


@pytest.mark.parametrize("image_name", ["openmpf_meds/meds-aa-S001-01.jpg", "deepface/img12.jpg"])
@pytest.mark.parametrize("degrees", [-20, 20])
def test_in_plane_rotation_is_followed(faces_dir: Path, analyzer, image_name: str, degrees: float) -> None:
    image = read_image(faces_dir / image_name)
    (upright,) = analyzer.analyze(image)
    rotated = analyzer.analyze(_rotate(image, degrees))
    assert len(rotated) == 1
    face = rotated[0]
    # Image y points down, so a counter-clockwise turn on screen lowers the eye-line angle.
    expected_iris = _angle(upright.eyes) - degrees
    expected_mesh = _angle(mesh_eye_centres(upright.mesh)) - degrees
    assert abs(_angle(face.eyes) - expected_iris) < 3.0
    assert abs(_angle(mesh_eye_centres(face.mesh)) - expected_mesh) < 3.0
    assert face.mesh_presence > 0.9


def test_presence_is_low_without_a_face(analyzer) -> None:
    noise = np.random.default_rng(3).integers(0, 256, (480, 640, 3), dtype=np.uint8)
    fake = Detection(
        box=np.array([200.0, 150.0, 400.0, 350.0]),
        score=1.0,
        keypoints=np.array([[250, 220], [350, 220], [300, 270], [300, 310], [210, 230], [390, 230]], float),
    )
    _, presence = analyzer.mesh.run(noise, fake)
    assert presence < 0.5


def test_mesh_eye_centres_order() -> None:
    mesh = np.zeros((468, 3))
    mesh[list(lm.RIGHT_EYE_RING), :2] = (100.0, 50.0)
    mesh[list(lm.LEFT_EYE_RING), :2] = (160.0, 52.0)
    assert np.allclose(mesh_eye_centres(mesh), [[100, 50], [160, 52]])
