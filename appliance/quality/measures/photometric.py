"""Photometric measures: luminance, exposure, dynamic range, uniformity, colour, sharpness, compression.

All but compression work on the session's aligned chip (96 px inter-eye distance), so the values do not
depend on the camera's resolution. Luminance is linear light per ISO/IEC 29794-5 (see `colour.py`).

Sharpness (0x49). OFIQ runs a random-forest classifier over Laplacian/Sobel statistics. We use a
re-blur ratio, a classic no-reference focus measure that needs no trained model: blur the face once more
with a small Gaussian and see how much gradient energy that removes. A sharp face has fine detail that a
small blur destroys (ratio near 1); an out-of-focus face has none left to lose (ratio near 0). Being a
ratio of the same region's energies it does not depend on contrast or exposure. Limits: sensor noise
reads as detail (a noisy, slightly soft face scores higher than it should), and the measure sees only
the face region, at the chip's scale: a face below ~96 px IED is upsampled and so reads softer.

Compression artefacts (0x4a). OFIQ runs a CNN that predicts SSIM. We measure JPEG blockiness directly on
the source pixels of the face: JPEG quantises each 8x8 block on its own, so at strong compression the
luminance steps between neighbouring pixels are larger across block boundaries than inside blocks. The
raw value is the mean step on the strongest 8-pixel phase divided by the mean step on the other
phases, for columns and rows (1.0: no grid; 1.1+: visible blocks). Taking the strongest phase rather than
a fixed one finds the grid even after a crop that shifted it. Limits: it cannot see JPEG 2000, blur-type
loss or a JPEG that was resized afterwards (resampling smears the grid), and it needs the source array,
not a resampled chip.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import cv2
import numpy as np

from appliance.quality import colour
from appliance.quality.registry import measure
from appliance.quality.session import QualitySession
from appliance.quality.types import CannotAssess
from appliance.vision import landmarks as lm

MIN_PIXELS = 50


def _hist(values: np.ndarray, mask: np.ndarray, bins: int = 256) -> np.ndarray:
    """Normalised histogram of uint8 `values` under `mask`."""
    sel = values[mask > 0]
    if sel.size < MIN_PIXELS:
        raise CannotAssess(f"face region too small ({sel.size} pixels)")
    hist = np.bincount(sel.ravel() // (256 // bins), minlength=bins).astype(np.float64)
    return hist / hist.sum()


def _face_hist(s: QualitySession) -> np.ndarray:
    return _hist(s.chip.lum, s.chip.face_mask)


@measure("background_uniformity", 0x42)
def background_uniformity(s: QualitySession, p: Mapping[str, Any]) -> tuple[float, dict]:
    """Mean luminance-gradient magnitude (Scharr) over the background beside and above the head."""
    bg = s.background
    area = int(np.count_nonzero(bg.mask))
    min_share = float(p.get("min_background_share", 0.03))
    if area < min_share * bg.mask.size:
        raise CannotAssess("too little background visible around the head")
    lum = bg.view.lum.astype(np.float32)
    gx = cv2.Scharr(lum, cv2.CV_32F, 1, 0)
    gy = cv2.Scharr(lum, cv2.CV_32F, 0, 1)
    mag = np.sqrt(gx * gx + gy * gy)
    return float(mag[bg.mask > 0].mean()), {"background_share": area / bg.mask.size}


@measure("illumination_uniformity", 0x43)
def illumination_uniformity(s: QualitySession, p: Mapping[str, Any]) -> float:
    """Overlap (sum of bin-wise minima) of the luminance histograms of the left and right face halves."""
    chip = s.chip
    bins = int(p.get("bins", 64))
    mask = chip.skin_mask
    mid = round(chip.midline_x)
    right, left = mask.copy(), mask.copy()
    right[:, mid:] = 0
    left[:, :mid] = 0
    h1, h2 = _hist(chip.lum, right, bins), _hist(chip.lum, left, bins)
    return float(np.minimum(h1, h2).sum())


@measure("luminance_mean", 0x44, live=True)
def luminance_mean(s: QualitySession, p: Mapping[str, Any]) -> float:
    """Mean linear luminance of the face region, 0 (black) to 1 (white).

    Live-capable: it needs the face chip (one 384x384 warp and a table lookup, about a millisecond),
    which lets the preview say "too dark" before the officer captures.
    """
    h = _face_hist(s)
    return float((h * np.arange(256)).sum() / 255.0)


@measure("luminance_variance", 0x45)
def luminance_variance(s: QualitySession, p: Mapping[str, Any]) -> float:
    """Variance of the face region's linear luminance on the 0-1 scale."""
    h = _face_hist(s)
    x = np.arange(256) / 255.0
    mean = float((h * x).sum())
    return float((h * (x - mean) ** 2).sum())


@measure("under_exposure_prevention", 0x46)
def under_exposure_prevention(s: QualitySession, p: Mapping[str, Any]) -> float:
    """Share of face pixels in the dark range (linear luminance <= 25 of 255)."""
    h = _face_hist(s)
    return float(h[: int(p.get("dark_max", 25)) + 1].sum())


@measure("over_exposure_prevention", 0x47)
def over_exposure_prevention(s: QualitySession, p: Mapping[str, Any]) -> float:
    """Share of face pixels in the bright range (linear luminance >= 247 of 255)."""
    h = _face_hist(s)
    return float(h[int(p.get("bright_min", 247)):].sum())


@measure("dynamic_range", 0x48)
def dynamic_range(s: QualitySession, p: Mapping[str, Any]) -> float:
    """Entropy of the face luminance histogram, in bits (0-8)."""
    h = _face_hist(s)
    nz = h[h > 0]
    return float(-(nz * np.log2(nz)).sum())


@measure("sharpness", 0x49)
def sharpness(s: QualitySession, p: Mapping[str, Any]) -> tuple[float, dict]:
    """Re-blur ratio: share of the face's gradient energy that one more small Gaussian blur removes."""
    chip = s.chip
    mask = cv2.erode(chip.face_mask, np.ones((5, 5), np.uint8)) > 0
    if np.count_nonzero(mask) < MIN_PIXELS:
        raise CannotAssess("face region too small")
    grey = chip.grey.astype(np.float32)
    sigma = float(p.get("sigma", 1.0))
    blurred = cv2.GaussianBlur(grey, (0, 0), sigma)

    def energy(img: np.ndarray) -> float:
        gx = cv2.Sobel(img, cv2.CV_32F, 1, 0, ksize=3)
        gy = cv2.Sobel(img, cv2.CV_32F, 0, 1, ksize=3)
        return float((gx * gx + gy * gy)[mask].mean())

    e0, e1 = energy(grey), energy(blurred)
    if e0 <= 1e-6:
        raise CannotAssess("face region has no detail at all (flat image)")
    return 1.0 - e1 / e0, {"gradient_energy": e0}


def _phase_ratio(steps: np.ndarray) -> float:
    """steps: mean absolute step between pixel i and i+1 for consecutive i; ratio of strongest phase."""
    n = (steps.size // 8) * 8
    if n < 32:
        raise CannotAssess("face region too small for block analysis")
    phases = steps[:n].reshape(-1, 8).mean(axis=0)
    k = int(np.argmax(phases))
    others = np.delete(phases, k)
    return float(phases[k] / max(others.mean(), 1e-6))


@measure("compression_artifacts", 0x4A)
def compression_artifacts(s: QualitySession, p: Mapping[str, Any]) -> tuple[float, dict]:
    """JPEG 8x8 blockiness of the face in source pixels: strongest-phase step / other phases' steps."""
    oval = s.mesh[list(lm.FACE_OVAL), :2]
    x0, y0 = np.floor(oval.min(axis=0)).astype(int)
    x1, y1 = np.ceil(oval.max(axis=0)).astype(int)
    # Inner part of the face box (skin-dominated, few strong natural edges), in source pixels.
    w, h = x1 - x0, y1 - y0
    x0, x1 = max(0, x0 + w // 6), min(s.width, x1 - w // 6)
    y0, y1 = max(0, y0 + h // 8), min(s.height, y1 - h // 8)
    if x1 - x0 < 32 or y1 - y0 < 32:
        raise CannotAssess("face too small for block analysis")
    # Align the analysis window with the image's own 8x8 grid origin (JPEG blocks start at 0, 0).
    x0, y0 = x0 - x0 % 8, y0 - y0 % 8
    grey = cv2.cvtColor(s.image[y0:y1, x0:x1], cv2.COLOR_RGB2GRAY).astype(np.float32)
    dx = np.abs(np.diff(grey, axis=1))
    dy = np.abs(np.diff(grey, axis=0))
    # Ignore strong natural edges: they are not block boundaries and dominate the means.
    cap = float(p.get("step_cap", 24.0))
    dx, dy = np.minimum(dx, cap), np.minimum(dy, cap)
    rx = _phase_ratio(dx.mean(axis=0))
    ry = _phase_ratio(dy.mean(axis=1))
    return (rx + ry) / 2.0, {"columns": rx, "rows": ry}


@measure("natural_colour", 0x4B)
def natural_colour(s: QualitySession, p: Mapping[str, Any]) -> tuple[float, dict]:
    """Distance of the cheeks' mean CIELAB (a*, b*) from the natural-skin box a* 5-25, b* 5-35."""
    chip = s.chip
    pixels = []
    for x0, y0, x1, y1 in chip.cheek_boxes:
        box = chip.rgb[max(0, y0):y1, max(0, x0):x1]
        valid = (chip.skin_mask[max(0, y0):y1, max(0, x0):x1] > 0)
        pixels.append(box[valid])
    sel = np.concatenate(pixels) if pixels else np.empty((0, 3), np.uint8)
    if len(sel) < 20:
        raise CannotAssess("cheek regions not visible")
    _, a, b = colour.mean_lab(sel)
    lo_a, hi_a = p.get("a_range", [5.0, 25.0])
    lo_b, hi_b = p.get("b_range", [5.0, 35.0])
    if a < 0 or b < 0:
        raw = float(p.get("negative_raw", 100.0))  # green or blue cast: as far from skin as it gets
    else:
        raw = math.hypot(max(0.0, lo_a - a, a - hi_a), max(0.0, lo_b - b, b - hi_b))
    return raw, {"a": a, "b": b}
