"""FaceMesh (468 points) and iris landmarks from MediaPipe's models, plus the mesh indices we rely on.

Both models see a square crop cut out of the frame by an affine warp (`resample.warp_affine`), rotated
so the face (or eye) is level, because that is how MediaPipe trained them: an unrotated crop of a tilted
head costs accuracy exactly where the quality measures (eye opening, roll) need it. Results are mapped back through the
inverse of the same affine, so every point is in image pixels (OpenCV convention: (column, row) of a
pixel centre, like `appliance.vision.detector`).

Index constants name the mesh points the quality engine, alignment and guidance use. "Right" and
"left" are always the subject's: in a frontal photo the subject's right eye is on the image's left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from appliance.vision.resample import invert_affine, warp_affine
from appliance.vision.runtime import Model, RuntimeOptions
from appliance.vision.types import KP_LEFT_EYE, KP_RIGHT_EYE, Detection

# ---------------------------------------------------------------------------------------------------
# FaceMesh indices (MediaPipe canonical face model, 468 points).

# Eye corners. dlib's 5-point alignment and the iris crops use these.
RIGHT_EYE_OUTER = 33  # lateral canthus (exocanthion) of the subject's right eye
RIGHT_EYE_INNER = 133  # medial canthus (endocanthion) of the right eye
LEFT_EYE_INNER = 362
LEFT_EYE_OUTER = 263

# Eyelids: upper/lower pairs at the middle of each eye, for eye-opening measures (0x4d). The pairs are
# vertically opposite each other so their distance is the eye opening there.
RIGHT_EYE_UPPER = 159
RIGHT_EYE_LOWER = 145
LEFT_EYE_UPPER = 386
LEFT_EYE_LOWER = 374
# Three opposing pairs per eye (outer, middle, inner third) for an eye-aspect-ratio style measure.
RIGHT_EYELID_PAIRS = ((160, 144), (159, 145), (158, 153))
LEFT_EYELID_PAIRS = ((387, 373), (386, 374), (385, 380))

# Full eye contours (16 points each, closed ring from the outer corner along the lower lid and back
# along the upper lid). Their mean is the mesh eye centre; they also bound the eye regions for the
# eyes-visible and glare measures.
RIGHT_EYE_RING = (33, 7, 163, 144, 145, 153, 154, 155, 133, 173, 157, 158, 159, 160, 161, 246)
LEFT_EYE_RING = (263, 249, 390, 373, 374, 380, 381, 382, 362, 398, 384, 385, 386, 387, 388, 466)

# Eyebrows, from the outer end inwards: upper edge, then lower edge.
RIGHT_EYEBROW_UPPER = (70, 63, 105, 66, 107)
RIGHT_EYEBROW_LOWER = (46, 53, 52, 65, 55)
LEFT_EYEBROW_UPPER = (300, 293, 334, 296, 336)
LEFT_EYEBROW_LOWER = (276, 283, 282, 295, 285)

# Lips on the midline, for mouth-closed (0x4e) and expression measures.
UPPER_LIP_OUTER = 0  # top of the upper lip (labrale superius)
UPPER_LIP_INNER = 13  # lower edge of the upper lip
LOWER_LIP_INNER = 14  # upper edge of the lower lip
LOWER_LIP_OUTER = 17  # bottom of the lower lip (labrale inferius)
MOUTH_RIGHT = 61  # outer mouth corner (cheilion), subject's right
MOUTH_LEFT = 291
MOUTH_INNER_RIGHT = 78  # where the inner lip lines meet
MOUTH_INNER_LEFT = 308
# Outer and inner lip contours (closed rings), for mouth occlusion masks.
LIPS_OUTER = (61, 146, 91, 181, 84, 17, 314, 405, 321, 375, 291, 409, 270, 269, 267, 0, 37, 39, 40, 185)
LIPS_INNER = (78, 95, 88, 178, 87, 14, 317, 402, 318, 324, 308, 415, 310, 311, 312, 13, 82, 81, 80, 191)

# Nose.
NOSE_TIP = 1  # pronasale, the most forward point: head-pose and yaw symmetry
NOSE_BASE = 2  # subnasale, where the columella meets the upper lip: dlib's fifth alignment point
NOSE_BRIDGE = 168  # between the eyes (near sellion), top of the nose line
NOSE_RIGHT_ALA = 129  # outer edges of the nostrils
NOSE_LEFT_ALA = 358

# Face outline.
CHIN = 152  # menton/gnathion, lowest point of the chin: eye-to-chin distance, head size (0x53)
FOREHEAD_TOP = 10  # top of the mesh on the midline (upper forehead, below the hairline)
RIGHT_FACE_EDGE = 234  # widest points of the face outline at eye level (near the tragus side)
LEFT_FACE_EDGE = 454
RIGHT_CHEEK = 50  # centre of each cheek (malar region), for illumination-uniformity patches
LEFT_CHEEK = 280
RIGHT_CHEEKBONE = 116
LEFT_CHEEKBONE = 345
# The face oval (36 points, clockwise from the forehead top): the face region for luminance, exposure,
# sharpness and colour measures, and the occlusion reference.
FACE_OVAL = (
    10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377,
    152, 148, 176, 149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109,
)  # fmt: skip

NUM_MESH_POINTS = 468
MESH_INPUT = 192
IRIS_INPUT = 64
MESH_ROI_SCALE = 1.5  # ROI side = 1.5 x the longer detection box side
IRIS_ROI_SCALE = 2.3  # eye crop side = 2.3 x the eye-corner distance
NUM_IRIS_POINTS = 5  # centre, then four points on the iris boundary
NUM_EYE_CONTOUR_POINTS = 71  # eye contour and brow points of the iris model


def mesh_eye_centres(mesh: np.ndarray) -> np.ndarray:
    """(2, 2) eye centres from the mesh, subject's right eye first: the mean of each 16-point eye ring.

    The mean of the ring sits at the centre of the visible eye opening, which is close to the pupil
    when the subject looks ahead; it is the fallback when iris landmarks are not run.
    """
    pts = np.asarray(mesh)[:, :2].astype(float)
    return np.stack([pts[list(RIGHT_EYE_RING)].mean(axis=0), pts[list(LEFT_EYE_RING)].mean(axis=0)])


@dataclass(frozen=True)
class Roi:
    """A square region of the image: centre (pixel coords), side (pixels), rotation (radians).

    The rotation is the direction of the crop's x axis in the image (y down), so a crop of a head
    tilted by `angle` comes out level.
    """

    centre: tuple[float, float]
    side: float
    angle: float

    def to_crop(self, size: int) -> np.ndarray:
        """2x3 affine taking image pixel coordinates to crop pixel coordinates (for `warp_affine`).

        The crop's edges are the square's edges, so crop pixel u covers [u, u + 1) * side / size along
        the square; with pixel centres at integers both ways, the square's centre is crop pixel
        (size - 1) / 2.
        """
        k = size / self.side
        c, s = math.cos(self.angle), math.sin(self.angle)
        rot = np.array([[c, s], [-s, c]]) * k  # inverse rotation, scaled
        centre = np.asarray(self.centre, dtype=float)
        offset = (size - 1) / 2.0 - rot @ centre
        return np.hstack([rot, offset[:, None]])

    def from_crop(self, size: int) -> np.ndarray:
        """2x3 affine taking crop pixel coordinates back to the image."""
        return invert_affine(self.to_crop(size))

    def crop(self, image: np.ndarray, size: int) -> np.ndarray:
        """The ROI resampled to size x size (bilinear, edge pixels replicated as MediaPipe does)."""
        return warp_affine(image, self.to_crop(size), (size, size), border="replicate")


def _apply(affine: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ affine[:, :2].T + affine[:, 2]


def face_roi(detection: Detection) -> Roi:
    """FaceMesh region for a detection: box centre, 1.5 x the longer side, eye line levelled."""
    box = np.asarray(detection.box, dtype=float)
    right, left = detection.keypoints[KP_RIGHT_EYE], detection.keypoints[KP_LEFT_EYE]
    angle = math.atan2(float(left[1] - right[1]), float(left[0] - right[0]))
    side = MESH_ROI_SCALE * max(box[2] - box[0], box[3] - box[1])
    return Roi(centre=(float(box[0] + box[2]) / 2, float(box[1] + box[3]) / 2), side=float(side), angle=angle)


def eye_roi(mesh: np.ndarray, first: int, second: int) -> Roi:
    """Iris-model region for one eye: centred between two corners (image-left one first), 2.3 x apart."""
    a, b = np.asarray(mesh[first, :2], dtype=float), np.asarray(mesh[second, :2], dtype=float)
    d = b - a
    return Roi(
        centre=(float(a[0] + b[0]) / 2, float(a[1] + b[1]) / 2),
        side=float(IRIS_ROI_SCALE * max(np.hypot(d[0], d[1]), 1.0)),
        angle=math.atan2(float(d[1]), float(d[0])),
    )


def _output_index(model: Model, size: int) -> int:
    for i, detail in enumerate(model.outputs):
        if int(np.prod(detail["shape"])) == size:
            return i
    raise ValueError(f"{model.path}: no output with {size} values (outputs: {[d['shape'] for d in model.outputs]})")


def _input_tensor(crop: np.ndarray) -> np.ndarray:
    x = crop.astype(np.float32)
    x *= 1.0 / 255.0
    return x[None]


class FaceMesh:
    """468 face landmarks for one detection (MediaPipe `face_landmark.tflite`, 192x192 input)."""

    def __init__(self, path: Path | str, options: RuntimeOptions = RuntimeOptions()) -> None:
        self.model = Model(path, options)
        if self.model.input_shape[1:3] != (MESH_INPUT, MESH_INPUT):
            raise ValueError(f"{path}: input {self.model.input_shape} is not a {MESH_INPUT}x{MESH_INPUT} face mesh")
        self._mesh_out = _output_index(self.model, NUM_MESH_POINTS * 3)
        self._presence_out = _output_index(self.model, 1)

    def run(self, image_rgb: np.ndarray, detection: Detection) -> tuple[np.ndarray, float]:
        """(mesh (468, 3) in image pixels, face-presence probability) for one detection.

        z is the model's relative depth (negative towards the camera) scaled by the same factor as x
        and y, so it is in image pixels too. A presence below about 0.5 means the crop holds no face
        (a false detection or a face turned away); callers decide what to do with it.
        """
        roi = face_roi(detection)
        outputs = self.model.run(_input_tensor(roi.crop(image_rgb, MESH_INPUT)))
        raw = outputs[self._mesh_out].reshape(NUM_MESH_POINTS, 3).astype(np.float64)
        logit = float(outputs[self._presence_out].reshape(-1)[0])
        mesh = np.empty_like(raw)
        # Model outputs are in continuous crop coordinates (0 = crop edge); pixel centres are at +0.5.
        mesh[:, :2] = _apply(roi.from_crop(MESH_INPUT), raw[:, :2] - 0.5)
        mesh[:, 2] = raw[:, 2] * (roi.side / MESH_INPUT)
        presence = 1.0 / (1.0 + math.exp(-max(-100.0, min(100.0, logit))))
        return mesh, presence


class Iris:
    """Iris and eye-contour landmarks for both eyes (MediaPipe `iris_landmark.tflite`, 64x64 input).

    The model was trained on one eye's appearance, so the subject's left eye is mirrored into it and the
    result mirrored back, as MediaPipe does.
    """

    def __init__(self, path: Path | str, options: RuntimeOptions = RuntimeOptions()) -> None:
        self.model = Model(path, options)
        if self.model.input_shape[1:3] != (IRIS_INPUT, IRIS_INPUT):
            raise ValueError(f"{path}: input {self.model.input_shape} is not a {IRIS_INPUT}x{IRIS_INPUT} iris model")
        self._contour_out = _output_index(self.model, NUM_EYE_CONTOUR_POINTS * 3)
        self._iris_out = _output_index(self.model, NUM_IRIS_POINTS * 3)

    def run(self, image_rgb: np.ndarray, mesh: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(iris (2, 5, 2), contours (2, 71, 2)) in image pixels; index 0 is the subject's right eye.

        iris[e, 0] is the iris centre, iris[e, 1:] four points on its boundary.
        """
        iris = np.empty((2, NUM_IRIS_POINTS, 2))
        contours = np.empty((2, NUM_EYE_CONTOUR_POINTS, 2))
        for eye, (first, second, mirror) in enumerate(
            ((RIGHT_EYE_OUTER, RIGHT_EYE_INNER, False), (LEFT_EYE_INNER, LEFT_EYE_OUTER, True))
        ):
            roi = eye_roi(mesh, first, second)
            crop = roi.crop(image_rgb, IRIS_INPUT)
            if mirror:
                crop = crop[:, ::-1]
            outputs = self.model.run(_input_tensor(crop))
            eye_pts = outputs[self._contour_out].reshape(NUM_EYE_CONTOUR_POINTS, 3)[:, :2].astype(np.float64)
            iris_pts = outputs[self._iris_out].reshape(NUM_IRIS_POINTS, 3)[:, :2].astype(np.float64)
            pts = np.concatenate([iris_pts, eye_pts]) - 0.5  # continuous -> pixel-centre crop coords
            if mirror:
                pts[:, 0] = (IRIS_INPUT - 1) - pts[:, 0]
            pts = _apply(roi.from_crop(IRIS_INPUT), pts)
            iris[eye] = pts[:NUM_IRIS_POINTS]
            contours[eye] = pts[NUM_IRIS_POINTS:]
        return iris, contours
