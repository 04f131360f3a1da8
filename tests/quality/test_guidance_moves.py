"""Guidance is right by construction: for every guidance code a profile can give, a real photo is put
into the state that raises it, then moved the way the officer's message says (the camera raised, the
subject closer, the head turned to their left, more light, the glasses tilted...) and the measure whose
gate raised the code must improve, and the code must go away.

The move is read from the message itself (`MOVES`: a phrase of the message -> a step of one knob), so a
message that tells the officer to move the wrong way makes its test fail: "raise the camera" moves the
picture's content down (the camera looks from higher up), "lower the camera" moves it up. Knobs act on
the untouched photo (`KNOBS`): the bad state and the moved state are the same scene at two settings.

Codes that no measure raises are outside this test: `no_face` (nothing to measure), `not_checked` (a
measure could not assess: capture again) and `low_quality`.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np
import pytest

from appliance.quality import QualityEngine, available_profiles, load_profile
from appliance.quality.engine import OPPOSITES
from appliance.quality.profile import GUIDANCE_FILE
from appliance.vision import landmarks as lm
from appliance.vision.types import Face
from tests.quality import synth

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib


@dataclass
class Scene:
    """What a knob may need besides the photo: the loader, the photo's name and an intruder face."""

    load: Callable[[str], np.ndarray]
    face_of: Callable[[np.ndarray], Face]
    base: str

    def second_face(self, image: np.ndarray, face: Face) -> np.ndarray:
        other = self.load("img33.jpg")
        return synth.paste_second_face(image, face, other, self.face_of(other), 0.6)

    def other_photo(self) -> np.ndarray:
        """A second real photo of the same subject with the mouth closed / a neutral expression."""
        return self.load({"img1.jpg": "img2.jpg", "img50.jpg": "img47.jpg"}[self.base])


Knob = Callable[[np.ndarray, Face, float, Scene], np.ndarray]
NOT_FROM_A_MEASURE = {"no_face", "not_checked", "low_quality"}
SIDE_VIEW_CODES = {"turn_for_left_profile", "turn_for_right_profile", "wrong_profile_side"}


def _t(face: Face) -> float:
    """Eye midpoint to chin (T), image pixels."""
    return float(np.linalg.norm(face.mesh[lm.CHIN, :2] - face.eyes.mean(axis=0)))


def _translate(image: np.ndarray, dx: float, dy: float) -> np.ndarray:
    m = np.float32([[1, 0, dx], [0, 1, dy]])
    return cv2.warpAffine(image, m, (image.shape[1], image.shape[0]), borderMode=cv2.BORDER_REPLICATE)


def _zoom(image: np.ndarray, face: Face, factor: float) -> np.ndarray:
    """The camera `factor` times closer (same frame size), about the eye midpoint."""
    cx, cy = face.eyes.mean(axis=0)
    m = cv2.getRotationMatrix2D((float(cx), float(cy)), 0.0, factor)
    return cv2.warpAffine(image, m, (image.shape[1], image.shape[0]), flags=cv2.INTER_AREA,
                          borderMode=cv2.BORDER_REPLICATE)


def _side_light(image: np.ndarray, face: Face, gain: float) -> np.ndarray:
    """Linear light on the image-left half of the face times `gain`, blending over 0.5 IED at the midline."""
    x = np.arange(image.shape[1], dtype=np.float32)
    mid = float(face.eyes[:, 0].mean())
    w = np.clip((x - mid) / (0.5 * synth.ied(face)) + 0.5, 0, 1)  # 0 on the left half, 1 on the right
    g = (gain + (1.0 - gain) * w)[None, :, None]
    lin = (image.astype(np.float32) / 255.0) ** 2.2 * g
    return (np.clip(lin, 0, 1) ** (1 / 2.2) * 255.0 + 0.5).astype(np.uint8)


def _colour_cast(image: np.ndarray, strength: float) -> np.ndarray:
    """A tungsten-like white-balance error: linear red up, blue down, by `strength` (0: none)."""
    lin = (image.astype(np.float32) / 255.0) ** 2.2
    lin = lin * np.array([1.0 + 1.2 * strength, 1.0, 1.0 / (1.0 + 2.0 * strength)], np.float32)
    return (np.clip(lin, 0, 1) ** (1 / 2.2) * 255.0 + 0.5).astype(np.uint8)


def _with(fault: Callable[[np.ndarray, Face], np.ndarray]) -> Knob:
    """A fault present at 1 and gone at 0 (an occluder removed, the backdrop put back)."""
    return lambda im, f, v, scene: fault(im, f) if v >= 0.5 else im


KNOBS: dict[str, Knob] = {
    # content moved down by v x T (the camera raised), up for negative v
    "shift_down": lambda im, f, v, scene: _translate(im, 0.0, v * _t(f)),
    # content moved sideways until the nearer eye is v x IED from the picture's left / right edge
    "left_margin": lambda im, f, v, scene: _translate(im, v * synth.ied(f) - float(f.eyes[:, 0].min()), 0.0),
    "right_margin": lambda im, f, v, scene: _translate(
        im, im.shape[1] - v * synth.ied(f) - float(f.eyes[:, 0].max()), 0.0),
    "closer": lambda im, f, v, scene: _zoom(im, f, v),
    "yaw": lambda im, f, v, scene: synth.turn_head(im, f, yaw=v),
    "pitch": lambda im, f, v, scene: synth.turn_head(im, f, pitch=v),
    "roll": lambda im, f, v, scene: synth.rotate(im, f, v),
    "exposure": lambda im, f, v, scene: synth.exposure(im, v),
    "side_light": lambda im, f, v, scene: _side_light(im, f, v),
    "blur": lambda im, f, v, scene: synth.blur(im, f, v),
    "jpeg": lambda im, f, v, scene: synth.jpeg(im, round(v)),
    "cast": lambda im, f, v, scene: _colour_cast(im, v),
    "second_face": lambda im, f, v, scene: scene.second_face(im, f) if v >= 0.5 else im,
    "closed_eyes": _with(synth.close_eyes),
    "sunglasses": _with(synth.sunglasses),
    "mask": _with(synth.medical_mask),
    "cap": _with(synth.cap),
    "clutter": _with(synth.cluttered_background),
    # glasses with a highlight on the lenses at 1, the same glasses tilted so it is gone at 0
    "lens_glare": lambda im, f, v, scene: (synth.lens_glare(synth.glasses(im, f), f) if v >= 0.5
                                           else synth.glasses(im, f)),
    # a second real photo of the same subject: 1 the first (the fault), 0 the second
    "photo": lambda im, f, v, scene: im if v >= 0.5 else scene.other_photo(),
}

# phrase in the message -> (knob, how the knob moves: ("add", step) or ("mul", factor))
MOVES: list[tuple[str, str, tuple[str, float]]] = [
    ("raise the camera", "shift_down", ("add", 0.25)),
    ("lower the camera", "shift_down", ("add", -0.25)),
    ("centre the subject", "left_margin", ("add", 1.2)),
    ("centre the subject", "right_margin", ("add", 1.2)),
    ("step closer", "closer", ("mul", 1.6)),
    ("step back", "closer", ("mul", 0.75)),
    ("turn their head slightly to their left", "yaw", ("add", -12.0)),
    ("turn their head slightly to their right", "yaw", ("add", 12.0)),
    ("lower their chin", "pitch", ("add", -14.0)),
    ("raise their chin", "pitch", ("add", 14.0)),
    ("leans toward their right shoulder", "roll", ("add", -12.0)),
    ("leans toward their left shoulder", "roll", ("add", 12.0)),
    ("add light", "exposure", ("mul", 4.0)),
    ("reduce the light", "exposure", ("mul", 0.125)),
    ("one side is in shadow", "side_light", ("mul", 4.0)),
    ("hold still", "blur", ("mul", 0.25)),
    ("image quality setting", "jpeg", ("mul", 8.0)),
    ("white balance", "cast", ("mul", 0.2)),
    ("only the subject may be in view", "second_face", ("add", -1.0)),
    ("plain backdrop", "clutter", ("add", -1.0)),
    ("remove sunglasses", "sunglasses", ("add", -1.0)),
    ("remove the mask", "mask", ("add", -1.0)),
    ("remove anything covering the face", "mask", ("add", -1.0)),
    ("remove the hat", "cap", ("add", -1.0)),
    ("remove them or tilt them", "lens_glare", ("add", -1.0)),
    ("capture again", "closed_eyes", ("add", -1.0)),
    ("close their mouth", "photo", ("add", -1.0)),
    ("neutral expression", "photo", ("add", -1.0)),
]


@dataclass(frozen=True)
class Case:
    code: str
    base: str  # a shared real photo
    knob: str
    bad: float  # the knob's setting that raises the code


CASES = [
    Case("second_face", "meds-aa-S029-01.jpg", "second_face", 1.0),
    Case("too_far", "meds-aa-S001-01.jpg", "closer", 0.6),
    Case("too_close", "meds-aa-S029-01.jpg", "closer", 1.0),  # the real mug shot is framed too tightly
    Case("off_left", "img33.jpg", "left_margin", 0.6),
    Case("off_right", "img33.jpg", "right_margin", 0.6),
    Case("off_top", "meds-aa-S001-01.jpg", "shift_down", -0.35),
    Case("off_bottom", "meds-aa-S001-01.jpg", "shift_down", 0.0),  # as taken: the case of the report
    Case("turn_left", "img34.jpg", "yaw", 0.0),  # img34 is turned to the subject's right
    Case("turn_right", "meds-aa-S001-01.jpg", "yaw", -14.0),
    Case("chin_down", "meds-aa-S001-01.jpg", "pitch", 24.0),
    Case("chin_up", "meds-aa-S001-01.jpg", "pitch", -16.0),
    Case("tilt_left", "meds-aa-S029-01.jpg", "roll", 15.0),
    Case("tilt_right", "meds-aa-S029-01.jpg", "roll", -15.0),
    Case("eyes_closed", "meds-aa-S029-01.jpg", "closed_eyes", 1.0),
    Case("mouth_open", "img1.jpg", "photo", 1.0),
    Case("not_neutral", "img50.jpg", "photo", 1.0),
    Case("too_dark", "meds-aa-S029-01.jpg", "exposure", 0.15),
    Case("too_bright", "meds-aa-S029-01.jpg", "exposure", 12.0),
    Case("uneven_light", "img33.jpg", "side_light", 0.08),
    Case("blurry", "img33.jpg", "blur", 0.03),
    Case("compressed", "img33.jpg", "jpeg", 8),
    Case("unnatural_colour", "meds-aa-S001-01.jpg", "cast", 1.0),
    Case("busy_background", "meds-aa-S029-01.jpg", "clutter", 1.0),
    Case("eyes_covered", "img33.jpg", "sunglasses", 1.0),
    Case("mouth_covered", "img33.jpg", "mask", 1.0),
    Case("face_covered", "meds-aa-S029-01.jpg", "mask", 1.0),
    Case("head_covering", "img33.jpg", "cap", 1.0),
    Case("glare", "img33.jpg", "lens_glare", 1.0),
]


def _move_for(message: str, knob: str) -> tuple[str, float]:
    found = [how for phrase, k, how in MOVES if k == knob and phrase in message.lower()]
    assert len(found) == 1, f"the message {message!r} names no move of the {knob!r} knob this test knows"
    return found[0]


def _raising_gates(report, code: str) -> list:
    edges = set().union(*OPPOSITES) if code == "too_close" else set()
    return [g for g in report.gates.values() if not g.passed and (g.code == code or g.code in edges)]


def _improved(gate_before, gate_after, profile) -> bool:
    spec = next(g for g in profile.gates if g.measure == gate_before.measure)
    if gate_after.value is None:
        return False
    if spec.min is not None and gate_before.value < spec.min:
        return gate_after.value > gate_before.value
    return gate_after.value < gate_before.value


def test_every_code_a_profile_can_give_has_a_case() -> None:
    codes = {"too_close"}
    for name in available_profiles():
        for gate in load_profile(name).gates:
            codes |= {c for c in (gate.code_below, gate.code_above) if c}
    assert codes - NOT_FROM_A_MEASURE == {c.code for c in CASES}
    # Every message in the catalogue is one of these, or a profile view's (test_side_view.py moves those).
    catalogue = set(tomllib.loads(GUIDANCE_FILE.read_text(encoding="utf-8"))["messages"])
    assert catalogue == {c.code for c in CASES} | NOT_FROM_A_MEASURE | SIDE_VIEW_CODES


@pytest.mark.parametrize("case", CASES, ids=[c.code for c in CASES])
def test_moving_as_the_message_says_improves_the_measure(case: Case, load, face_of, engine: QualityEngine) -> None:
    image = load(case.base)
    face = face_of(image)
    scene = Scene(load, face_of, case.base)
    knob = KNOBS[case.knob]
    bad_image = knob(image, face, case.bad, scene)
    bad = engine.full(bad_image)
    assert case.code in {g.code for g in bad.guidance}, (case, [g.code for g in bad.guidance])
    raising = _raising_gates(bad, case.code)
    assert raising, f"no failing gate gives {case.code}"

    message = engine.profile.message(case.code)
    op, step = _move_for(message, case.knob)
    setting = case.bad + step if op == "add" else case.bad * step
    moved = engine.full(knob(image, face, setting, scene))
    for gate in raising:
        after = moved.gates[gate.measure]
        assert _improved(gate, after, engine.profile), (
            f"{case.code}: '{message}' moved {gate.measure} from {gate.value} to {after.value}")
    assert case.code not in {g.code for g in moved.guidance}, [g.code for g in moved.guidance]
