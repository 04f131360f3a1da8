"""A capture's review in the officer's words: the verdict, the gated checks by name, the hints said once.

The quality engine reports measures by their ISO/NIST names and words some refusals for county IT; the
review screen needs one line per check an officer can act on, failures first.
"""

from __future__ import annotations

from typing import Any

from appliance.capture.session import CaptureReview
from appliance.ui.wording import capture_problem

SAYS_SMALL_FACE = "too_far"
"""The live gate's hint that already tells the officer the face is too small (too far from the camera)."""

POSE_WORDS = {"frontal": "Frontal", "left_profile": "Left profile", "right_profile": "Right profile",
              "smt": "Scar / mark / tattoo"}

# The profile gates' measures in the officer's words (what the check looks at, said positively).
CHECK_WORDS = {
    "single_face_present": "Only the subject's face in view",
    "inter_eye_distance": "Face big enough in the picture",
    "leftward_crop": "Room on the left of the face",
    "rightward_crop": "Room on the right of the face",
    "margin_above": "Room above the head",
    "margin_below": "Room below the chin",
    "head_size": "Head size",
    "head_pose_yaw": "Head facing the camera (not turned)",
    "head_pose_pitch": "Chin level (not raised or lowered)",
    "head_pose_roll": "Head straight (not tilted)",
    "eyes_open": "Eyes open",
    "mouth_closed": "Mouth closed",
    "expression_neutrality": "Neutral expression",
    "luminance_mean": "Face brightness",
    "luminance_variance": "Contrast on the face",
    "under_exposure_prevention": "Face not too dark",
    "over_exposure_prevention": "Face not washed out",
    "dynamic_range": "Range of tones",
    "sharpness": "Sharp (in focus)",
    "compression_artifacts": "No compression blocks",
    "natural_colour": "Natural skin colour",
    "eyes_visible": "Eyes clearly visible",
    "glasses_glare": "No glare on glasses",
    "mouth_occlusion_prevention": "Mouth not covered",
    "face_occlusion_prevention": "Face not covered",
    "no_head_coverings": "No hat or head covering",
    "illumination_uniformity": "Even light on both sides of the face",
    "background_uniformity": "Plain background",
    "unified_quality_score": "Overall quality",
}


def check_words(quality: dict[str, Any]) -> list[dict[str, Any]]:
    """The gated checks of a quality report, in words, failures first: [{measure, label, passed}]."""
    report = quality.get("report") if isinstance(quality, dict) else None
    if not quality.get("gated") or not isinstance(report, dict):
        return []
    checks = []
    for name, entry in report.get("measures", {}).items():
        if isinstance(entry, dict) and "passed" in entry:
            label = CHECK_WORDS.get(name, name.replace("_", " ").capitalize())
            checks.append({"measure": name, "label": label, "passed": bool(entry["passed"]),
                           "not_assessed": entry.get("raw") is None and entry.get("score") is None,
                           "reason": entry.get("reason")})
    checks.sort(key=lambda c: c["passed"])  # stable: failures first, each group in profile order
    return checks


def review_json(review: CaptureReview) -> dict[str, Any]:
    """The review for the page: the session's JSON plus the checks in words and a one-line verdict."""
    out = review.to_json()
    out["label"] = POSE_WORDS.get(review.pose, review.pose)
    out["guidance"], out["notes"] = review_hints(out["guidance"], out["notes"])
    out["checks"] = check_words(review.quality)
    side = review.quality.get("side_view") if isinstance(review.quality, dict) else None
    if review.pose == "frontal":
        out["verdict"] = "Meets the standard" if review.passed else "Does not meet the standard"
    elif isinstance(side, dict):
        turned = side.get("method") != "no face found"
        out["checks"] = [{"measure": "side_view", "label": "Head turned for this profile",
                          "passed": bool(side.get("passed")), "not_assessed": not turned, "reason": None}]
        if not side.get("passed"):
            out["verdict"] = "Not a profile view turned the right way"
        else:
            out["verdict"] = "A profile view" if turned else "Head turn not measurable: check the profile by eye"
    else:
        out["verdict"] = "No quality gates for this view: check it by eye"
    return out


def review_hints(guidance: list[dict[str, Any]], notes: list[str]) -> tuple[list[dict[str, Any]], list[str]]:
    """The review's hints and notes in plain words, each said once: a hint the engine worded for county IT
    (the standard crop's pixel arithmetic) gets the officer's words and keeps its text as `detail`, or, when
    a hint already says the same ("too far away"), only adds its text there as the detail; a note that
    repeats a hint is dropped (it stays in the record's quality report)."""
    out: list[dict[str, Any]] = []
    crop = None
    for hint in guidance:
        if hint.get("code") == "not_standardized":
            words = capture_problem(str(hint.get("message", "")))
            crop = {**hint, "message": words.text, "detail": words.detail}
        else:
            out.append(dict(hint))
    if crop is not None:
        same = next((h for h in out if h.get("code") == SAYS_SMALL_FACE), None)
        if same is not None and "too few pixels" in str(crop["detail"]):
            same["detail"] = crop["detail"]
        else:
            out.append(crop)
    kept = [n for n in notes if not (crop is not None and n.startswith("not standardized"))]
    return out, kept
