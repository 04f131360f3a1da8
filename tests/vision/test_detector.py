"""BlazeFace detection on real images: one face where there is one, none on blank frames, boxes where faces are."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.imageio import read_image
from appliance.vision.detector import FULL_RANGE, SHORT_RANGE, FaceDetector, weighted_nms
from appliance.vision.types import KP_LEFT_EYE, KP_RIGHT_EYE


@pytest.fixture(scope="module")
def detector(model_paths: dict[str, Path]) -> FaceDetector:
    return FaceDetector(model_paths["detector_short"], model_paths["detector_full"])


def test_anchor_layout_matches_model_outputs() -> None:
    short, full = SHORT_RANGE.anchors(), FULL_RANGE.anchors()
    assert short.shape == (896, 2) and full.shape == (2304, 2)
    # Stride 8 layer: 16x16 cells, two anchors per cell, row-major from the top-left cell centre.
    assert np.allclose(short[0], short[1]) and np.allclose(short[0], [0.5 / 16, 0.5 / 16])
    assert np.allclose(short[2], [1.5 / 16, 0.5 / 16])
    # The three stride-16 layers share an 8x8 map: six anchors per cell.
    assert np.allclose(short[512:518], [0.5 / 8, 0.5 / 8])
    assert np.allclose(short[-1], [7.5 / 8, 7.5 / 8])
    assert np.allclose(full[1], [1.5 / 48, 0.5 / 48]) and np.allclose(full[-1], [47.5 / 48, 47.5 / 48])


def test_weighted_nms_averages_overlaps_and_keeps_separate_faces() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 0, 11, 10], [50, 50, 60, 60]], dtype=float)
    kps = np.zeros((3, 6, 2))
    kps[1] += 3.0
    scores = np.array([0.9, 0.6, 0.7])
    out = weighted_nms(boxes, kps, scores, 0.3)
    assert len(out) == 2
    (box, kp, score), (box2, _, score2) = out
    assert score == pytest.approx(0.9) and score2 == pytest.approx(0.7)
    assert box[0] == pytest.approx(0.6 / 1.5)  # score-weighted mean of x0 = 0 and 1
    assert kp[0, 0] == pytest.approx(3.0 * 0.6 / 1.5)
    assert np.allclose(box2, boxes[2])


def test_exactly_one_face_on_every_labelled_single_image(labels, detector: FaceDetector, capsys) -> None:
    rows = labels("single")
    counts = {}
    for row in rows:
        counts[row["path"].name] = len(detector.detect(read_image(row["path"])))
    wrong = {name: n for name, n in counts.items() if n != 1}
    found = sum(1 for n in counts.values() if n >= 1)
    with capsys.disabled():
        print(
            f"\n[detector] {len(rows)} labelled single-face images: detection rate {found / len(rows):.1%}, "
            f"exactly one face on {len(rows) - len(wrong)}"
        )
    assert not wrong, f"face counts other than 1: {wrong}"


def test_derived_and_unlabelled_single_images_have_one_face(labels, detector: FaceDetector) -> None:
    rows = labels("derived") + labels("single_unlabeled")
    counts = {row["path"].name: len(detector.detect(read_image(row["path"]))) for row in rows}
    assert all(n == 1 for n in counts.values()), counts


def test_couple_has_two_faces_largest_first(faces_dir: Path, detector: FaceDetector) -> None:
    found = detector.detect(read_image(faces_dir / "deepface" / "couple.jpg"))
    assert len(found) == 2
    assert found[0].area >= found[1].area
    a, b = found[0].box, found[1].box
    assert a[2] < b[0] or b[2] < a[0], "the two faces are side by side, not overlapping"


def test_group_selfie_has_several_faces(faces_dir: Path, detector: FaceDetector) -> None:
    found = detector.detect(read_image(faces_dir / "deepface" / "selfie-many-people.jpg"))
    assert len(found) >= 3
    areas = [d.area for d in found]
    assert areas == sorted(areas, reverse=True)


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((480, 640, 3), np.uint8),
        np.full((480, 640, 3), 200, np.uint8),
        np.random.default_rng(7).integers(0, 256, (480, 640, 3), dtype=np.uint8),
        np.tile(np.linspace(0, 255, 640, dtype=np.uint8)[None, :, None], (480, 1, 3)),
    ],
    ids=["black", "grey-wall", "noise", "gradient"],
)
def test_no_face_on_blank_or_noise(detector: FaceDetector, frame: np.ndarray) -> None:
    assert detector.detect(frame) == []


def test_eyes_inside_box_and_subjects_right_eye_on_image_left(labels, detector: FaceDetector) -> None:
    bad = []
    for row in labels("single"):
        det = detector.detect(read_image(row["path"]))[0]
        x0, y0, x1, y1 = det.box
        right, left = det.keypoints[KP_RIGHT_EYE], det.keypoints[KP_LEFT_EYE]
        inside = all(x0 < p[0] < x1 and y0 < p[1] < y1 for p in (right, left))
        if not inside or not right[0] < left[0]:
            bad.append(row["file"])
    assert not bad, f"eye keypoints outside the box or mirrored: {bad}"


def _place(face: np.ndarray, canvas: tuple[int, int], dx: int, dy: int) -> np.ndarray:
    frame = np.full((*canvas, 3), 90, np.uint8)
    frame[dy : dy + face.shape[0], dx : dx + face.shape[1]] = face
    return frame


@pytest.mark.parametrize("canvas", [(1000, 560), (640, 1280), (1024, 1024)], ids=["tall", "wide", "square"])
def test_letterbox_is_undone_exactly(faces_dir: Path, detector: FaceDetector, canvas: tuple[int, int]) -> None:
    """A face moved inside a frame is found moved by exactly as much, in any frame shape; across frame
    shapes it is found at the same place relative to the face, up to resampling noise."""
    face = read_image(faces_dir / "openmpf_meds" / "meds-aa-S001-01.jpg")  # 600x480
    ref = detector.detect(face)[0]
    size = ref.width

    def error(got, want_box, want_kps) -> tuple[float, float]:
        # The ear tragion keypoints are the model's least stable and are left out.
        return (
            float(np.abs(got.box - want_box).max() / size),
            float(np.abs(got.keypoints[:4] - want_kps[:4]).max() / size),
        )

    h, w = canvas
    # Move the face by 16 model-input pixels along the frame's long side (and both sides when square):
    # the resampled input is then the same picture moved by exactly one stride-16 anchor cell, and the
    # network is translation-equivariant away from the borders, so only our coordinate mapping
    # (letterbox offset, scale, pixel-centre convention) can make the detections move differently.
    cell = 16 * max(h, w) // 128
    step = np.array([cell if w >= h else 0, cell if h >= w else 0])
    # Keep the face clear of the frame borders, where zero padding inside the network breaks it.
    x, y = (w - face.shape[1]) // 2, (h - face.shape[0]) // 2
    (a,) = detector.detect(_place(face, canvas, x, y))
    (b,) = detector.detect(_place(face, canvas, x - int(step[0]), y - int(step[1])))
    assert max(error(b, a.box - np.tile(step, 2), a.keypoints - step)) < 0.005
    # Other frame shape than the reference: the face is shrunk differently for the model input, so
    # allow a few percent of the face size; a letterbox mistake shows as tens of percent.
    offset = np.array([x, y])
    assert max(error(a, ref.box + np.tile(offset, 2), ref.keypoints + offset)) < 0.06


def test_small_distant_face_falls_back_to_full_range(faces_dir: Path, detector: FaceDetector) -> None:
    """A subject standing back (face about 45 px wide in a 640x480 preview) is only seen by full range."""
    face = read_image(faces_dir / "openmpf_meds" / "meds-aa-S001-01.jpg")
    small = cv2.resize(face, (80, 100), interpolation=cv2.INTER_AREA)
    frame = np.full((480, 640, 3), 120, np.uint8)
    frame[190:290, 320:400] = small
    assert detector.short.detect(frame, detector.min_score_short, detector.iou) == []
    got = detector.detect(frame)
    assert len(got) == 1 and got[0].model == "full"
    cx, cy = (got[0].box[0] + got[0].box[2]) / 2, (got[0].box[1] + got[0].box[3]) / 2
    assert 320 < cx < 400 and 190 < cy < 290


def test_rejects_non_rgb_input(detector: FaceDetector) -> None:
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        detector.detect(np.zeros((480, 640), np.uint8))
    with pytest.raises(ValueError, match="uint8 HxWx3"):
        detector.detect(np.zeros((480, 640, 3), np.float32))
