"""Reading photos from disk as RGB arrays, with errors an officer or county IT can act on.

Every image that enters the appliance from a file (replay camera, imports, tests, tools) comes through
`read_image`, so there is one place that:

- applies the EXIF orientation tag (phones and some cameras store the pixels sideways and rely on the
  tag; a sideways face fails detection and would be saved sideways), which OpenCV's decoder does for
  `IMREAD_COLOR` (OpenCV >= 3.1, checked for both `imread` and `imdecode`);
- returns 8-bit, 3-channel RGB whatever the file holds (grey, palette, alpha, 16-bit TIFF), because
  every model and measure downstream expects exactly that;
- refuses a missing, empty, non-image, truncated or undecodable file with an `ImageError` that names
  the file. OpenCV 5 rejects a JPEG without its end marker, but OpenCV 4 (used with tflite-runtime)
  returns a half-grey picture with only a console warning, so truncation of JPEGs is checked here
  explicitly rather than trusted to the decoder.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

JPEG_SOI = b"\xff\xd8"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


class ImageError(ValueError):
    """An image file cannot be used; the message names the file and says why."""


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """The image at `path` as a uint8 HxWx3 RGB array, upright per its EXIF orientation."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"image file not found: {path}") from None
    except IsADirectoryError:
        raise ImageError(f"not an image file but a directory: {path}") from None
    except OSError as exc:
        raise ImageError(f"cannot read image file {path}: {exc.strerror or exc}") from exc
    return decode_image(data, name=str(path))


def decode_image(data: bytes, name: str = "<bytes>") -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, TIFF, BMP, WebP...) to uint8 RGB; `name` is for messages."""
    if not data:
        raise ImageError(f"image file is empty (0 bytes): {name}")
    problem = _truncation(data)
    if problem:
        raise ImageError(f"image file is truncated or corrupt ({problem}): {name}")
    try:
        bgr = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:  # pragma: no cover - OpenCV raises only on internal failures
        raise ImageError(f"cannot decode image file {name}: {exc}") from exc
    if bgr is None:
        kind = _kind(data)
        if kind is None:
            raise ImageError(f"not an image, or a format this device cannot read: {name}")
        raise ImageError(f"{kind} image file is truncated or corrupt (the decoder rejected it): {name}")
    if bgr.ndim != 3 or bgr.shape[2] != 3 or bgr.size == 0 or bgr.dtype != np.uint8:
        raise ImageError(f"decoded image has an unusable form {bgr.dtype} {bgr.shape}: {name}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def _kind(data: bytes) -> str | None:
    """The container format by its magic bytes, for error messages; None when unrecognised."""
    if data.startswith(JPEG_SOI):
        return "JPEG"
    if data.startswith(PNG_SIGNATURE):
        return "PNG"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "TIFF"
    if data.startswith(b"BM"):
        return "BMP"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "WebP"
    return None


def _truncation(data: bytes) -> str | None:
    """Why the file is structurally incomplete, or None. Only formats with a reliable end marker."""
    if data.startswith(JPEG_SOI):
        return _jpeg_truncation(data)
    if data.startswith(PNG_SIGNATURE) and b"IEND" not in data:
        return "no PNG end chunk"
    return None


def _jpeg_truncation(data: bytes) -> str | None:
    """Walk the JPEG header segments to the first scan, then require an end-of-image marker after it.

    Searching the whole file for FF D9 would be fooled by the EXIF thumbnail, which is a complete JPEG
    inside the APP1 segment; after the scan starts, FF D9 cannot occur except as the real end marker
    (entropy-coded 0xFF bytes are stuffed as FF 00).
    """
    pos = 2
    n = len(data)
    while pos + 4 <= n:
        if data[pos] != 0xFF:
            return "bad JPEG segment marker"
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker == 0xD9:
            return "JPEG ends before any image data"
        if 0xD0 <= marker <= 0xD7 or marker == 0x01:  # markers without a length
            pos += 2
            continue
        length = int.from_bytes(data[pos + 2 : pos + 4], "big")
        if length < 2:
            return "bad JPEG segment length"
        if marker == 0xDA:  # start of scan: image data follows
            scan = pos + 2 + length
            if scan > n or data.find(b"\xff\xd9", scan) < 0:
                return "JPEG end marker missing"
            return None
        pos += 2 + length
    return "JPEG ends inside its header"
