"""Export details: 10.020 POS and 10.025 SPA from the pose the station verified (SPA yaw in the standard's
sign: + towards the right profile, the opposite of ours), and a 10.038 comment that is shortened between
words, never mid-word, keeping each reason's code. Files are read back with our reader and with nistitl."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import nistitl
import pytest

from sync.county.gallery import nist
from sync.county.gallery.nist import NistConfig
from tests.sync import factory
from tests.sync.county.test_nist import MUGSHOT, capture, frontal_quality, real_record, with_frontal

LONG_REASON = ("subject was combative and would not keep still for more than a moment, officer safety required "
               "a quick capture, supervisor Sgt. Okonkwo approved the exception")


def side(pose: str, passed: bool, method: str, yaw: float | None = None, codes: tuple[str, ...] = (),
         pitch: float = 2.4, roll: float = -1.6) -> dict[str, Any]:
    view: dict[str, Any] = {"pose": pose, "passed": passed, "codes": list(codes), "method": method, "yaw": yaw,
                            "faces": 0 if method == "no face found" else 1}
    if method == "mesh yaw":
        view.update(pitch=pitch, roll=roll)
    return {"pose": pose, "gated": True, "side_view": view, "report": {"profile": "nist-sap30", "sap": 30}}


def export(*captures) -> tuple[list, nistitl.Message]:
    rec = factory.record(captures=captures)
    data = nist.export_record(rec)
    assert nist.validate_transaction(data, config=NistConfig()) == []
    msg = nistitl.Message()
    msg.parse(data)
    ours = [r for r in nist.decode_transaction(data) if r.type == 10]
    return ours, msg


def _frontal(**report_angles: float) -> Any:
    quality = frontal_quality()
    for name, value in report_angles.items():
        quality["report"]["measures"][f"head_pose_{name}"] = {"raw": value, "score": 99}
    return capture("frontal", MUGSHOT, quality=quality, template=factory.template())


@pytest.mark.parametrize("pose,quality,pos,spa", [
    ("left_profile", side("left_profile", True, "mesh yaw", 63.4), "L", ["-63", "2", "-2"]),
    ("right_profile", side("right_profile", True, "mesh yaw", -71.0), "R", ["71", "2", "-2"]),
    ("right_profile", side("right_profile", True, "no face found"), "R", None),
    # kept by override although the check failed: the photo's measured pose, never a profile code
    ("left_profile", side("left_profile", False, "mesh yaw", 4.2, ("turn_for_left_profile",)), "D", ["-4", "2", "-2"]),
    ("left_profile", side("left_profile", False, "detector keypoints", None, ("turn_for_left_profile",)), "F", None),
    ("left_profile", side("left_profile", False, "detector keypoints", None, ("wrong_profile_side",)), "R", None),
])
def test_pos_and_spa_come_from_the_verified_pose(pose: str, quality: dict, pos: str, spa: list | None) -> None:
    reason = None if quality["side_view"]["passed"] else "subject cannot turn: neck brace"
    view = capture(pose, MUGSHOT, quality=quality, override_reason=reason)
    ours, msg = export(_frontal(yaw=3.2, pitch=-1.4, roll=0.6), view)
    t10 = list(msg.iter(10))
    assert [r[20].value for r in t10] == ["F", pos]
    assert t10[0]._25 == [["-3", "-1", "1"]]  # frontal: our yaw +3.2 (turned to their right) is SPA -3
    if spa is None:
        assert t10[1][25] is None and 25 not in ours[1].fields
    else:
        assert t10[1]._25 == [spa]
        assert ours[1].fields[25] == (tuple(spa),)


def test_older_records_without_the_check_keep_the_pose_they_were_taken_as() -> None:
    rec = real_record()
    data = nist.export_record(rec)
    msg = nistitl.Message()
    msg.parse(data)
    assert [r[20].value for r in list(msg.iter(10))[:3]] == ["F", "L", "R"]
    assert all(r[25] is None for r in list(msg.iter(10))[1:3])


def test_a_long_override_reason_is_shortened_between_words_keeping_its_code(tmp_path: Path) -> None:
    rec = with_frontal(real_record(), override_reason=LONG_REASON)
    path = tmp_path / "long.eft"
    path.write_bytes(nist.export_record(rec))
    msg = nistitl.Message()
    msg.parse(path.read_bytes())
    com = list(msg.iter(10))[0]._38
    ours = [r for r in nist.decode_transaction(path.read_bytes()) if r.type == 10][0].text(38)
    assert com == ours and len(com) <= nist.COM_MAX
    assert com.startswith("kept by officer override: subject was combative")
    assert "SAP 20: the station did not record its SAP 30 quality gates as passed" in com  # the second code, whole
    shortened = com.split("; ")[0].removeprefix("kept by officer override: ")
    assert shortened.endswith("...")
    words = shortened.removesuffix("...").split(" ")
    assert words == LONG_REASON.split(" ")[: len(words)]  # whole words only, in order


@pytest.mark.parametrize("reason", ["x" * 180, "short reason", "a " * 70])
def test_comments_fit_and_never_end_mid_word(reason: str) -> None:
    rec = with_frontal(real_record(), override_reason=reason.strip())
    com = [r for r in nist.decode_transaction(nist.export_record(rec)) if r.type == 10][0].text(38)
    assert len(com) <= nist.COM_MAX and com.startswith("kept by officer override: ")
    first = com.split("; ")[0].removeprefix("kept by officer override: ")
    if len(reason.strip()) + 60 < nist.COM_MAX:
        assert first == reason.strip()
    else:
        assert first.endswith("...") and reason.strip().startswith(first.removesuffix("..."))
        cut = first.removesuffix("...")
        assert cut == "" or reason.strip()[len(cut):len(cut) + 1] == " "  # the cut falls between words
