"""Colour conversions the photometric measures share.

Luminance follows ISO/IEC 29794-5 (as OFIQ implements it): linearise sRGB, Y = 0.2126 R + 0.7152 G +
0.0722 B, scaled back to 0-255 integers. It is *linear* light, so a well-exposed face has a mean near
0.3-0.5, not the 0.6-0.7 of gamma-encoded grey values. A 256-entry table makes it a few lookups.
"""

from __future__ import annotations

import cv2
import numpy as np


def _srgb_to_linear(v: np.ndarray) -> np.ndarray:
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)


_LINEAR = _srgb_to_linear(np.arange(256) / 255.0)
# Per-channel contributions to Y in 1/255 units, so Y = lut_r[R] + lut_g[G] + lut_b[B].
_LUT_R = (0.2126 * 255.0 * _LINEAR).astype(np.float32)
_LUT_G = (0.7152 * 255.0 * _LINEAR).astype(np.float32)
_LUT_B = (0.0722 * 255.0 * _LINEAR).astype(np.float32)


def luminance(rgb: np.ndarray) -> np.ndarray:
    """Linear-light luminance of a uint8 RGB image as uint8 0-255 (ISO/IEC 29794-5 definition)."""
    y = _LUT_R[rgb[..., 0]] + _LUT_G[rgb[..., 1]] + _LUT_B[rgb[..., 2]]
    return np.floor(y + 0.5).astype(np.uint8)


def lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of a uint8 RGB image as float32: L in 0-100, a* and b* in their natural units."""
    return cv2.cvtColor(rgb.astype(np.float32) * (1.0 / 255.0), cv2.COLOR_RGB2Lab)


def mean_lab(rgb_pixels: np.ndarray) -> tuple[float, float, float]:
    """CIELAB of the mean colour of (N, 3) uint8 RGB pixels (mean taken in linear light, then converted)."""
    lin = _LINEAR[rgb_pixels.reshape(-1, 3)].mean(axis=0)
    srgb = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
    px = np.clip(srgb, 0, 1).astype(np.float32).reshape(1, 1, 3)
    L, a, b = cv2.cvtColor(px, cv2.COLOR_RGB2Lab)[0, 0]
    return float(L), float(a), float(b)
