"""The command line as later tools and checks use it: `analyze`, `embed`, `compare`, `models verify`."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from appliance.vision.bundle import default_bundle_dir

CLI = [sys.executable, "-m", "appliance.cli"]


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, **(env or {})})


def test_analyze_json_fields_and_bad_file_keeps_going(faces_dir: Path, tmp_path: Path) -> None:
    good = faces_dir / "deepface" / "img1.jpg"
    couple = faces_dir / "deepface" / "couple.jpg"
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    proc = run("analyze", str(good), str(broken), str(couple), "--json")
    assert proc.returncode == 2, proc.stderr  # an unreadable image is an input error; the others still print
    assert "broken.jpg" in proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [r["image"] for r in rows] == [str(good), str(broken), str(couple)]
    first = rows[0]
    assert first["faces"] == 1
    x0, y0, x1, y1 = first["face"]["box"]
    assert x1 > x0 and y1 > y0
    assert 0.5 <= first["face"]["score"] <= 1.0
    (rx, ry), (lx, ly) = first["face"]["eyes"]
    assert rx < lx, "subject's right eye is on the image's left in a frontal photo"
    assert x0 < rx < x1 and y0 < ry < y1
    assert "error" in rows[1]
    assert rows[2]["faces"] == 2


def test_analyze_no_face_is_not_an_error(tmp_path: Path) -> None:
    import cv2
    import numpy as np

    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((480, 640, 3), 200, np.uint8))
    proc = run("analyze", str(blank), "--json")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == {"image": str(blank), "faces": 0}


def test_embed_and_compare(faces_dir: Path, tmp_path: Path) -> None:
    a, b, other = (faces_dir / "deepface" / n for n in ("img1.jpg", "img2.jpg", "img3.jpg"))
    proc = run("embed", str(a), "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["dim"] == 128 == len(out["template"])
    assert out["model"].startswith("dlib_resnet_v1")

    same = json.loads(run("compare", str(a), str(b), "--json").stdout)
    diff = json.loads(run("compare", str(a), str(other), "--json").stdout)
    assert same["threshold"] == diff["threshold"] == 0.6
    assert same["same_person"] is True and same["distance"] < 0.6
    assert diff["same_person"] is False and diff["distance"] > same["distance"]
    assert -1.0 <= diff["similarity"] < same["similarity"] <= 1.0


def test_embed_aligned_chip_matches_dlib(shared_data: Path, tmp_path: Path) -> None:
    import cv2
    import numpy as np

    chips = np.load(shared_data / "dlib-parity" / "chips.npy")
    want = np.load(shared_data / "dlib-parity" / "descriptors.npy")
    chip_file = tmp_path / "chip.png"  # PNG: lossless, so the chip reaches the model unchanged
    cv2.imwrite(str(chip_file), cv2.cvtColor(chips[0], cv2.COLOR_RGB2BGR))
    out = json.loads(run("embed", str(chip_file), "--aligned", "--json").stdout)
    assert np.max(np.abs(np.array(out["template"]) - want[0])) < 1e-4

    proc = run("embed", str(faces_dir_file(shared_data)), "--aligned", "--json")
    assert proc.returncode == 2 and "150x150" in proc.stderr


def faces_dir_file(shared_data: Path) -> Path:
    return shared_data / "faces" / "deepface" / "img1.jpg"


def test_unreadable_single_image_errors(tmp_path: Path) -> None:
    missing = tmp_path / "nope.jpg"
    for cmd in (("embed", str(missing)), ("compare", str(missing), str(missing))):
        proc = run(*cmd)
        assert proc.returncode == 2
        assert "nope.jpg" in proc.stderr and "Traceback" not in proc.stderr


def test_tampered_bundle_stops_startup_naming_the_file(tmp_path: Path, faces_dir: Path) -> None:
    bundle = tmp_path / "models"
    shutil.copytree(default_bundle_dir(), bundle)
    victim = bundle / "face_landmark.tflite"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    env = {"BOOKING_STATION_MODELS": str(bundle)}
    proc = run("analyze", str(faces_dir / "deepface" / "img1.jpg"), env=env)
    assert proc.returncode == 2
    assert "face_landmark.tflite" in proc.stderr and "hash mismatch" in proc.stderr
    verify = run("models", "verify", "--json", env=env)
    assert verify.returncode == 2 and json.loads(verify.stdout)["ok"] is False

    victim.unlink()
    proc = run("models", "verify", env=env)
    assert proc.returncode == 2 and "missing" in proc.stderr and "face_landmark.tflite" in proc.stderr


def test_models_verify_lists_every_model() -> None:
    proc = run("models", "verify", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    roles = {m["role"] for m in out["models"]}
    assert {"detector_short", "detector_full", "face_mesh", "iris",
            "embedding_float32", "embedding_float16"} <= roles
    assert out["embedding"] in {m["name"] for m in out["models"]}


@pytest.mark.parametrize("args", [("--help",), ("analyze", "--help"), ("models", "verify", "--help")])
def test_help_explains(args: tuple[str, ...]) -> None:
    proc = run(*args)
    assert proc.returncode == 0 and "Usage:" in proc.stdout
