"""Occlusion, head-covering and glare measures from colour statistics of the face itself.

OFIQ segments occlusions with a trained network (and BiSeNet face parsing for head coverings). On the
device we use the face as its own reference instead: the colour of this subject's skin is measured on
reference patches (both cheeks, the nose and the mid-forehead; median, so one covered patch does not
spoil it), and a pixel where only face should be counts as occluded when it cannot be skin or lip:

- too dark for skin in shadow (L* below `dark_ratio` x the skin's L*): sunglasses, dark masks, hands
  in shadow, dark hair;
- too grey for skin (chroma below `grey_ratio` x the skin's chroma) unless still skin-bright: medical
  masks, scarves, glasses frames, grey hair;
- the wrong hue (outside the skin's hue - `hue_below` .. + `hue_above` degrees, which includes lips and
  lipstick): blue, green, purple, bright red fabric.

The occluded fraction is then taken over the region that should be visible:

- face occlusion (0x51): the face oval minus eyes, brows, lips and nostrils;
- mouth occlusion (0x50): the lips (outer lip contour minus the mouth opening, grown by IED/20);
- eyes visible (0x4f): each eye zone (the eye opening grown by IED/20, as in ISO/IEC 29794-5), where
  sclera (bright, grey), the iris disc and the lash line are also what should be seen.

Limits (documented for county staff): a hand or other skin-coloured occluder is invisible to colour
statistics; beards and heavy eye make-up count as occlusion; greyscale images cannot be assessed (the
measures then fail to assess rather than guess).

No head coverings (0x5c): the band above the forehead (from the top of the mesh up to half an inter-eye
distance, between the temples) should show hair, skin or background. Pixels that are none of these -
saturated colours outside the natural hair range (blue, green, purple, pink, strong red) that also
differ from the background - count as covering. Limits: black, brown, grey or white caps and scarves are
hair-coloured and pass unless they cover the forehead (then face occlusion rises); dyed hair in such
colours reads as a covering.

Glasses glare (ANSI/NIST-ITL 10.019 LAF "R"): share of specular pixels (near-saturated linear luminance,
almost colourless) in the spectacle-lens zones around each eye. Catch-lights in the eyes are a few
pixels; reflections on lenses are large blobs. Bright bare skin looks the same to that count (a
washed-out photo, an oily forehead or cheek under a flash), so the glare is counted only when the face
wears glasses: a spectacle bridge is a thin line across the nose between the eyes, darker than the skin
above and below it, which bare skin there never shows (the brows end beside it, not across it). The
evidence is the deepest thin dip in the row profile of a narrow band down the nose bridge (grey levels
below the profile's running median). Limits: rimless glasses and frames about as light as the skin show
no line, so glare on them is not flagged; a unibrow can read as a frame (glare is then counted as
before).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from typing import Any

import cv2
import numpy as np

from appliance.quality.registry import measure
from appliance.quality.session import FaceView, QualitySession
from appliance.quality.types import CannotAssess
from appliance.vision import landmarks as lm
from appliance.vision.resample import ellipse_mask, polygon_mask

NOSE_PATCH = 197  # on the nose ridge between the eyes and the tip
FOREHEAD_PATCH = 151  # mid-forehead, above the brows


@dataclass
class SkinModel:
    """Reference skin colour of this face (CIELAB medians over the reference patches)."""

    L: float
    chroma: float
    hue: float  # degrees

    @staticmethod
    def of(view: FaceView, p: Mapping[str, Any]) -> SkinModel:
        """Median colour of the reference patches, each weighted by how much it looks like skin.

        Each patch (both cheeks, nose ridge, mid-forehead) is summarised by its median; a patch whose
        hue is outside the range of human skin or that is too grey (a mask over the cheeks, a cap over
        the forehead) gets weight 0, so the occluder does not become the reference. The weights ramp
        over a few degrees (and chroma units) around those limits instead of switching, and the median
        across patches is a smoothed one: a hard cut made this model, and every occlusion measure with
        it, jump (0.164 -> 0.185 on one golden image) when a cheek's hue crossed 10 degrees by half a
        degree, which one grey level of resampling noise was enough to do.
        """
        boxes = list(view.cheek_boxes)
        r = max(2, round(0.08 * view.ied))
        for idx in (NOSE_PATCH, FOREHEAD_PATCH):
            x, y = view.mesh[idx]
            boxes.append((round(x - r), round(y - r), round(x + r), round(y + r)))
        medians = []
        for x0, y0, x1, y1 in boxes:
            sl = (slice(max(0, y0), max(0, y1)), slice(max(0, x0), max(0, x1)))
            lab = view.lab[sl][view.valid[sl] > 0]
            if len(lab) >= 4:
                medians.append(np.median(lab, axis=0).astype(np.float64))
        if not medians:
            raise CannotAssess("skin reference patches not visible")
        weights = np.array([_skin_plausibility(m, p) for m in medians])
        if weights.sum() <= 0:
            raise CannotAssess("no skin-coloured reference on the face (greyscale, washed out, or covered)")
        L, a, b = (float(v) for v in _smooth_median(np.stack(medians), weights))
        return SkinModel(L=L, chroma=math.hypot(a, b), hue=math.degrees(math.atan2(b, a)))


def _ramp(x: float, edge: float, half_width: float) -> float:
    """0 below `edge - half_width`, 1 above `edge + half_width`, linear between (0.5 at the edge)."""
    if half_width <= 0:
        return float(x >= edge)
    return min(1.0, max(0.0, (x - edge + half_width) / (2 * half_width)))


def _skin_plausibility(lab: np.ndarray, p: Mapping[str, Any]) -> float:
    """0-1: how much a patch's median colour looks like skin (hue within the skin range, not grey)."""
    lo, hi = p.get("skin_hue_range", [10.0, 90.0])
    hue_soft = float(p.get("skin_hue_soft", 5.0))
    chroma = math.hypot(lab[1], lab[2])
    hue = math.degrees(math.atan2(lab[2], lab[1]))
    return (_ramp(chroma, float(p.get("min_skin_chroma", 4.0)), float(p.get("skin_chroma_soft", 2.0)))
            * _ramp(hue, float(lo), hue_soft) * _ramp(-hue, -float(hi), hue_soft))


SMOOTH_MEDIAN_EPS = 1.0  # CIELAB units (about one just-noticeable difference)
SMOOTH_MEDIAN_STEPS = 60


def _smooth_median(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Per-column weighted median of (n, k) `values`, smoothed so it moves continuously with its inputs.

    Minimises sum_i w_i * sqrt((x - v_i)^2 + eps^2) per column (Weiszfeld iterations from the weighted
    mean). With eps -> 0 this is the weighted median; eps = 1 CIELAB unit keeps its robustness to one
    odd patch, and unlike a median of a changing number of patches a weight that goes to 0 fades out.
    """
    w = weights[:, None]
    x = (w * values).sum(axis=0) / w.sum()
    for _ in range(SMOOTH_MEDIAN_STEPS):
        k = w / np.sqrt((values - x) ** 2 + SMOOTH_MEDIAN_EPS**2)
        x = (k * values).sum(axis=0) / k.sum(axis=0)
    return x


class FaceLikeness:
    """Per-pixel 'could be skin or lip' map of the chip, from the skin model and the thresholds."""

    def __init__(self, view: FaceView, p: Mapping[str, Any]) -> None:
        self.view = view
        self.model = SkinModel.of(view, p)
        self.p = p

    @cached_property
    def map(self) -> np.ndarray:
        lab = self.view.lab
        lightness, a, b = lab[..., 0], lab[..., 1], lab[..., 2]
        chroma = np.hypot(a, b)
        hue = np.degrees(np.arctan2(b, a))
        m, p = self.model, self.p
        dark = lightness < float(p.get("dark_ratio", 0.45)) * m.L
        grey_limit = float(p.get("grey_ratio", 0.35)) * m.chroma
        bright_limit = m.L + float(p.get("grey_bright_margin", 12))
        grey = (chroma < grey_limit) & (lightness < bright_limit)
        dh = (hue - m.hue + 180.0) % 360.0 - 180.0
        coloured = chroma >= 0.5 * m.chroma
        wrong_hue = coloured & ((dh < -float(p.get("hue_below", 40.0))) | (dh > float(p.get("hue_above", 30.0))))
        return ~(dark | grey | wrong_hue)


def _likeness(s: QualitySession, p: Mapping[str, Any] | None = None) -> FaceLikeness:
    """The session's face-likeness map; its thresholds live under [face_occlusion_prevention.params]."""
    return s.memo("face_likeness", lambda: FaceLikeness(s.chip, s.config.params_for("face_occlusion_prevention")))


def _occluded_fraction(face_like: np.ndarray, region: np.ndarray) -> float:
    sel = region > 0
    n = int(np.count_nonzero(sel))
    if n < 20:
        raise CannotAssess("region to check is not visible in the image")
    return float(np.count_nonzero(~face_like[sel]) / n)


def _grow(mask: np.ndarray, px: float) -> np.ndarray:
    r = max(1, round(px))
    return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1)))


@measure("eyes_visible", 0x4F)
def eyes_visible(s: QualitySession, p: Mapping[str, Any]) -> tuple[float, dict]:
    """Occluded fraction of the worse eye's zone (eye opening grown by IED/20)."""
    chip = s.chip
    like = _likeness(s, p)
    v = chip.ied / 20.0
    lab = chip.lab
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    sclera = (lab[..., 0] >= float(p.get("sclera_ratio", 0.8)) * like.model.L) & (chroma <= max(8.0, like.model.chroma))
    contours = s.face.eye_contours
    fractions = []
    for e, mask in enumerate(chip.eye_masks):
        opening = mask
        if contours is not None:
            pts = (np.asarray(contours[e][:16], dtype=float) @ chip.affine[:, :2].T) + chip.affine[:, 2]
            opening = polygon_mask(mask.shape, pts)
        zone = cv2.bitwise_and(_grow(opening, v), chip.valid)
        lash = cv2.subtract(_grow(opening, 0.35 * v), cv2.erode(opening, np.ones((3, 3), np.uint8)))
        iris = np.zeros_like(mask)
        if s.face.iris is not None:
            ring_pts = (np.asarray(s.face.iris[e], dtype=float) @ chip.affine[:, :2].T) + chip.affine[:, 2]
            radius = max(1.0, float(np.mean(np.linalg.norm(ring_pts[1:] - ring_pts[0], axis=1))))
            iris = cv2.bitwise_and(ellipse_mask(mask.shape, ring_pts[0], (radius, radius)), opening)
        not_dark = lab[..., 0] >= float(p.get("iris_min_ratio", 0.15)) * like.model.L
        visible = like.map | sclera | (lash > 0) | ((iris > 0) & not_dark)
        fractions.append(_occluded_fraction(visible, zone))
    return max(fractions), {"right": fractions[0], "left": fractions[1]}


@measure("mouth_occlusion_prevention", 0x50)
def mouth_occlusion_prevention(s: QualitySession, p: Mapping[str, Any]) -> float:
    """Occluded fraction of the lips (outer lip contour minus the mouth opening, grown by IED/20)."""
    chip = s.chip
    lips = cv2.subtract(_grow(chip.lips_mask, chip.ied / 20.0), chip.mouth_opening_mask)
    return _occluded_fraction(_likeness(s, p).map, cv2.bitwise_and(lips, chip.valid))


@measure("face_occlusion_prevention", 0x51)
def face_occlusion_prevention(s: QualitySession, p: Mapping[str, Any]) -> float:
    """Occluded fraction of the face oval (eyes, brows, lips and nostrils excluded)."""
    return _occluded_fraction(_likeness(s, p).map, s.chip.skin_mask)


@measure("no_head_coverings", 0x5C)
def no_head_coverings(s: QualitySession, p: Mapping[str, Any]) -> tuple[float, dict]:
    """Share of the band above the forehead whose colour is neither hair, skin nor background."""
    view = s.portrait
    top = view.mesh[lm.FOREHEAD_TOP]
    xr, xl = view.mesh[103, 0], view.mesh[332, 0]  # upper-forehead width (temples)
    band = np.zeros(view.rgb.shape[:2], np.uint8)
    height = float(p.get("band_height", 0.5)) * view.ied
    x0, x1 = round(min(xr, xl)), round(max(xr, xl))
    y1 = round(top[1] + 0.05 * view.ied)
    y0 = max(0, round(y1 - height))
    band[y0:y1, max(0, x0):x1] = 255
    band = cv2.bitwise_and(band, view.valid)
    sel = band > 0
    if np.count_nonzero(sel) < 20:
        raise CannotAssess("the top of the head is outside the image")
    lab = view.lab
    pix = lab[sel]  # only the band's pixels are classified
    chroma = np.hypot(pix[:, 1], pix[:, 2])
    hue = np.degrees(np.arctan2(pix[:, 2], pix[:, 1]))
    hue_lo, hue_hi = p.get("hair_hue_range", [15.0, 100.0])
    warm = (hue >= hue_lo) & (hue <= hue_hi) & (chroma <= float(p.get("warm_max_chroma", 50.0)))
    natural = (chroma <= float(p.get("hair_max_chroma", 22.0))) | warm
    bg = s.background
    background_like = np.zeros(len(pix), bool)
    if np.count_nonzero(bg.mask) >= 50:
        bg_lab = lab[bg.mask > 0]
        # Background colours: distance to the nearest of a few background colour clusters (median of
        # each lightness tercile), so a two-tone or graded wall still counts as wall.
        order = np.argsort(bg_lab[:, 0])
        refs = [np.median(part, axis=0) for part in np.array_split(bg_lab[order], 3) if len(part)]
        dist = np.min([np.linalg.norm(pix - ref, axis=-1) for ref in refs], axis=0)
        background_like = dist < float(p.get("background_delta_e", 15.0))
    covering = ~(natural | background_like)
    return float(np.count_nonzero(covering) / len(pix)), {}


def bridge_line_contrast(view: FaceView, p: Mapping[str, Any]) -> float:
    """Depth (grey levels) of the darkest thin horizontal line across the nose bridge between the eyes.

    A narrow band (+-`bridge_half_width` IED about the eye midpoint, from `bridge_top` IED above the eye
    line to `bridge_bottom` below it) is resampled along the eye axis at 40 px per IED; its row means
    minus their running median over 0.2 IED leave thin lines only, so the slow shading of the nose does
    not count.
    """
    (rx, ry), (lx, ly) = view.eyes
    axis = np.array([lx - rx, ly - ry], dtype=np.float64)
    d = float(np.hypot(*axis))
    if d < 1e-6:
        raise CannotAssess("eyes coincide")
    axis /= d
    normal = np.array([-axis[1], axis[0]])
    if normal[1] < 0:  # pointing down the face
        normal = -normal
    half_w = float(p.get("bridge_half_width", 0.08))
    top, bottom = float(p.get("bridge_top", 0.35)), float(p.get("bridge_bottom", 0.1))
    px = 40.0
    step = d / px
    mid = np.array([(rx + lx) / 2, (ry + ly) / 2])
    to_view = np.column_stack([axis * step, normal * step, mid - half_w * d * axis - top * d * normal])
    size = (max(2, round(2 * half_w * px)), max(4, round((top + bottom) * px)))
    band = cv2.warpAffine(view.grey, to_view, size, flags=cv2.INTER_AREA | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)
    rows = band.astype(np.float64).mean(axis=1)
    k = max(1, round(0.1 * px))
    running = np.array([np.median(rows[max(0, i - k): i + k + 1]) for i in range(len(rows))])
    return float(max(0.0, -(rows - running).min()))


@measure("glasses_glare", None)
def glasses_glare(s: QualitySession, p: Mapping[str, Any]) -> tuple[float, dict]:
    """Share of near-white specular pixels in the spectacle-lens zones around both eyes; 0 without glasses."""
    chip = s.chip
    frame = bridge_line_contrast(chip, p)
    specular = _specular_share(chip, p)
    glasses = frame >= float(p.get("frame_min_contrast", 45.0))
    return (specular if glasses else 0.0), {"glasses": float(glasses), "frame_contrast": frame,
                                            "specular_share": specular}


def _specular_share(chip: FaceView, p: Mapping[str, Any]) -> float:
    angle = math.degrees(math.atan2(chip.eyes[1][1] - chip.eyes[0][1], chip.eyes[1][0] - chip.eyes[0][0]))
    axes = (float(p.get("lens_half_width", 0.42)) * chip.ied, float(p.get("lens_half_height", 0.3)) * chip.ied)
    zone = cv2.bitwise_or(*(ellipse_mask(chip.rgb.shape[:2], eye, axes, angle) for eye in chip.eyes))
    zone = cv2.bitwise_and(zone, chip.valid)
    sel = zone > 0
    if np.count_nonzero(sel) < 20:
        raise CannotAssess("eye regions not visible")
    lab = chip.lab
    chroma = np.hypot(lab[..., 1], lab[..., 2])
    bright = chip.lum >= int(p.get("specular_min_luminance", 215))
    specular = bright & (chroma <= float(p.get("specular_max_chroma", 12.0)))
    return float(np.count_nonzero(specular[sel]) / np.count_nonzero(sel))
