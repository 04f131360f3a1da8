"""`booking-station analyze --profile` and `booking-station standardize` as tools and people use them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

CLI = [sys.executable, "-m", "appliance.cli"]


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=180, env=dict(os.environ))


def test_analyze_without_profile_is_unchanged(faces_dir: Path) -> None:
    good = faces_dir / "deepface" / "img1.jpg"
    out = json.loads(run("analyze", str(good), "--json").stdout)
    assert set(out) == {"image", "faces", "face"}


def test_analyze_with_profile_json(faces_dir: Path, tmp_path: Path) -> None:
    good = faces_dir / "openmpf_meds" / "meds-aa-S029-01.jpg"
    smile = faces_dir / "deepface" / "img1.jpg"
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((480, 640, 3), 200, np.uint8))
    proc = run("analyze", str(good), str(smile), str(blank), "--profile", "nist-sap30", "--json")
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    first, second, third = rows
    assert set(first) == {"image", "faces", "face", "profile", "passed", "measures", "guidance"}
    assert first["profile"] == "nist-sap30" and first["faces"] == 1
    assert first["measures"]["head_pose_yaw"]["passed"] in (True, False)
    assert "passed" not in first["measures"]["unified_quality_score"]
    assert second["passed"] is False
    assert {"mouth_open", "not_neutral"} <= {g["code"] for g in second["guidance"]}
    assert third["faces"] == 0 and third["passed"] is False
    assert third["guidance"][0]["code"] == "no_face"
    assert third["measures"]["sharpness"] == {"raw": None, "score": None, "reason": "no face found", "passed": False}


def test_analyze_text_and_county_folder(faces_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "nist-sap30.toml").write_text('[messages]\nchin_up = "Chin up, please."\n')
    image = faces_dir / "deepface" / "img2.jpg"  # chin down about 12 degrees
    proc = run("analyze", str(image), "--profile", "nist-sap30", "--profile-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "profile nist-sap30: FAILED" in proc.stdout and "Chin up, please. [chin_up]" in proc.stdout
    assert "head_pose_pitch" in proc.stdout


def test_analyze_unknown_profile_is_a_setup_error(faces_dir: Path) -> None:
    proc = run("analyze", str(faces_dir / "deepface" / "img2.jpg"), "--profile", "sap99")
    assert proc.returncode == 2 and "unknown profile 'sap99'" in proc.stderr and "Traceback" not in proc.stderr


def test_standardize_writes_a_clean_jpeg(faces_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "std.jpg"
    proc = run("standardize", str(faces_dir / "openmpf_meds" / "meds-aa-S001-01-exif-rotation.jpg"),
               "--profile", "nist-sap30", "-o", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert (info["width"], info["height"], info["profile"], info["sap"]) == (480, 600, "nist-sap30", 30)
    assert 0.5 <= info["eye_line_from_bottom"] <= 0.6 and info["ied"] >= 90
    data = out.read_bytes()
    assert data[:4] == b"\xff\xd8\xff\xe0" and b"Exif" not in data
    assert cv2.imread(str(out)).shape == (600, 480, 3)
    text = run("standardize", str(faces_dir / "openmpf_meds" / "meds-aa-S001-01.jpg"), "--profile", "nist-sap30",
               "-o", str(tmp_path / "b.jpg"))
    assert text.returncode == 0 and "480x600" in text.stdout and "between the eyes" in text.stdout


def test_standardize_refuses_small_source(faces_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "std.jpg"
    proc = run("standardize", str(faces_dir / "deepface" / "img14.jpg"), "--profile", "nist-sap30", "-o", str(out))
    assert proc.returncode == 2  # the source is the caller's input to fix
    assert "too few pixels" in proc.stderr and "Traceback" not in proc.stderr
    assert not out.exists()


def test_standardize_no_face(tmp_path: Path) -> None:
    blank = tmp_path / "wall.png"
    cv2.imwrite(str(blank), np.full((480, 640, 3), 200, np.uint8))
    proc = run("standardize", str(blank), "--profile", "icao", "-o", str(tmp_path / "x.jpg"))
    assert proc.returncode == 2 and "no face found" in proc.stderr
