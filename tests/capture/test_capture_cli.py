"""`capture` end to end, as a separate process: real images replayed as cameras, the installed model
bundle, a real encrypted store in tmp_path. Run as `python -m appliance.capture.cli capture ...`,
which is the same click command `booking-station capture` registers."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import cv2
import pytest

from appliance.store import Capture, Store
from appliance.store.db import data_paths
from tests.capture.test_session import ORI, STATION, build_processor, pick_frontals, replay_folder

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def frontals(bundle, faces_dir: Path) -> dict[str, Path]:
    return pick_frontals(build_processor(bundle), faces_dir)


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A station config of its own, so a developer's /etc/booking-station/station.toml cannot leak in."""
    path = tmp_path / "station.toml"
    # A generous max_gap: on a loaded 2-core CI machine one frame's analysis can take over a second, and
    # these tests are about the flow, not the timing (the state machine's timing has its own tests).
    path.write_text("[capture]\nstable_seconds = 0.3\nmax_gap = 5.0\n")
    return path


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    path = tmp_path / "data"
    path.mkdir()
    return path


def capture(config_file: Path, *args: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    cmd = [sys.executable, "-m", "appliance.capture.cli", "--config", str(config_file), "capture",
           "--agency", ORI, "--station", STATION, "--operator", "ofc-17", *map(str, args)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def test_auto_booking_end_to_end_with_profiles_and_smt(config_file: Path, data_dir: Path, tmp_path: Path,
                                                       frontals: dict[str, Path], faces_dir: Path) -> None:
    # Enough passing frames that they span the 0.3 s stable window even when analysis is quick (~10 ms a
    # frame on an idle machine); with too few, the looping replay returns to the failing frame first.
    folder = replay_folder(tmp_path / "frontal", frontals["failing"], *[frontals["passing"]] * 60)
    backdrop = tmp_path / "backdrop.png"
    couple = cv2.imread(str(faces_dir / "deepface" / "couple.jpg"))
    cv2.imwrite(str(backdrop), couple[: couple.shape[0] // 3, : couple.shape[1] // 3])
    reason = "demo photos: no booking backdrop"
    proc = capture(config_file, "--booking", "2026-000123", "--camera", f"replay:{folder}", "--auto",
                   "--left", faces_dir / "deepface" / "img13.jpg", "--right", backdrop,
                   "--smt", f"tattoo, left forearm={faces_dir / 'deepface' / 'img13.jpg'}",
                   "--data-dir", data_dir, "--fps", "0", "--timeout", "30", "--override-reason", reason, "--json")
    assert proc.returncode == 0, proc.stderr
    out = events(proc.stdout)
    kinds = [e["event"] for e in out]
    assert kinds[-1] == "saved" and "guidance" in kinds
    assert [e["pose"] for e in out if e["event"] == "accepted"] == ["frontal", "left_profile", "right_profile", "smt"]
    frontal_capture = next(e for e in out if e["event"] == "captured" and e["pose"] == "frontal")
    assert frontal_capture["mode"] == "auto" and frontal_capture["template_dim"] == 128
    right = next(e for e in out if e["event"] == "captured" and e["pose"] == "right_profile")
    assert any("full frame is kept" in n for n in right["notes"])
    record_id = out[-1]["record_id"]

    with Store.open_data_dir(data_dir, floor_bytes=0) as store:
        record = store.load_record(record_id)
        assert [c.pose for c in record.captures] == ["frontal", "left_profile", "right_profile", "smt"]
        frontal: Capture = record.captures[0]
        assert (frontal.width, frontal.height) == (480, 600) and len(frontal.template) == 128
        assert frontal.quality["standardized"]["width"] == 480
        assert record.captures[3].smt_description == "tattoo, left forearm"
        assert store.queue("pending")[0].record_id == record_id
        assert store.verify_audit() is None


def test_failing_frames_need_an_override_reason(config_file: Path, data_dir: Path,
                                               frontals: dict[str, Path]) -> None:
    args = ("--booking", "2026-000124", "--camera", f"replay:{frontals['failing']}", "--data-dir", data_dir,
            "--fps", "0", "--timeout", "1.5")
    refused = capture(config_file, *args)
    assert refused.returncode == 1  # a check failed (the quality gate), not the input
    assert "error: frontal: no frame passed the quality profile" in refused.stderr
    assert "--override-reason" in refused.stderr and "Traceback" not in refused.stderr
    # Guidance is printed as it goes, but only when it changes: a steady stream says it once.
    guidance_lines = [line for line in refused.stdout.splitlines() if line.startswith("  frontal: ")
                      and "capture" not in line]
    assert guidance_lines and len(guidance_lines) == len(set(guidance_lines))
    assert not data_paths(data_dir)[0].exists()  # nothing stored, not even an empty database

    reason = "subject refused to raise his chin"
    kept = capture(config_file, *args, "--override-reason", reason)
    assert kept.returncode == 0, kept.stderr
    record_id = kept.stdout.splitlines()[-1]
    assert "left profile view is skipped" in kept.stderr
    assert "saving without: left_profile, right_profile" in kept.stderr
    with Store.open_data_dir(data_dir, floor_bytes=0) as store:
        record = store.load_record(record_id)
        assert [c.pose for c in record.captures] == ["frontal"]  # a booking without profiles is accepted
        assert record.captures[0].override_reason == reason
        audit = store.conn.execute("SELECT actor, details FROM audit WHERE action = 'override'").fetchall()
        assert len(audit) == 1 and audit[0][0] == "ofc-17" and reason in audit[0][1]


def test_control_characters_in_the_booking_number_are_refused_up_front(config_file: Path, data_dir: Path,
                                                                      frontals: dict[str, Path]) -> None:
    proc = capture(config_file, "--booking", "2026-000125\r", "--camera", f"replay:{frontals['passing']}",
                   "--data-dir", data_dir)
    assert proc.returncode == 2
    assert "booking number" in proc.stderr and "control character (U+000D)" in proc.stderr
    assert proc.stderr.count("\n") == 1 and not data_paths(data_dir)[0].exists()


def test_missing_camera_and_data_dir_are_setup_errors(config_file: Path, data_dir: Path, tmp_path: Path,
                                                     frontals: dict[str, Path]) -> None:
    proc = capture(config_file, "--booking", "2026-000126", "--camera", f"replay:{tmp_path / 'nowhere'}",
                   "--data-dir", data_dir)
    assert proc.returncode == 2 and "does not exist" in proc.stderr and "Traceback" not in proc.stderr
    proc = capture(config_file, "--booking", "2026-000126", "--camera", f"replay:{frontals['passing']}",
                   "--data-dir", tmp_path / "no-such-dir")
    assert proc.returncode == 2 and "data directory" in proc.stderr
    proc = capture(config_file, "--booking", "2026-000126", "--camera", f"replay:{frontals['passing']}",
                   "--data-dir", data_dir, "--profile", "no-such-profile")
    assert proc.returncode == 2 and "quality profile" in proc.stderr and "Traceback" not in proc.stderr


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 4 MiB filesystem as the data directory (the tests run as root, like the device's CI)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a size-capped tmpfs here ({proc.stderr.strip()}); the session's full-disk "
                    f"test covers the refusal through the store's floor")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_full_disk_is_a_clear_error_and_earlier_records_stay(config_file: Path, small_fs: Path,
                                                             frontals: dict[str, Path]) -> None:
    # An earlier booking already on the (small) disk, pending delivery.
    first = capture(config_file, "--booking", "2026-000001", "--camera", f"replay:{frontals['passing']}",
                    "--data-dir", small_fs, "--fps", "0", "--timeout", "1",
                    "--override-reason", "demo photo")
    # The CLI uses the store's default floor (512 MiB kept free), which a 4 MiB disk can never meet: the
    # booking is refused before it starts, not after the officer's photos at the save.
    assert first.returncode == 2, first.stderr
    assert "Booking NOT started: the disk is too full" in first.stderr and "Nothing was deleted" in first.stderr
    assert "captured" not in first.stdout and "Traceback" not in first.stderr
    assert [line for line in first.stderr.splitlines() if "disk" in line and not line.startswith("warning:")] == [
        first.stderr.splitlines()[-1]]  # one line, after the warnings about skipped profile views

    with Store.open_data_dir(small_fs, floor_bytes=0) as store:  # a store with a floor that fits this disk
        image = cv2.imencode(".jpg", cv2.imread(str(frontals["passing"])))[1].tobytes()
        from appliance.store import Booking
        from appliance.store.clock import utc_now

        booking = Booking(agency_ori=ORI, booking_number="2026-000001", operator_id="ofc-17",
                          captured_at=utc_now(), station_id=STATION)
        earlier = store.save_booking(booking, [Capture.from_jpeg("frontal", image, 10, 10, "ofc-17")])
    again = capture(config_file, "--booking", "2026-000002", "--camera", f"replay:{frontals['passing']}",
                    "--data-dir", small_fs, "--fps", "0", "--timeout", "1", "--override-reason", "demo photo")
    assert again.returncode == 2 and "disk is too full" in again.stderr
    with Store.open_data_dir(small_fs, floor_bytes=0) as store:
        assert [(e.record_id, e.state) for e in store.queue()] == [(earlier, "pending")]
        assert store.load_record(earlier).captures[0].jpeg == image
        assert store.integrity_check() == ["ok"] and store.verify_audit() is None
