"""Write `dlib_reference.json`: what dlib itself finds for each image of the shared dlib-parity fixture.

Run with dlib installed, in a scratch environment (dlib is never a dependency of the product or its
tests): ``python tests/vision/make_dlib_reference.py SHARED_DATA_DIR SHAPE_PREDICTOR_DAT``. For each image
it records dlib's frontal (HOG) detector's largest rectangle at one upsampling (what `face_recognition`
uses by default), the 5-point predictor's points in that rectangle, and the sha256 of
`get_face_chip(image, shape, 150, 0.25)`. Only numbers and hashes are stored, no pixels.
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


def main(data: Path, predictor_path: Path) -> None:
    keys = (data / "dlib-parity" / "keys.txt").read_text().split()
    detector = dlib.get_frontal_face_detector()
    predictor = dlib.shape_predictor(str(predictor_path))
    rows = {}
    for key in keys:
        image = np.array(ImageOps.exif_transpose(Image.open(data / "faces" / key)).convert("RGB"))
        found = sorted(detector(image, 1), key=lambda r: -r.area())
        if not found:
            continue
        rect = found[0]
        shape = predictor(image, rect)
        chip = np.ascontiguousarray(dlib.get_face_chip(image, shape, 150, 0.25))
        rows[key] = {
            "box": [rect.left(), rect.top(), rect.right(), rect.bottom()],
            "points": [[p.x, p.y] for p in shape.parts()],
            "chip_sha256": hashlib.sha256(chip.tobytes()).hexdigest(),
        }
        print(key, rows[key]["box"], flush=True)
    meta = {"dlib": dlib.__version__, "detector": "get_frontal_face_detector, upsample 1, largest face"}
    OUT.write_text(json.dumps({"meta": meta, "images": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]))
