"""Write `dlib_reference.json`: what dlib itself finds for each image of the shared dlib-parity fixture.

Run with dlib installed, in a scratch environment (dlib is never a dependency of the product or its
tests): ``python tests/vision/make_dlib_reference.py SHARED_DATA_DIR MODELS_DIR`` where MODELS_DIR holds
`shape_predictor_5_face_landmarks.dat` and `mmod_human_face_detector.dat` (the `face_recognition_models`
package's `models` folder). For each image it records dlib's frontal (HOG) detector's largest rectangle
at one upsampling (what `face_recognition` uses by default), the 5-point predictor's points in that
rectangle, and the sha256 of `get_face_chip(image, shape, 150, 0.25)`. Only numbers and hashes are
stored, no pixels.

It also records, per image, which of dlib's detector settings reproduces the shared fixture's chip
(`variants`: the largest rectangle of HOG at upsampling 0 and 1 and of the CNN (MMOD) detector at
upsampling 0, each with the mean absolute difference of its chip from the fixture's chip, 0 when
equal), because the fixture's README does not say which detector made it. The CNN detector takes about
a minute per megapixel without BLAS, so it runs only on images up to `CNN_MAX_PIXELS`.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import dlib  # type: ignore[import-not-found]
import numpy as np
from PIL import Image, ImageOps

OUT = Path(__file__).with_name("dlib_reference.json")
CNN_MAX_PIXELS = 1_000_000


def _rect(r) -> list[int]:
    return [r.left(), r.top(), r.right(), r.bottom()]


def main(data: Path, models: Path) -> None:
    keys = (data / "dlib-parity" / "keys.txt").read_text().split()
    fixture_chips = np.load(data / "dlib-parity" / "chips.npy")
    hog = dlib.get_frontal_face_detector()
    cnn = dlib.cnn_face_detection_model_v1(str(models / "mmod_human_face_detector.dat"))
    predictor = dlib.shape_predictor(str(models / "shape_predictor_5_face_landmarks.dat"))
    detectors = {
        "hog0": lambda image: list(hog(image, 0)),
        "hog1": lambda image: list(hog(image, 1)),
        "cnn0": lambda image: [d.rect for d in cnn(image, 0)] if image[..., 0].size <= CNN_MAX_PIXELS else [],
    }
    rows, variants = {}, {}
    for key, want in zip(keys, fixture_chips, strict=True):
        image = np.array(ImageOps.exif_transpose(Image.open(data / "faces" / key)).convert("RGB"))
        variants[key] = {}
        for name, detect in detectors.items():
            found = sorted(detect(image), key=lambda r: -r.area())
            if not found:
                continue
            rect = found[0]
            shape = predictor(image, rect)
            chip = np.ascontiguousarray(dlib.get_face_chip(image, shape, 150, 0.25))
            diff = float(np.abs(chip.astype(int) - want.astype(int)).mean())
            variants[key][name] = {"box": _rect(rect), "fixture_chip_diff": round(diff, 4)}
            if name == "hog1":
                rows[key] = {
                    "box": _rect(rect),
                    "points": [[p.x, p.y] for p in shape.parts()],
                    "chip_sha256": hashlib.sha256(chip.tobytes()).hexdigest(),
                }
        print(key, variants[key], flush=True)
    meta = {
        "dlib": dlib.__version__,
        "detector": "get_frontal_face_detector, upsample 1, largest face",
        "variants": f"largest face of hog0, hog1 and (images up to {CNN_MAX_PIXELS} pixels) cnn0",
    }
    OUT.write_text(json.dumps({"meta": meta, "images": rows, "variants": variants}, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
