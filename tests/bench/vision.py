"""Per-stage latency of the vision core: detect, landmarks, iris, align, embed (and dlib itself if installed)."""

from __future__ import annotations

import numpy as np

from appliance.vision.align import face_chip, five_points
from appliance.vision.bundle import Bundle
from appliance.vision.dlib_chip import dlib_face_chip
from appliance.vision.embedder import Embedder
from appliance.vision.pipeline import FaceAnalyzer
from appliance.vision.runtime import RuntimeOptions
from appliance.vision.shape_predictor import BOX_JITTER, face_points
from tests.bench import Result, median_ms


def _frame() -> np.ndarray:
    """A real 640x480 frame: the astronaut portrait, letterboxed the way a preview stream would be."""
    import cv2
    from skimage import data

    img = data.astronaut()  # 512x512 RGB
    frame = np.zeros((480, 640, 3), np.uint8)
    small = cv2.resize(img, (480, 480), interpolation=cv2.INTER_AREA)
    frame[:, 80:560] = small
    return frame


def run(threads: int, repeats: int) -> list[Result]:
    bundle = Bundle.load()
    options = RuntimeOptions(threads=threads)
    analyzer = FaceAnalyzer(bundle, options)
    embedder = Embedder(bundle, options)
    frame = _frame()
    faces = analyzer.analyze(frame, landmarks=True, iris=True)
    face = faces[0]
    detector, mesh, iris = analyzer.detector, analyzer.mesh, analyzer.iris
    chip = face_chip(frame, five_points(face))

    def stage(name: str, fn, note: str = "") -> Result:
        return Result("vision", name, threads, median_ms(fn, repeats), runs=repeats, note=note)

    rows = [
        stage("detect (640x480, short range)", lambda: detector.detect(frame)),
        stage("landmarks (FaceMesh 468)", lambda: mesh.run(frame, face.detection)),
        stage("iris (both eyes)", lambda: iris.run(frame, face.mesh)),
        stage("align (150x150 chip)", lambda: embedder.chip(frame, face),
              "template path: dlib 5-point predictor (box + 2 refits) and dlib's chip"),
        stage(f"embed ({bundle.embedding})", lambda: embedder.embed_chip(chip)),
        stage("live frame total (detect+mesh+iris)", lambda: analyzer.analyze(frame, landmarks=True, iris=True)),
    ]
    fp16 = Bundle.load()
    fp16.embedding = "dlib_resnet_v1_float16"
    emb16 = Embedder(fp16, options)
    rows.append(stage("embed (dlib_resnet_v1_float16)", lambda: emb16.embed_chip(chip)))
    rows.append(_dlib_ratio(threads, repeats, chip, rows[4].median))
    # The alignment's parts, beside the FaceMesh-point chip it replaced (the mesh itself runs anyway,
    # for the quality measures, so the difference of these rows is the added cost per face).
    box = face.detection.box
    points = face_points(embedder.predictor, frame, box)
    rows += [
        stage("align: FaceMesh points + bilinear chip (before)", lambda: face_chip(frame, five_points(face))),
        stage("align: dlib predictor points only", lambda: face_points(embedder.predictor, frame, box)),
        stage("align: dlib chip only", lambda: dlib_face_chip(frame, points)),
        # The stored template (per capture, never per preview frame) beside one box's chip and descriptor.
        stage("template: one box (align + embed)", lambda: embedder.embed_chip(embedder.chip(frame, face)),
              "before: the chip of the BlazeFace-derived box alone"),
        stage(f"template: mean over {len(BOX_JITTER)} jittered boxes", lambda: embedder.embed_face(frame, face),
              f"Embedder.embed_face; {len(embedder.chips(frame, face))} distinct chips on this frame"),
    ]
    return [r for r in rows if r is not None]


def _dlib_ratio(threads: int, repeats: int, chip: np.ndarray, ours_ms: float) -> Result | None:
    """dlib's own descriptor on the same chip, for the speed ratio (needs `pip install dlib-bin`)."""
    try:
        import dlib
    except ImportError:
        return None
    from firmware.models.build import DLIB_FILE, DLIB_PACKAGE, packaged_file

    dat, _ = packaged_file(DLIB_PACKAGE, DLIB_FILE)
    net = dlib.face_recognition_model_v1(str(dat))
    ms = median_ms(lambda: net.compute_face_descriptor(chip), max(5, repeats // 2))
    return Result("vision", f"embed (dlib {dlib.__version__} itself)", threads, ms, runs=max(5, repeats // 2),
                  note=f"ours is {ms / ours_ms:.1f}x faster; dlib threads not set")
