"""`capture --left/--right` with frontal photos (the report's case: img21, and img24, another person): the
profile check refuses them, so auto-capture never takes them and they are kept only at the timeout with
the officer's override reason, which the record keeps beside the check's verdict."""

from __future__ import annotations

from pathlib import Path

from appliance.store import Store
from tests.capture.test_capture_cli import capture, config_file, data_dir, events, frontals  # noqa: F401 (fixtures)


def test_frontal_photos_are_refused_as_profiles(config_file: Path, data_dir: Path,  # noqa: F811
                                                frontals: dict[str, Path], faces_dir: Path) -> None:  # noqa: F811
    reason = "subject could not turn: neck brace"
    proc = capture(config_file, "--booking", "2026-000131", "--camera", f"replay:{frontals['passing']}", "--auto",
                   "--left", faces_dir / "deepface" / "img21.jpg", "--right", faces_dir / "deepface" / "img24.jpg",
                   "--data-dir", data_dir, "--fps", "0", "--timeout", "2", "--override-reason", reason, "--json")
    assert proc.returncode == 0, proc.stderr
    out = events(proc.stdout)
    for pose in ("left_profile", "right_profile"):
        seen = [e for e in out if e.get("pose") == pose]
        guidance = [e for e in seen if e["event"] == "guidance"]
        assert guidance and not any(e["ready"] for e in guidance)  # never ready, so never auto-captured
        [taken] = [e for e in seen if e["event"] == "captured"]
        assert taken["mode"] == "manual" and taken["passed"] is False  # the best frame, at the timeout
        assert [g["code"] for g in taken["guidance"]] == [f"turn_for_{pose}"]
    assert out[-1]["overrides"] == ["frontal", "left_profile", "right_profile"]
    record_id = out[-1]["record_id"]
    with Store.open_data_dir(data_dir, floor_bytes=0) as store:
        record = store.load_record(record_id)
    sides = {c.pose: c for c in record.captures if c.pose != "frontal"}
    assert set(sides) == {"left_profile", "right_profile"}
    for pose, c in sides.items():
        assert c.override_reason == reason
        assert c.quality["side_view"]["passed"] is False
        assert c.quality["side_view"]["codes"] == [f"turn_for_{pose}"]
