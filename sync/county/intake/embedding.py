"""The per-photo work of an import, run in worker processes: decode, find the face, make the template.

The station's own path (``FaceAnalyzer`` then ``Embedder.embed_face``, from the same model bundle), so an
imported template is comparable with every captured one. Each worker process loads the bundle once
(:func:`init_worker`) and runs single-threaded: the pool, one process per core, is what uses the
machine, and TFLite interpreters are not shared between threads.

A frontal photo must show exactly one face (a second face would make whose template it is a guess);
profiles are stored without a template, as stations store them. A photo that is not a baseline JPEG
(PNG, TIFF, a progressive or 12-bit JPEG) is re-encoded once as baseline JPEG (quality 95): a gallery
record carries JPEG and the ANSI/NIST-ITL export takes only baseline (``JPEGB``), as stations make it.
The record id still comes from the original bytes, so re-running the import finds it.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from appliance.imageio import ImageError, decode_image
from sync.county.intake.sources import ImportItem
from sync.protocol.jpeg import jpeg_info
from sync.protocol.record import MAX_IMAGE_SIDE

JPEG_QUALITY = 95


@dataclass(frozen=True)
class Photo:
    """What a worker returns for one usable photo. ``template`` is little-endian float32 bytes."""

    jpeg: bytes
    width: int
    height: int
    template: bytes | None
    model: str | None


@dataclass(frozen=True)
class PhotoRefused:
    """Why a worker could not use a photo."""

    reason: str


class _Vision:
    def __init__(self, bundle_dir: str | None) -> None:
        from appliance.vision.bundle import Bundle
        from appliance.vision.embedder import Embedder
        from appliance.vision.pipeline import FaceAnalyzer
        from appliance.vision.runtime import RuntimeOptions

        bundle = Bundle.load(bundle_dir)
        options = RuntimeOptions(threads=1)
        self.analyzer = FaceAnalyzer(bundle, options)
        self.embedder = Embedder(bundle, options)


_vision: _Vision | None = None


def init_worker(bundle_dir: str | None) -> None:
    """Pool initializer: load the bundle once per process."""
    global _vision
    cv2.setNumThreads(1)
    _vision = _Vision(bundle_dir)


def read_bytes(item: ImportItem) -> bytes:
    if item.image is not None:
        return item.image
    assert item.path is not None
    return Path(item.path).read_bytes()


def source_sha256(item: ImportItem) -> bytes:
    """SHA-256 of the photo as the source holds it (the record id is derived from it)."""
    return hashlib.sha256(read_bytes(item)).digest()


def _as_jpeg(data: bytes, rgb: np.ndarray) -> tuple[bytes, int, int]:
    info = jpeg_info(data)
    if info is not None and info.baseline:
        return data, info.width, info.height
    ok, encoded = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
    if not ok:
        raise ImageError("cannot re-encode the photo as JPEG")
    return encoded.tobytes(), int(rgb.shape[1]), int(rgb.shape[0])


def embed_item(item: ImportItem) -> Photo | PhotoRefused:
    """The photo of ``item`` as a JPEG with its template (frontal), or why not."""
    assert _vision is not None, "init_worker was not run"
    try:
        data = read_bytes(item)
        rgb = decode_image(data, name=item.source)
        jpeg, width, height = _as_jpeg(data, rgb)
    except OSError as exc:
        return PhotoRefused(f"cannot read the image: {exc.strerror or exc}")
    except ImageError as exc:
        return PhotoRefused(str(exc))
    if max(width, height) > MAX_IMAGE_SIDE:
        return PhotoRefused(f"the image is {width}x{height}, over {MAX_IMAGE_SIDE} pixels a side")
    if item.pose != "frontal":
        return Photo(jpeg, width, height, None, None)
    faces = _vision.analyzer.analyze(rgb, landmarks=True, iris=False)
    if len(faces) != 1:
        return PhotoRefused("no face found in the photo" if not faces else f"{len(faces)} faces in the photo, not one")
    template = np.asarray(_vision.embedder.embed_face(rgb, faces[0]), dtype="<f4")
    if not all(math.isfinite(float(v)) for v in template):
        return PhotoRefused("the template is not finite")
    return Photo(jpeg, width, height, template.tobytes(), _vision.embedder.model_name)
