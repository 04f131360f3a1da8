"""Colour conversions the photometric measures share.

Luminance follows ISO/IEC 29794-5 (as OFIQ implements it): linearise sRGB, Y = 0.2126 R + 0.7152 G +
0.0722 B, scaled back to 0-255 integers. It is *linear* light, so a well-exposed face has a mean near
0.3-0.5, not the 0.6-0.7 of gamma-encoded grey values. A 256-entry table makes it a few lookups.

CIELAB (D65, sRGB primaries, OpenCV's constants) is computed here too rather than by `cv2.cvtColor`,
whose float path quantises its result (a* and b* move in steps of about 0.2, so the mean colour of a
patch could jump by a quarter of a unit for a change far below one grey level). Element-wise float
arithmetic with CIE's continuous f(t) gives a smooth conversion and the same values under every OpenCV.
"""

from __future__ import annotations

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


# sRGB (linear) -> XYZ, rows X, Y, Z, each divided by the D65 white's X, Y, Z (OpenCV's constants).
_XYZ = np.array([[0.412453, 0.357580, 0.180423],
                 [0.212671, 0.715160, 0.072169],
                 [0.019334, 0.119193, 0.950227]]) / np.array([[0.950456], [1.0], [1.088754]])
_LINEAR_F32 = _LINEAR.astype(np.float32)
_EPSILON = 216.0 / 24389.0  # CIE: below this, f(t) is the linear segment that meets the cube root smoothly
_KAPPA = 24389.0 / 27.0


def _lab_from_linear(r: np.ndarray, g: np.ndarray, b: np.ndarray) -> np.ndarray:
    """CIELAB (..., 3) from linear-light R, G, B arrays; element-wise operations only (no BLAS)."""
    x, y, z = (m[0] * r + m[1] * g + m[2] * b for m in _XYZ.astype(r.dtype))
    fx, fy, fz = (np.where(t > _EPSILON, np.cbrt(t), (_KAPPA * t + 16.0) / 116.0).astype(r.dtype) for t in (x, y, z))
    return np.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], axis=-1).astype(r.dtype)


def lab(rgb: np.ndarray) -> np.ndarray:
    """CIELAB (D65) of a uint8 RGB image as float32: L in 0-100, a* and b* in their natural units."""
    return _lab_from_linear(_LINEAR_F32[rgb[..., 0]], _LINEAR_F32[rgb[..., 1]], _LINEAR_F32[rgb[..., 2]])


def mean_lab(rgb_pixels: np.ndarray) -> tuple[float, float, float]:
    """CIELAB of the mean colour of (N, 3) uint8 RGB pixels (mean taken in linear light, then converted)."""
    lin = _LINEAR[rgb_pixels.reshape(-1, 3)].mean(axis=0)
    L, a, b = _lab_from_linear(*(np.float64(v) for v in lin))
    return float(L), float(a), float(b)
