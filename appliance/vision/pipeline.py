"""One entry point for the per-frame vision work: detection, then mesh and iris on the face that matters.

Models are loaded once per analyzer (loading a model costs far more than running it). The default
runs landmarks only on the largest face: every caller (live guidance, auto-capture, the standard crop,
the template) is about the subject in front of the camera, and one face's mesh + iris is what the
per-frame budget allows. The other faces still come back as detections, which is all the
"single face present" measure needs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from appliance.vision.bundle import Bundle
from appliance.vision.detector import FaceDetector
from appliance.vision.landmarks import FaceMesh, Iris
from appliance.vision.runtime import RuntimeOptions
from appliance.vision.types import Face


class FaceAnalyzer:
    """Faces in an RGB frame, largest first, with mesh and iris landmarks where asked for.

    Not thread-safe (TFLite interpreters are not); give each thread its own analyzer.
    """

    def __init__(self, bundle: Bundle, options: RuntimeOptions = RuntimeOptions()) -> None:
        self._init(
            bundle.path("detector_short"),
            bundle.path("detector_full"),
            bundle.path("face_mesh"),
            bundle.path("iris"),
            options,
        )

    @classmethod
    def from_paths(
        cls,
        short: Path | str,
        full: Path | str,
        mesh: Path | str,
        iris: Path | str,
        options: RuntimeOptions = RuntimeOptions(),
    ) -> FaceAnalyzer:
        """An analyzer from model files directly (tests, tools), without a verified bundle."""
        self = cls.__new__(cls)
        self._init(short, full, mesh, iris, options)
        return self

    def _init(
        self, short: Path | str, full: Path | str, mesh: Path | str, iris: Path | str, options: RuntimeOptions
    ) -> None:
        self.options = options
        self.detector = FaceDetector(short, full, options)
        self.mesh = FaceMesh(mesh, options)
        self.iris = Iris(iris, options)

    def analyze(
        self,
        image_rgb: np.ndarray,
        landmarks: bool = True,
        iris: bool = True,
        max_faces: int | None = None,
        all_landmarks: bool = False,
    ) -> list[Face]:
        """Detect faces (largest first, at most `max_faces`), then landmarks.

        `landmarks` runs FaceMesh on the largest face (on every returned face with `all_landmarks`);
        `iris` additionally runs the iris model on each face that has a mesh. Iris needs the mesh, so
        `iris=True` with `landmarks=False` runs neither.
        """
        detections = self.detector.detect(image_rgb)
        if max_faces is not None:
            detections = detections[: max(0, max_faces)]
        faces = [Face(detection=d) for d in detections]
        if not landmarks:
            return faces
        for face in faces if all_landmarks else faces[:1]:
            face.mesh, face.mesh_presence = self.mesh.run(image_rgb, face.detection)
            if iris:
                face.iris, face.eye_contours = self.iris.run(image_rgb, face.mesh)
        return faces
