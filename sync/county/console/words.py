"""A capture's quality report and override in plain words, for county staff who never saw the station.

The station stores its quality report as JSON (profile, passed, measures, guidance with a message per
failed check); an imported legacy photo says only ``imported``. The console shows a sentence or two, and
keeps the measures (name, value, passed) for whoever wants the detail.
"""

from __future__ import annotations

from typing import Any

from sync.protocol.wire import WireCapture

POSE_WORDS = {"frontal": "Front", "left_profile": "Left profile", "right_profile": "Right profile",
              "smt": "Scar, mark or tattoo"}


def quality_words(quality: dict[str, Any]) -> str:
    """One or two sentences: checked or not, passed or not, and the station's own messages for what failed."""
    if quality.get("imported"):
        return "Imported legacy photo: not checked by a booking station."
    report = quality.get("report") if isinstance(quality.get("report"), dict) else None
    if report is None:
        return "No quality report was recorded for this photo." if not quality.get("gated", True) or not quality \
            else "The station recorded no quality checks for this pose."
    profile = report.get("profile") or quality.get("profile") or "the county profile"
    if report.get("passed"):
        return f"Passed every check of {profile}."
    messages = [str(g["message"]).strip().rstrip(".") for g in report.get("guidance", [])
                if isinstance(g, dict) and g.get("message")]
    failed = "; ".join(dict.fromkeys(messages)) or "one or more checks did not pass"
    return f"Did not pass {profile}: {failed}."


def measures(quality: dict[str, Any]) -> list[dict[str, Any]]:
    report = quality.get("report") if isinstance(quality.get("report"), dict) else {}
    out = []
    for name, entry in sorted((report.get("measures") or {}).items()):
        if isinstance(entry, dict):
            out.append({"measure": name.replace("_", " "), "value": entry.get("raw"), "score": entry.get("score"),
                        "passed": entry.get("passed")})
    return out


def capture_words(index: int, capture: WireCapture) -> dict[str, Any]:
    pose = POSE_WORDS.get(capture.pose, capture.pose)
    return {
        "index": index,
        "pose": capture.pose,
        "pose_words": pose + (f" ({capture.description})" if capture.description else ""),
        "width": capture.width,
        "height": capture.height,
        "sha256": capture.sha256.hex(),
        "quality_words": quality_words(capture.quality),
        "measures": measures(capture.quality),
        "override_reason": capture.override_reason,
        "override_words": (f"Kept by the officer although a check failed, because: {capture.override_reason}"
                           if capture.override_reason else None),
        "has_template": capture.template is not None,
    }
