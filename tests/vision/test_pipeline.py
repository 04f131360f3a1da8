"""FaceAnalyzer: what runs on which face, and construction from a verified bundle."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from appliance.imageio import read_image
from appliance.vision.bundle import MANIFEST, Bundle, sha256_file
from appliance.vision.pipeline import FaceAnalyzer


@pytest.fixture(scope="module")
def couple(faces_dir: Path) -> np.ndarray:
    return read_image(faces_dir / "deepface" / "couple.jpg")


def test_landmarks_on_the_largest_face_only_by_default(analyzer, couple: np.ndarray) -> None:
    faces = analyzer.analyze(couple)
    assert len(faces) == 2 and faces[0].detection.area >= faces[1].detection.area
    assert faces[0].mesh is not None and faces[0].iris is not None and faces[0].eye_contours is not None
    assert faces[1].mesh is None and faces[1].iris is None
    # Without a mesh, eyes fall back to the detector keypoints.
    assert faces[1].eyes.shape == (2, 2)


def test_all_landmarks_max_faces_and_switches(analyzer, couple: np.ndarray) -> None:
    every = analyzer.analyze(couple, all_landmarks=True)
    assert all(f.mesh is not None and f.iris is not None for f in every)
    assert len(analyzer.analyze(couple, max_faces=1)) == 1
    bare = analyzer.analyze(couple, landmarks=False)
    assert len(bare) == 2 and all(f.mesh is None for f in bare)
    no_iris = analyzer.analyze(couple, iris=False)
    assert no_iris[0].mesh is not None and no_iris[0].iris is None


def test_no_face_gives_empty_list(analyzer) -> None:
    assert analyzer.analyze(np.full((480, 640, 3), 128, np.uint8)) == []


def _fake_bundle(root: Path, model_paths: dict[str, Path]) -> Path:
    """A minimal valid bundle of the package's models (the real builder lives in firmware.models)."""
    root.mkdir()
    (root / "embedding.tflite").write_bytes(b"placeholder: not loaded by the analyzer")
    for src in model_paths.values():
        shutil.copyfile(src, root / src.name)
    entries = {**model_paths, "embedding": root / "embedding.tflite"}
    lines = ["[bundle]", "format = 1", 'embedding = "embedding"', ""]
    for role, src in entries.items():
        dst = root / src.name
        lines += [f"[models.{role}]", f'role = "{role}"', f'file = "{dst.name}"', f'sha256 = "{sha256_file(dst)}"', ""]
    (root / MANIFEST).write_text("\n".join(lines))
    return root


def test_constructs_from_a_bundle(tmp_path: Path, model_paths: dict[str, Path], couple: np.ndarray) -> None:
    bundle = Bundle.load(_fake_bundle(tmp_path / "bundle", model_paths))
    faces = FaceAnalyzer(bundle).analyze(couple)
    assert len(faces) == 2 and faces[0].mesh is not None
