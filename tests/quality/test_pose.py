"""Head pose from the mesh: known rotations are recovered, in-plane rotation moves roll only, mirroring
flips yaw and roll, and the guidance direction follows the sign convention (see appliance/quality/pose.py)."""

from __future__ import annotations

import numpy as np
import pytest

from appliance.quality.pose import estimate_pose, load_template, rotation_from_angles
from tests.quality import synth

ROLL_IMAGES = ("meds-aa-S029-01.jpg", "meds-aa-S001-01.jpg", "img2.jpg", "img33.jpg", "img47.jpg")


@pytest.mark.parametrize("yaw,pitch,roll", [(0, 0, 0), (10, 0, 0), (0, -8, 0), (0, 0, 15), (-20, 12, -6)])
def test_template_rotations_are_recovered(yaw: float, pitch: float, roll: float) -> None:
    t = load_template()
    rot = rotation_from_angles(yaw, pitch, roll)
    mesh = (200.0 * (rot @ t.points.T)).T + np.array([320.0, 240.0, 0.0])
    pose = estimate_pose(mesh)
    assert (pose.yaw, pose.pitch, pose.roll) == pytest.approx((yaw, pitch, roll), abs=1e-6)
    assert pose.rms < 1e-9


def test_sign_convention_on_the_template() -> None:
    """yaw > 0 moves the nose to the image's left; pitch > 0 moves it up; roll > 0 lowers the image-left eye."""
    t = load_template()
    nose = 1
    centre = t.points[nose].copy()
    assert (rotation_from_angles(10, 0, 0) @ centre)[0] < centre[0]
    assert (rotation_from_angles(0, 10, 0) @ centre)[1] < centre[1]
    right_eye = t.points[33]
    left_eye = t.points[263]
    r = rotation_from_angles(0, 0, 10)
    assert (r @ right_eye)[1] > (r @ left_eye)[1]


@pytest.mark.parametrize("name", ROLL_IMAGES)
def test_in_plane_rotation_changes_roll_only(name: str, load, face_of) -> None:
    image = load(name)
    face = face_of(image)
    base = estimate_pose(face.mesh)
    for degrees in (-20, -10, -5, 5, 10, 20):
        pose = estimate_pose(face_of(synth.rotate(image, face, degrees)).mesh)
        # cv2 rotates counter-clockwise for positive angles: the head leans to the subject's right.
        assert pose.roll - base.roll == pytest.approx(degrees, abs=1.5), f"{name} rotated {degrees}"
        assert abs(pose.yaw - base.yaw) < 3.5 and abs(pose.pitch - base.pitch) < 3.5


@pytest.mark.parametrize("name", ROLL_IMAGES + ("img34.jpg", "img4.jpg", "img58.jpg"))
def test_mirroring_flips_yaw_and_roll(name: str, load, face_of) -> None:
    image = load(name)
    pose = estimate_pose(face_of(image).mesh)
    mirrored = estimate_pose(face_of(synth.mirror(image)).mesh)
    # The mesh model is not exactly mirror-symmetric: a few degrees of disagreement is normal.
    assert mirrored.yaw == pytest.approx(-pose.yaw, abs=4.0)
    assert mirrored.roll == pytest.approx(-pose.roll, abs=3.0)
    assert mirrored.pitch == pytest.approx(pose.pitch, abs=4.0)


def test_yaw_sign_on_a_turned_head(load, face_of) -> None:
    """img34 shows the head turned to the subject's right (nose towards the image's left): yaw > 0."""
    image = load("img34.jpg")
    assert estimate_pose(face_of(image).mesh).yaw > 10
    assert estimate_pose(face_of(synth.mirror(image)).mesh).yaw < -10


def test_roll_matches_the_eye_line(load, face_of) -> None:
    face = face_of(load("img11.jpg"))  # visibly tilted head
    (rx, ry), (lx, ly) = face.eyes
    eye_line = -np.degrees(np.arctan2(ly - ry, lx - rx))
    assert estimate_pose(face.mesh).roll == pytest.approx(eye_line, abs=2.5)
    assert eye_line < -10


def test_guidance_direction_follows_the_pose(load, engine) -> None:
    turned = load("img34.jpg")  # turned to the subject's right: ask them to turn to their left
    codes = [g.code for g in engine.live(turned).guidance]
    assert "turn_left" in codes and "turn_right" not in codes
    codes = [g.code for g in engine.live(synth.mirror(turned)).guidance]
    assert "turn_right" in codes and "turn_left" not in codes


def test_tilt_guidance_direction(load, face_of, engine) -> None:
    image = load("meds-aa-S029-01.jpg")
    face = face_of(image)
    leaning_right = synth.rotate(image, face, 15)  # counter-clockwise: towards the subject's right shoulder
    codes = [g.code for g in engine.live(leaning_right).guidance]
    assert "tilt_left" in codes and "tilt_right" not in codes
    codes = [g.code for g in engine.live(synth.rotate(image, face, -15)).guidance]
    assert "tilt_right" in codes and "tilt_left" not in codes
    assert engine.profile.message("tilt_left").endswith("right shoulder.")
