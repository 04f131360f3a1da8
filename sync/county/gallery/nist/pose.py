"""10.020 POS and 10.025 SPA from the pose the station verified, not from the button the officer pressed.

The station measures head pose (yaw, pitch, roll in degrees) from the face mesh: on the frontal view as
quality measures, on a profile view in its profile check (``quality.side_view``: passed, the method, the
yaw when the mesh could measure it). Our yaw is positive when the head turns towards the subject's own
right; the standard's SPA yaw is positive towards the right profile (+90), the view of the subject's
right side, which they show by turning to their *left*: so SPA yaw = -(our yaw). Pitch (ours: chin up
positive) and roll (ours: towards the right shoulder positive) are written with our signs; the reference
text we follow gives no sign for them, so a county whose reader needs another convention must map them.

* frontal: POS ``F``; SPA the measured angles when the report has them.
* a profile whose check passed: POS ``L``/``R``; SPA only when the yaw was measured (the mesh cannot
  follow a true profile, so most real profiles carry POS alone).
* a profile kept by override although the check failed: never ``L``/``R``. With measured angles, POS
  ``D`` (pose determined in 3D) and SPA; when only the detector's keypoints judged it, POS ``F`` for a
  near-frontal face and the other side's code for a head turned the other way.
* a profile from a station without the check (older records): POS from the pose, no SPA, as before.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sync.county.gallery.nist.codes import POSE_TO_POS

OTHER_SIDE = {"L": "R", "R": "L"}


def _angle(value: Any) -> int | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool) and -180 <= value <= 180:
        return round(float(value))
    return None


def spa(yaw: Any, pitch: Any, roll: Any) -> tuple[str, str, str] | None:
    """SPA items (yaw, pitch, roll) from our measured angles, or None when the yaw is missing."""
    y = _angle(yaw)
    if y is None:
        return None
    return str(-y), str(_angle(pitch) or 0), str(_angle(roll) or 0)


def _raw(report: Mapping[str, Any], name: str) -> Any:
    entry = report.get("measures", {}).get(name) if isinstance(report.get("measures"), Mapping) else None
    return entry.get("raw") if isinstance(entry, Mapping) else None


def pose_fields(pose: str, quality: Mapping[str, Any]) -> tuple[str, tuple[str, str, str] | None]:
    """(POS, SPA items or None) for a FACE capture of ``pose`` with its station quality JSON."""
    pos = POSE_TO_POS[pose]
    if pos == "F":
        report = quality.get("report")
        report = report if isinstance(report, Mapping) else {}
        return "F", spa(_raw(report, "head_pose_yaw"), _raw(report, "head_pose_pitch"), _raw(report, "head_pose_roll"))
    side = quality.get("side_view")
    if not isinstance(side, Mapping):
        return pos, None
    angles = spa(side.get("yaw"), side.get("pitch"), side.get("roll")) if side.get("method") == "mesh yaw" else None
    if side.get("passed") is True:
        return pos, angles
    if angles is not None:
        return "D", angles
    codes = side.get("codes") or []
    if "wrong_profile_side" in codes:
        return OTHER_SIDE[pos], None
    if any(str(c).startswith("turn_for_") for c in codes):
        return "F", None
    return pos, None
