"""Replay backend on real face images and a real video: order, looping, ending, pacing, stills, bad files."""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.camera import CameraEnded, CameraError, FrameUnreadable, open_camera
from appliance.camera.replay import ReplayCamera, image_files


def rgb_of(path: Path) -> np.ndarray:
    """The reference decode: what a frame of this file must contain."""
    return cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def smallest_images(folder: Path, count: int) -> list[Path]:
    files = sorted(folder.glob("*.jpg"), key=lambda p: p.stat().st_size)
    return files[:count]


def linked_folder(tmp_path: Path, files: dict[str, Path | bytes]) -> Path:
    """A tmp folder of symlinks to the shared images (nothing copied) and literal bad files."""
    folder = tmp_path / "replay"
    folder.mkdir()
    for name, target in files.items():
        if isinstance(target, bytes):
            (folder / name).write_bytes(target)
        else:
            (folder / name).symlink_to(target)
    return folder


def test_folder_plays_every_image_once_in_natural_order_then_ends(deepface_dir: Path) -> None:
    expected = [p.name for p in deepface_dir.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png")]
    camera = open_camera(f"replay:{deepface_dir}", fps=0, loop=False, preview_size=[320, 240])
    frames = []
    with camera:
        assert camera.resolution[0] <= 320 and camera.resolution[1] <= 240
        while True:
            try:
                frames.append(camera.read())
            except CameraEnded as exc:
                assert "ended" in str(exc)
                break
        with pytest.raises(CameraEnded):  # stays ended
            camera.read()
    assert sorted(f.source for f in frames) == sorted(expected)  # LABELS.csv, LICENSE etc. are not frames
    names = [f.source for f in frames]
    assert names.index("img2.jpg") < names.index("img10.jpg")  # natural order, not "img10" < "img2"
    assert [f.sequence for f in frames] == list(range(len(frames)))
    for frame in frames:
        assert frame.image.dtype == np.uint8 and frame.image.ndim == 3 and frame.image.shape[2] == 3
        assert frame.size[0] <= 320 and frame.size[1] <= 240
        assert max(frame.size[0] / 320, frame.size[1] / 240) == pytest.approx(1.0, abs=0.01)  # fitted, not padded
        assert not frame.image.flags.writeable
    assert (np.diff([f.timestamp for f in frames]) >= 0).all()


def test_preview_keeps_aspect_and_still_is_the_full_rgb_image(deepface_dir: Path) -> None:
    file = deepface_dir / "img1.jpg"
    full = rgb_of(file)
    with ReplayCamera(file, fps=0, preview_size=(640, 480)) as camera:
        preview = camera.read()
        still = camera.capture_still()
    h, w = full.shape[:2]
    assert preview.size == (round(w * 480 / h), 480)
    assert np.array_equal(still.image, full)  # RGB order, full size, untouched
    assert still.source == preview.source == "img1.jpg"
    assert still.sequence == preview.sequence + 1
    # The preview is the same picture scaled: compare against the reference scaled the same way.
    reference = cv2.resize(full, preview.size, interpolation=cv2.INTER_AREA)
    assert np.abs(preview.image.astype(int) - reference).mean() < 1.0


def test_folder_loops(tmp_path: Path, deepface_dir: Path) -> None:
    a, b, c = smallest_images(deepface_dir, 3)
    folder = linked_folder(tmp_path, {"1.jpg": a, "2.jpg": b, "3.jpg": c})
    with open_camera({"source": f"replay:{folder}", "fps": 0}) as camera:
        names = [camera.read().source for _ in range(7)]
    assert names == ["1.jpg", "2.jpg", "3.jpg", "1.jpg", "2.jpg", "3.jpg", "1.jpg"]


def test_corrupt_image_names_the_file_and_the_next_frame_is_still_served(tmp_path: Path, deepface_dir: Path) -> None:
    a, c = smallest_images(deepface_dir, 2)
    folder = linked_folder(
        tmp_path, {"a.jpg": a, "b.jpg": b"\xff\xd8\xff\xe0 this is not a jpeg", "c.jpg": c, "d.png": b""}
    )
    with ReplayCamera(folder, fps=0, loop=True) as camera:
        first = camera.read()
        with pytest.raises(FrameUnreadable, match=r"b\.jpg") as excinfo:
            camera.read()
        assert isinstance(excinfo.value, CameraError)  # callers catching CameraError see it too
        third = camera.read()
        with pytest.raises(FrameUnreadable, match=r"d\.png"):
            camera.read()
        again = camera.read()  # loops on past the bad files
    assert (first.source, third.source, again.source) == ("a.jpg", "c.jpg", "a.jpg")
    assert np.array_equal(third.image, rgb_of(c))
    assert [first.sequence, third.sequence, again.sequence] == [0, 1, 2]  # sequence counts delivered frames


def test_video_plays_every_frame_then_ends(meds_video: Path) -> None:
    reference = cv2.VideoCapture(str(meds_video))
    expected = []
    while True:
        ok, bgr = reference.read()
        if not ok:
            break
        expected.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    reference.release()
    assert expected, "the shared video decodes"
    with open_camera(f"replay:{meds_video}", fps=0, loop=False) as camera:
        assert camera.resolution == (expected[0].shape[1], expected[0].shape[0])
        frames = [camera.read() for _ in expected]
        with pytest.raises(CameraEnded, match="ended"):
            camera.read()
    assert all(np.array_equal(f.image, e) for f, e in zip(frames, expected, strict=True))


def test_video_loops_back_to_its_first_frame(meds_video: Path) -> None:
    with ReplayCamera(meds_video, fps=0, loop=True) as camera:
        first = camera.read()
        count = 1
        while True:
            frame = camera.read()
            if frame.source.endswith("#0"):
                break
            count += 1
            assert count < 10_000
        assert np.array_equal(frame.image, first.image)
        assert camera.read().source.endswith("#1")


def test_pacing_on_the_real_clock_spaces_timestamps(tmp_path: Path, deepface_dir: Path) -> None:
    folder = linked_folder(tmp_path, {f"{i}.jpg": p for i, p in enumerate(smallest_images(deepface_dir, 3))})
    fps = 20.0
    with ReplayCamera(folder, fps=fps, preview_size=(320, 240)) as camera:
        stamps = [camera.read().timestamp for _ in range(9)]
    spacing = np.diff(stamps)
    period = 1.0 / fps
    # Frames are held until their slot, so the spacing cannot be much shorter than a period (only the
    # scheduler's jitter on the first stamp); a loaded CI machine can make it longer, hence the loose top.
    assert 0.9 * period <= spacing.mean() < 2.5 * period
    assert (spacing > 0).all()


def test_pacing_keeps_cadence_and_does_not_burst_after_a_slow_consumer(
    tmp_path: Path, deepface_dir: Path, fake_clock
) -> None:
    folder = linked_folder(tmp_path, {"1.jpg": smallest_images(deepface_dir, 1)[0]})
    camera = ReplayCamera(folder, fps=10, clock=fake_clock, sleep=fake_clock.sleep)
    with camera:
        t = [camera.read().timestamp for _ in range(3)]
        assert t == pytest.approx([100.0, 100.1, 100.2])
        fake_clock.advance(0.35)  # the consumer was busy for 3.5 frame periods
        late = camera.read().timestamp
        after = camera.read().timestamp
    assert late == pytest.approx(100.55)  # delivered at once, no waiting for a slot already past
    assert after == pytest.approx(100.65)  # then one period later, not a burst of the missed frames


def test_fps_zero_never_sleeps(tmp_path: Path, deepface_dir: Path, fake_clock) -> None:
    folder = linked_folder(tmp_path, {"1.jpg": smallest_images(deepface_dir, 1)[0]})
    with ReplayCamera(folder, fps=0, clock=fake_clock, sleep=fake_clock.sleep) as camera:
        for _ in range(5):
            camera.read()
    assert fake_clock.sleeps == []


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("missing", "does not exist"),
        ("empty", "has no images"),
        ("all_corrupt", "can be decoded"),
        ("bad_video", "cannot be opened"),
    ],
)
def test_unusable_sources_fail_at_open_with_a_clear_message(tmp_path: Path, setup: str, message: str) -> None:
    path = tmp_path / "source"
    if setup == "empty":
        path.mkdir()
        (path / "notes.txt").write_text("not an image")
    elif setup == "all_corrupt":
        path.mkdir()
        (path / "x.jpg").write_bytes(b"garbage")
    elif setup == "bad_video":
        path = tmp_path / "clip.mp4"
        path.write_bytes(b"\x00" * 1000)
    camera = ReplayCamera(path, fps=0)
    with pytest.raises(CameraError, match=message) as excinfo:
        camera.open()
    assert str(path) in str(excinfo.value)
    assert not camera.is_open


def test_read_needs_an_open_camera(deepface_dir: Path) -> None:
    camera = ReplayCamera(deepface_dir, fps=0)
    with pytest.raises(CameraError, match="not open"):
        camera.read()
    with pytest.raises(CameraError, match="not open"):
        _ = camera.resolution
    with camera:
        camera.read()
    with pytest.raises(CameraError, match="not open"):
        camera.read()


@pytest.mark.parametrize(
    ("options", "message"),
    [({"fps": -1}, "fps"), ({"loop": "yes"}, "loop"), ({"preview_size": [640]}, "preview_size")],
)
def test_bad_options_are_refused(deepface_dir: Path, options: dict, message: str) -> None:
    with pytest.raises(CameraError, match=message):
        ReplayCamera(deepface_dir, **options)


def test_image_files_ignores_other_files(deepface_dir: Path) -> None:
    files = image_files(deepface_dir)
    assert files and all(p.suffix.lower() in {".jpg", ".jpeg", ".png"} for p in files)


def test_real_clock_timestamps_are_monotonic_seconds(deepface_dir: Path) -> None:
    before = time.monotonic()
    with ReplayCamera(deepface_dir / "img10.jpg", fps=0) as camera:
        frame = camera.read()
    assert before <= frame.timestamp <= time.monotonic()
