"""A probe photo's template, computed exactly as the station computes a booking's: the same model bundle,
detector, landmarks, alignment and embedding (``Embedder.embed_face``), so a probe and a stored template
are comparable. A probe must show one face: none, or a second face at least half as wide as the largest
(a second person, not a face on a poster far behind), is refused, since searching with the wrong one
would return confident nonsense.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from appliance.imageio import ImageError, read_image
from appliance.vision.bundle import Bundle, BundleError
from appliance.vision.runtime import RuntimeMissing, RuntimeOptions
from sync.county.search.engine import DIM

#: A second face counts when it is at least this share of the largest face's width.
SECOND_FACE_RATIO = 0.5


class ProbeError(ValueError):
    """The probe cannot be searched with; the message names the file and says why (one line)."""


class ProbeSetupError(RuntimeError):
    """The model bundle or runtime is missing: the county server, not the probe, needs fixing."""


class Prober:
    """The vision stack loaded once; :meth:`template` per probe photo."""

    def __init__(self, bundle_dir: str | os.PathLike[str] | None = None, *, threads: int = 1) -> None:
        from appliance.vision.embedder import Embedder
        from appliance.vision.pipeline import FaceAnalyzer

        try:
            self.bundle = Bundle.load(bundle_dir)
            options = RuntimeOptions(threads=threads)
            self.analyzer = FaceAnalyzer(self.bundle, options)
            self.embedder = Embedder(self.bundle, options)
        except (BundleError, RuntimeMissing) as exc:
            raise ProbeSetupError(str(exc)) from None

    @property
    def model(self) -> str:
        return self.bundle.embedding

    def template(self, path: str | os.PathLike[str]) -> np.ndarray:
        """The template of the one face in the photo at ``path``, or :class:`ProbeError`."""
        try:
            image = read_image(path)
        except ImageError as exc:
            raise ProbeError(str(exc)) from None
        return self.template_of(image, Path(path).name)

    def template_of(self, image: np.ndarray, name: str = "probe") -> np.ndarray:
        faces = self.analyzer.analyze(image, landmarks=True, iris=False)
        if not faces:
            raise ProbeError(f"{name}: no face found")
        largest = faces[0].detection.width
        others = [f for f in faces[1:] if f.detection.width >= SECOND_FACE_RATIO * largest]
        if others:
            raise ProbeError(f"{name}: {1 + len(others)} faces found; crop the photo to the one person to search for")
        vector = self.embedder.embed_face(image, faces[0])
        if vector.size != DIM:
            raise ProbeSetupError(f"the bundle's embedding gives {vector.size} values, not {DIM}")
        return vector.astype(np.float32)


def read_template(path: str | os.PathLike[str]) -> np.ndarray:
    """A raw template file: exactly 128 little-endian float32 values (512 bytes), all finite."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ProbeError(f"cannot read the template {path}: {exc.strerror or exc}") from None
    if len(data) != 4 * DIM:
        raise ProbeError(f"{path}: a template is {DIM} little-endian float32 values ({4 * DIM} bytes), "
                         f"this file has {len(data)} bytes")
    vector = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if not np.isfinite(vector).all():
        raise ProbeError(f"{path}: the template holds values that are not finite numbers")
    return vector
