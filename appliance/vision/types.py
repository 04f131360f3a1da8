"""Records the vision stages hand to each other. All coordinates are image pixels (x right, y down)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

# BlazeFace keypoint order (MediaPipe): the subject's right eye comes first (it is on the image's left
# in a frontal photo).
KP_RIGHT_EYE, KP_LEFT_EYE, KP_NOSE_TIP, KP_MOUTH, KP_RIGHT_TRAGION, KP_LEFT_TRAGION = range(6)


@dataclass
class Detection:
    """One face found by BlazeFace."""

    box: np.ndarray  # (4,) x0, y0, x1, y1
    score: float
    keypoints: np.ndarray  # (6, 2), order above
    model: str = "short"  # which detector found it: "short" or "full"

    @property
    def width(self) -> float:
        return float(self.box[2] - self.box[0])

    @property
    def height(self) -> float:
        return float(self.box[3] - self.box[1])

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)


@dataclass
class Face:
    """A detected face with whatever landmark stages have run on it."""

    detection: Detection
    mesh: np.ndarray | None = None  # (468, 3) FaceMesh points; z is relative depth in pixel units
    mesh_presence: float | None = None  # FaceMesh face-presence probability
    iris: np.ndarray | None = None  # (2, 5, 2): [subject's right, left] x [centre, 4 boundary points]
    eye_contours: np.ndarray | None = None  # (2, 71, 2) iris-model eye contour and brow points
    extra: dict = field(default_factory=dict)

    @property
    def eyes(self) -> np.ndarray:
        """(2, 2) eye centres, subject's right eye first: iris centres when known, else mesh, else detector."""
        if self.iris is not None:
            return self.iris[:, 0, :].astype(float)
        if self.mesh is not None:
            from appliance.vision.landmarks import mesh_eye_centres

            return mesh_eye_centres(self.mesh)
        return self.detection.keypoints[[KP_RIGHT_EYE, KP_LEFT_EYE]].astype(float)

    @property
    def box(self) -> np.ndarray:
        return self.detection.box

    @property
    def score(self) -> float:
        return self.detection.score
