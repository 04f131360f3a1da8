"""Booking sessions with real parts: real face photos replayed as a camera, the real model bundle and
quality engine, a real encrypted SQLite store in tmp_path.

Over 500 lines because it has one test per step and failure rule of the session, sharing the real bundle
and replay cameras its fixtures set up.

Replay folders are made of symlinks to the shared images (never copies in the repo). Frames are paced
by a fake clock (the replay camera's own clock and sleep hooks), so stable windows and timeouts are exact
and no test sleeps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from appliance.capture.autocapture import OverrideRequired
from appliance.capture.processing import CaptureProcessor
from appliance.capture.session import BookingSession, CaptureError, CaptureStation, Phase
from appliance.imageio import read_image
from appliance.store import DiskFullError, Store, ValidationError
from appliance.store.db import data_paths

ORI = "VA0290000"
STATION = "fairfax-desk-1"
OPERATOR = "ofc-17"


class FakeClock:
    """Monotonic time that moves only when the replay camera 'sleeps' until its next frame is due."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


# --- the real parts, loaded once ----------------------------------------------------------------------


def build_processor(bundle) -> CaptureProcessor:
    """The station's vision and quality stack, as `CaptureStation.from_config` builds it (nist-sap30)."""
    from appliance.quality.engine import QualityEngine
    from appliance.quality.profile import load_profile
    from appliance.vision.embedder import Embedder
    from appliance.vision.pipeline import FaceAnalyzer

    analyzer = FaceAnalyzer(bundle)
    return CaptureProcessor(analyzer, Embedder(bundle), QualityEngine(analyzer, load_profile("nist-sap30")))


def pick_frontals(processor: CaptureProcessor, faces_dir: Path) -> dict[str, Path]:
    """Real portraits sorted by the live verdict of the shipped profile: `passing` (one face, every live
    gate passes: what auto-capture needs) and `failing` (one face that fails a live gate). Chosen by the
    engine rather than hard-coded, so tuning the profile does not silently change what a test means."""
    candidates = sorted((faces_dir / "deepface").glob("img*.jpg")) + sorted(
        (faces_dir / "openmpf_meds").glob("meds-*.jpg"))
    passing = failing = None
    for path in candidates:
        live = processor.live("frontal", read_image(path))
        if live.passed and passing is None:
            passing = path
        elif not live.passed and live.face_box is not None and failing is None:
            failing = path
    if passing is None or failing is None:
        pytest.fail(f"the shared portraits under {faces_dir} need at least one photo that passes the nist-sap30 "
                    f"live gates and one that fails them (passing: {passing}, failing: {failing})")
    return {"passing": passing, "failing": failing}


@pytest.fixture(scope="module")
def processor(bundle) -> CaptureProcessor:
    return build_processor(bundle)


@pytest.fixture(scope="module")
def frontals(processor: CaptureProcessor, faces_dir: Path) -> dict[str, Path]:
    return pick_frontals(processor, faces_dir)


def replay_folder(folder: Path, *images: Path) -> Path:
    """A replay folder of symlinks to real images, played in the order given."""
    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(images):
        (folder / f"frame{i:03d}{image.suffix}").symlink_to(image)
    return folder


@pytest.fixture
def no_face_image(faces_dir: Path, tmp_path: Path) -> Path:
    """A real photo with no face in it: the top-left corner of a real group photo (written to tmp_path)."""
    image = cv2.imread(str(faces_dir / "deepface" / "couple.jpg"))
    path = tmp_path / "backdrop.png"
    cv2.imwrite(str(path), image[: image.shape[0] // 3, : image.shape[1] // 3])
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


@pytest.fixture
def make_station(processor: CaptureProcessor, data_dir: Path) -> Callable[..., CaptureStation]:
    def make(floor_bytes: int = 0, **settings: object) -> CaptureStation:
        def open_store() -> Store:
            return Store.open_data_dir(data_dir, floor_bytes=floor_bytes)

        options: dict = {"stable_seconds": 0.3, "max_gap": 0.3}
        options.update(settings)
        return CaptureStation(processor, station_id=STATION, store_opener=open_store, **options)

    return make


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def session(make_station: Callable[..., CaptureStation]) -> Iterator[BookingSession]:
    with make_station().start_booking(ORI, "2026-000123", OPERATOR) as opened:
        yield opened


def open_replay(session: BookingSession, source: Path, clock: FakeClock, **options: object) -> str:
    """A replay camera at 15 fps on the fake clock."""
    return session.open_camera(f"replay:{source}", fps=15, clock=clock, sleep=clock.sleep, **options)


def run_until_review(session: BookingSession, max_frames: int = 200) -> None:
    for _ in range(max_frames):
        status = session.step()
        if status.phase is Phase.REVIEW:
            return
        assert status.camera_error is None, status.camera_error
    pytest.fail(f"no capture within {max_frames} frames; last status: {session.live_status().to_json()}")


def accept(session: BookingSession, reason: str = "test data: the sample photos have no booking backdrop") -> None:
    """Accept the candidate, with an override only when its full report needs one."""
    review = session.review()
    assert review is not None
    session.accept(None if review.passed else reason)


def stored(data_dir: Path, record_id: str):
    with Store.open_data_dir(data_dir, floor_bytes=0) as store:
        return store.load_record(record_id), store.queue(), store.verify_audit(), store.conn.execute(
            "SELECT action, actor, details FROM audit ORDER BY seq").fetchall()


# --- a whole booking ------------------------------------------------------------------------------------


def test_auto_captured_booking_is_stored_standardized_with_template_and_decrypts(
        session: BookingSession, frontals: dict[str, Path], faces_dir: Path, no_face_image: Path,
        processor: CaptureProcessor, clock: FakeClock, data_dir: Path, tmp_path: Path) -> None:
    # Frontal: the stream opens on a subject who is not ready (guidance shown), then holds a good pose.
    folder = replay_folder(tmp_path / "frontal", frontals["failing"], *[frontals["passing"]] * 12)
    open_replay(session, folder, clock, loop=False)
    session.select_pose("frontal")
    first = session.step()
    assert first.phase is Phase.LIVE and not first.ready and first.guidance, "a failing frame gives guidance"
    assert first.face_box is not None and first.frame_size is not None
    run_until_review(session)
    review = session.review()
    assert review is not None and review.mode == "auto" and review.pose == "frontal"
    assert review.template_dim == 128 and review.template_model == processor.template_model
    assert (review.width, review.height) == (480, 600)  # nist-sap30 geometry
    assert review.quality["standardized"]["eye_line_from_bottom"] == pytest.approx(0.55, abs=0.051)
    assert review.needs_override is (not review.passed)
    accept(session)

    # Left profile: the sample set has no real profile, so a frontal photo stands in: auto-capture never
    # takes it (it is no profile), the officer captures it by hand and keeps it only with a reason; it is
    # cut to the subject. Right profile: no face, kept whole and said so.
    left_source = faces_dir / "deepface" / "img13.jpg"
    open_replay(session, left_source, clock)
    session.select_pose("left_profile")
    for _ in range(30):
        status = session.step()
        assert status.phase is Phase.LIVE and not status.ready
    assert [g.code for g in status.guidance] == ["turn_for_left_profile"]
    left = session.capture()
    assert left is not None and not left.passed and left.needs_override
    assert left.quality["side_view"]["method"] == "mesh yaw" and abs(left.quality["side_view"]["yaw"]) < 45
    assert left.quality["subject_crop"] is not None
    source_h, source_w = read_image(left_source).shape[:2]
    assert left.width * left.height < source_w * source_h
    accept(session)

    open_replay(session, no_face_image, clock)
    session.select_pose("right_profile")
    run_until_review(session)
    right = session.review()
    assert right is not None and right.quality["subject_crop"] is None
    assert any("full frame is kept" in note for note in right.notes)
    session.accept()

    # A tattoo: manual only, kept as taken, with its description.
    session.select_pose("smt", description="tattoo, left forearm")
    assert not session.live_status().auto
    smt = session.capture()
    assert smt.mode == "manual" and smt.passed
    session.accept()

    summary = session.summary()
    assert summary.accepted == ("frontal", "left_profile", "right_profile", "smt") and summary.missing == ()
    record_id = session.save()
    assert session.live_status().phase is Phase.SAVED and session.summary().record_id == record_id

    record, queue, broken, audit = stored(data_dir, record_id)  # a new connection: committed, decrypts
    poses = [c.pose for c in record.captures]
    assert poses == ["frontal", "left_profile", "right_profile", "smt"]
    frontal = record.captures[0]
    assert (frontal.width, frontal.height) == (480, 600)
    assert frontal.template_model == processor.template_model and len(frontal.template) == 128
    assert b"Exif" not in frontal.jpeg[:2048]
    decoded = cv2.imdecode(np.frombuffer(frontal.jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert decoded.shape == (600, 480, 3)
    # The template is the captured face's: the same photo embedded directly gives the same vector.
    direct = processor.template(read_image(frontals["passing"]))
    assert direct is not None and np.linalg.norm(np.subtract(frontal.template, direct)) < 1e-3
    assert record.captures[3].smt_description == "tattoo, left forearm" and record.captures[3].template is None
    assert record.booking.booking_number == "2026-000123" and record.booking.station_id == STATION
    assert [e.record_id for e in queue] == [record_id] and queue[0].state == "pending"
    assert broken is None
    assert [a for a, _, _ in audit].count("capture") == 1


def test_failing_capture_needs_an_override_reason_which_is_stored_and_audited(
        session: BookingSession, frontals: dict[str, Path], clock: FakeClock, data_dir: Path) -> None:
    open_replay(session, frontals["failing"], clock)
    session.select_pose("frontal", auto=False)
    status = session.step()
    assert not status.ready and status.guidance
    review = session.capture()  # manual capture is always possible
    assert not review.passed and review.needs_override and review.guidance
    for missing in (None, "", "   "):
        with pytest.raises(OverrideRequired, match="reason"):
            session.accept(missing)
    with pytest.raises(OverrideRequired, match="control characters"):
        session.accept("subject refused\nto look up")
    assert session.review() is not None and session.summary().accepted == ()  # still waiting, nothing kept

    accepted = session.accept("subject refused to raise his chin", operator_id="sgt-4")
    assert accepted.override_reason == "subject refused to raise his chin" and accepted.operator_id == "sgt-4"
    assert session.summary().overrides == ("frontal",)
    record_id = session.save()

    record, _, broken, audit = stored(data_dir, record_id)
    assert record.captures[0].override_reason == "subject refused to raise his chin"
    assert record.captures[0].operator_id == "sgt-4"
    assert record.captures[0].quality["report"]["passed"] is False
    overrides = [(actor, details) for action, actor, details in audit if action == "override"]
    assert len(overrides) == 1 and overrides[0][0] == "sgt-4"
    assert "subject refused to raise his chin" in overrides[0][1] and record_id in overrides[0][1]
    assert broken is None


def test_corrupt_frame_in_the_replay_folder_is_skipped_and_counted(
        session: BookingSession, frontals: dict[str, Path], clock: FakeClock, tmp_path: Path) -> None:
    folder = replay_folder(tmp_path / "frames", *[frontals["passing"]] * 3)
    good = frontals["passing"].read_bytes()
    (folder / "frame001.jpg").unlink()
    (folder / "frame001.jpg").write_bytes(good[: len(good) // 2])  # cut off mid-scan, as on a failing card
    (folder / "frame002b.jpg").write_bytes(b"not an image at all")
    open_replay(session, folder, clock)
    session.select_pose("frontal", auto=False)
    seen = []
    for _ in range(8):
        status = session.step()
        seen.append(status.frame_sequence)
    status = session.live_status()
    assert status.frames_skipped >= 2  # each unreadable file costs a frame, every time the loop passes it
    assert status.camera_error is None and status.camera is not None
    assert status.frames_seen + status.frames_skipped == 8
    review = session.capture()
    assert review.template_dim == 128


@pytest.mark.parametrize("source", ["replay", "opencv-video"])
def test_camera_lost_mid_session_keeps_accepted_captures(
        source: str, session: BookingSession, frontals: dict[str, Path], faces_dir: Path, clock: FakeClock,
        data_dir: Path, tmp_path: Path) -> None:
    open_replay(session, frontals["passing"], clock)
    session.select_pose("frontal")
    run_until_review(session)
    accept(session)

    # The profile camera dies: a replay that ends, or a video file behind the OpenCV backend (it reads
    # past the end like an unplugged USB camera and gives up after its failed reads in a row).
    if source == "replay":
        open_replay(session, replay_folder(tmp_path / "short", *[frontals["failing"]] * 2), clock, loop=False)
    else:
        video = faces_dir / "openmpf_meds" / "h264_aac.mp4"
        session.open_camera(f"opencv:{video}", retry_delay=0)
    session.select_pose("left_profile", auto=False)
    lost = None
    for _ in range(60):
        status = session.step()
        if status.camera_error:
            lost = status
            break
    assert lost is not None, "the camera never reported its loss"
    assert lost.camera is None and "already accepted are kept" in lost.camera_error
    assert lost.accepted == ("frontal",) and session.summary().can_save
    session.step()  # no camera: nothing to read, no exception
    assert session.live_status().camera_error == lost.camera_error

    # The officer reconnects and finishes; every capture from before the loss is in the record.
    open_replay(session, faces_dir / "deepface" / "img13.jpg", clock)
    assert session.live_status().camera_error is None
    session.select_pose("left_profile", auto=False)
    session.step()
    session.capture()
    accept(session)  # a frontal photo as the profile: kept only with a reason
    record_id = session.save()
    record, _, _, _ = stored(data_dir, record_id)
    assert [c.pose for c in record.captures] == ["frontal", "left_profile"]


def test_booking_whose_camera_is_lost_can_still_be_saved_when_complete(
        session: BookingSession, frontals: dict[str, Path], clock: FakeClock, data_dir: Path,
        tmp_path: Path) -> None:
    open_replay(session, replay_folder(tmp_path / "once", *[frontals["passing"]] * 8), clock, loop=False)
    session.select_pose("frontal")
    run_until_review(session)
    accept(session)
    while not session.step().camera_error:
        pass
    record_id = session.save()  # no camera needed to save
    assert stored(data_dir, record_id)[0].captures[0].pose == "frontal"


@pytest.mark.parametrize("number", ["2026-000123\r", "2026\t000123", "2026-0001\x00", "2026-\x1b[31m0001"])
def test_booking_number_with_control_characters_is_refused_before_any_capture(
        number: str, make_station: Callable[..., CaptureStation], data_dir: Path) -> None:
    with pytest.raises(ValidationError, match="control character") as info:
        make_station().start_booking(ORI, number, OPERATOR)
    assert "booking number" in str(info.value) and "retype" in str(info.value)
    db_path, _ = data_paths(data_dir)
    assert not db_path.exists()  # refused before the store was even opened


def test_full_disk_gives_a_clear_error_keeps_the_session_and_earlier_records(
        make_station: Callable[..., CaptureStation], frontals: dict[str, Path], clock: FakeClock,
        data_dir: Path) -> None:
    def booked(station: CaptureStation, number: str) -> BookingSession:
        session = station.start_booking(ORI, number, OPERATOR)
        open_replay(session, frontals["passing"], clock)
        session.select_pose("frontal")
        run_until_review(session)
        accept(session)
        session.close_camera()
        return session

    earlier = booked(make_station(), "2026-000001").save()
    before = stored(data_dir, earlier)

    # The disk is now (as far as the store's floor says) too full for another booking.
    full = make_station(floor_bytes=1 << 60)
    session = booked(full, "2026-000002")
    with pytest.raises(DiskFullError) as info:
        session.save()
    message = str(info.value)
    assert "NOT saved" in message and "disk" in message and "Nothing was deleted" in message
    assert session.live_status().phase is not Phase.SAVED and session.summary().can_save
    assert session.summary().accepted == ("frontal",)  # the officer's work is still there

    with Store.open_data_dir(data_dir, floor_bytes=0) as store:
        assert [e.record_id for e in store.queue()] == [earlier]  # nothing half-written, nothing dropped
        assert store.queue("pending")[0].record_id == earlier
        assert store.integrity_check() == ["ok"] and store.verify_audit() is None
        assert any(a.name for a in store.active_alarms())  # someone is told
    after = stored(data_dir, earlier)
    assert [c.sha256 for c in after[0].captures] == [c.sha256 for c in before[0].captures]

    # Space is freed: the same session saves, under the record id it tried first.
    session.station.store_opener = make_station().store_opener
    attempted = session._record_id
    record_id = session.save()
    assert record_id == attempted and session.save() == record_id  # saving again writes nothing new
    with Store.open_data_dir(data_dir, floor_bytes=0) as store:
        assert [e.record_id for e in store.queue("pending")] == [earlier, record_id]


def test_a_full_disk_refuses_before_the_booking_starts_and_before_a_photo_is_processed(
        make_station: Callable[..., CaptureStation], frontals: dict[str, Path], clock: FakeClock,
        data_dir: Path) -> None:
    from appliance.store.space import ensure_space

    floor = {"bytes": 1 << 60}  # as far as the floor says, the disk is full

    def space_check(what: str) -> None:
        ensure_space(data_dir, floor["bytes"], 0, what=what)

    station = make_station(space_check=space_check)
    with pytest.raises(DiskFullError, match="Booking NOT started: the disk is too full"):
        station.start_booking(ORI, "2026-000010", OPERATOR)

    floor["bytes"] = 0
    session = station.start_booking(ORI, "2026-000010", OPERATOR)
    open_replay(session, frontals["passing"], clock)
    session.select_pose("frontal", auto=False)
    session.step()
    floor["bytes"] = 1 << 60  # the disk fills up while the officer frames the photo
    with pytest.raises(DiskFullError, match="Photo NOT processed: the disk is too full") as info:
        session.capture(source="latest")
    assert "Nothing was deleted" in str(info.value)
    assert session.review() is None and session.live_status().phase is Phase.LIVE  # the officer can try again
    floor["bytes"] = 0
    assert session.capture(source="latest").pose == "frontal"
    session.close()


def test_background_live_loop_with_a_polling_ui(
        make_station: Callable[..., CaptureStation], frontals: dict[str, Path], faces_dir: Path,
        data_dir: Path) -> None:
    """The UI's way: the camera loop runs in its own thread; other threads poll and press buttons."""
    session = make_station(stable_seconds=0.2, max_gap=2.0).start_booking(ORI, "2026-000777", OPERATOR)
    session.open_camera(f"replay:{frontals['passing']}", fps=30)
    session.select_pose("frontal")
    statuses: list[dict] = []
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            statuses.append(session.live_status().to_json())
            session.summary()
            session.review()
            time.sleep(0.005)

    pollers = [threading.Thread(target=poll) for _ in range(3)]
    for t in pollers:
        t.start()
    session.start_live()
    try:
        deadline = time.monotonic() + 30
        while session.live_status().phase is not Phase.REVIEW:
            assert time.monotonic() < deadline, session.live_status().to_json()
            time.sleep(0.01)
        preview = session.preview_jpeg(max_width=320)  # what the UI shows under the face box
        assert preview is not None
        assert cv2.imdecode(np.frombuffer(preview, np.uint8), cv2.IMREAD_COLOR).shape[1] == 320
        accept(session)
        session.open_camera(f"replay:{faces_dir / 'deepface' / 'img13.jpg'}", fps=30)
        session.select_pose("left_profile", auto=False)
        while session.live_status().frame_sequence is None:
            assert time.monotonic() < deadline
            time.sleep(0.01)
        session.capture()  # manual, from the frame the live thread just analysed
        accept(session)  # a frontal photo as the profile: kept only with a reason
        record_id = session.save()
    finally:
        stop.set()
        for t in pollers:
            t.join()
        session.close()
    assert session.last_error is None
    assert any(s["ready"] for s in statuses) and any(0 < s["progress"] < 1 for s in statuses)
    assert [c.pose for c in stored(data_dir, record_id)[0].captures] == ["frontal", "left_profile"]


def test_reduced_preview_captures_a_full_resolution_still(
        session: BookingSession, frontals: dict[str, Path], clock: FakeClock) -> None:
    """With a preview smaller than the camera's stills, live gates judge sizes at still resolution and
    the capture keeps the still: the record must not be made from the preview."""
    full_w = read_image(frontals["passing"]).shape[1]
    open_replay(session, frontals["passing"], clock, preview_size=[320, 240])
    session.select_pose("frontal", auto=False)
    status = session.step()
    assert status.frame_size[0] <= 320
    assert "too_far" not in [h.code for h in status.guidance]  # the eyes are judged at still resolution
    review = session.capture()
    assert review.quality["source_size"][0] == full_w
    assert review.template_dim == 128


def test_session_rules(session: BookingSession, frontals: dict[str, Path], clock: FakeClock) -> None:
    with pytest.raises(CaptureError, match="pose"):
        session.select_pose("mugshot")
    with pytest.raises(CaptureError, match="description"):
        session.select_pose("smt")
    with pytest.raises(CaptureError, match="control characters"):
        session.select_pose("smt", description="scar\r\nleft")
    with pytest.raises(CaptureError, match="description"):
        session.select_pose("frontal", description="front")
    with pytest.raises(CaptureError, match="choose a pose"):
        session.capture()
    with pytest.raises(CaptureError, match="nothing to accept"):
        session.accept()
    with pytest.raises(CaptureError, match="frontal"):
        session.save()

    open_replay(session, frontals["passing"], clock)
    session.select_pose("frontal", auto=False)
    session.step()
    first = session.capture()
    session.retake()  # discarded
    assert session.review() is None and session.live_status().phase is Phase.LIVE
    session.step()
    session.capture()
    accept(session)
    kept = session.accepted()[0]
    session.select_pose("frontal", auto=False)  # retake of an accepted pose: replaces it when accepted
    session.step()
    session.capture()
    with pytest.raises(CaptureError, match="accept it or retake it"):
        session.save()  # the candidate would silently be left out
    accept(session)
    assert len(session.accepted()) == 1 and session.accepted()[0] is not kept
    assert first.pose == "frontal"

    record_id = session.save()
    assert session.save() == record_id
    with pytest.raises(CaptureError, match="already saved"):
        session.select_pose("left_profile")


def test_opening_a_missing_camera_is_a_clear_error_and_changes_nothing(session: BookingSession,
                                                                      tmp_path: Path) -> None:
    from appliance.camera import CameraError

    with pytest.raises(CameraError, match="does not exist"):
        session.open_camera(f"replay:{tmp_path / 'nowhere'}")
    assert session.live_status().camera is None
    with pytest.raises(CaptureError, match="pose"):
        session.capture()
    session.select_pose("frontal")
    with pytest.raises(CaptureError, match="no camera is open"):
        session.capture()


def test_station_from_config_loads_the_profile_and_checks_the_bundle(bundle, data_dir: Path) -> None:
    from appliance.config import StationConfig

    config = StationConfig()
    config.vision.bundle = str(bundle.root)
    station = CaptureStation.from_config(config, data_dir=data_dir, station_id=STATION, profile="nist-sap40",
                                         bundle=bundle)
    assert station.processor.profile.name == "nist-sap40"
    assert station.stable_seconds == config.capture.stable_seconds
    assert station.camera_spec == config.camera.source
    with station.store_opener() as store:
        assert store.db_path == data_paths(data_dir)[0]


def test_a_booking_in_progress_can_be_resumed_with_its_accepted_captures(
        make_station: Callable[..., CaptureStation], frontals: dict[str, Path], clock: FakeClock,
        data_dir: Path) -> None:
    """What the UI does after a restart with its draft: same booking, same accepted photos, carry on."""
    station = make_station()
    first = station.start_booking(ORI, "2026-000555", OPERATOR)
    open_replay(first, frontals["passing"], clock)
    first.select_pose("frontal", auto=False)
    first.step()
    first.capture()
    accept(first)
    first.close()
    kept = first.accepted()

    resumed = make_station().resume_booking(first.booking, kept)
    assert resumed.summary().accepted == ("frontal",) and resumed.summary().can_save
    record_id = resumed.save()
    record = stored(data_dir, record_id)[0]
    assert record.booking.booking_number == "2026-000555"
    assert record.captures[0].sha256 == kept[0].to_store().sha256

    other = CaptureStation(station.processor, station_id="another-desk", store_opener=station.store_opener)
    with pytest.raises(CaptureError, match="station"):
        other.resume_booking(first.booking, kept)
