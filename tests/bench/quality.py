"""Quality engine speed: the live path per preview frame and the full measure vector per capture.

- live: `QualityEngine.live` on a 640x480 frame made from a real portrait (detect + mesh + iris + the
  profile's live gates), reported as frames per second (1000 / median ms);
- full: `QualityEngine.full` on a real 480x600 mug shot (MEDS-II S001): detection, landmarks and all 29
  measures, milliseconds;
- the measures alone (landmarks given), and `standardize` to SAP 30, milliseconds.
Images come from the shared data (`$BOOKING_SHARED_DATA` or ../shared/data).
"""

from __future__ import annotations

import cv2
import numpy as np

from appliance.imageio import read_image
from appliance.quality import QualityEngine, standardize
from appliance.vision.bundle import Bundle
from appliance.vision.pipeline import FaceAnalyzer
from appliance.vision.runtime import RuntimeOptions
from tests.bench import Result, median_ms
from tests.conftest import shared_data_dir


def preview_frame() -> np.ndarray:
    """A 640x480 frame from a real portrait (img33), face at a booking-desk size (~110 px between eyes)."""
    image = read_image(shared_data_dir() / "faces" / "deepface" / "img33.jpg")  # 2048x2048
    small = cv2.resize(image, (640, 640), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(small[60:540])


def capture() -> np.ndarray:
    return read_image(shared_data_dir() / "faces" / "openmpf_meds" / "meds-aa-S001-01.jpg")  # 480x600


def run(threads: int, repeats: int) -> list[Result]:
    repeats = max(20, repeats)
    analyzer = FaceAnalyzer(Bundle.load(), RuntimeOptions(threads=threads))
    engine = QualityEngine(analyzer, "nist-sap30")
    frame, still = preview_frame(), capture()
    faces = analyzer.analyze(still, landmarks=True, iris=True)
    if not engine.live(frame).faces or not faces:
        raise RuntimeError("benchmark images must contain a face")

    live_ms = median_ms(lambda: engine.live(frame), repeats)
    rows = [
        Result("quality", "live frame 640x480 (detect+mesh+iris+live gates)", threads, 1000.0 / live_ms, unit="fps",
               runs=repeats, note=f"{live_ms:.2f} ms/frame"),
        Result("quality", "full vector 480x600 capture (incl. detection)", threads,
               median_ms(lambda: engine.full(still), repeats), runs=repeats, note="29 measures + gates"),
        Result("quality", "full vector, landmarks given", threads,
               median_ms(lambda: engine.full(still, faces=faces), repeats), runs=repeats),
        Result("quality", "standardize to SAP 30 (480x600 JPEG)", threads,
               median_ms(lambda: standardize(still, faces[0], engine.profile.geometry), repeats), runs=repeats),
    ]
    return rows
