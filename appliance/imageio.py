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
  explicitly rather than trusted to the decoder;
- refuses an image of more pixels than the station allows (`[vision] max_pixels`, 40 megapixels unless
  the device profile or station.toml lowers it) from its header, before a pixel is decoded: a small
  file can declare a huge picture (a 4.7 MB JPEG of 20000x20000 took 2.5 GB to decode and analyse, on
  devices with 2 GB). JPEG, PNG and BMP sizes come from the header; other formats are checked after
  decoding.

The limit is process-wide (`set_max_pixels`, called once when a command has read its config) so that
every reader - the commands, the replay camera, imports - applies the same one.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from sync.protocol.jpeg import jpeg_dimensions

JPEG_SOI = b"\xff\xd8"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
DEFAULT_MAX_PIXELS = 40_000_000

_limit = {"max_pixels": DEFAULT_MAX_PIXELS}


class ImageError(ValueError):
    """An image file cannot be used; the message names the file and says why."""


def set_max_pixels(max_pixels: int) -> None:
    """The largest picture (width x height) any reader in this process accepts."""
    if type(max_pixels) is not int or max_pixels < 1:
        raise ValueError(f"max_pixels must be a positive whole number, got {max_pixels!r}")
    _limit["max_pixels"] = max_pixels


def max_pixels() -> int:
    return _limit["max_pixels"]


def read_file(path: str | os.PathLike[str]) -> bytes:
    """The bytes of an image file, with a named error when it cannot be read."""
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ImageError(f"image file not found: {path}") from None
    except IsADirectoryError:
        raise ImageError(f"not an image file but a directory: {path}") from None
    except OSError as exc:
        raise ImageError(f"cannot read image file {path}: {exc.strerror or exc}") from exc


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """The image at `path` as a uint8 HxWx3 RGB array, upright per its EXIF orientation."""
    return decode_image(read_file(path), name=str(path))


def header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) declared by a JPEG, PNG or BMP header, without decoding; None for other formats or
    a header too short to say."""
    if data.startswith(JPEG_SOI):
        return jpeg_dimensions(data)
    if data.startswith(PNG_SIGNATURE) and len(data) >= 24 and data[12:16] == b"IHDR":
        return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    if data.startswith(b"BM") and len(data) >= 26:
        return abs(int.from_bytes(data[18:22], "little", signed=True)), abs(
            int.from_bytes(data[22:26], "little", signed=True))
    return None


def check_pixels(width: int, height: int, name: str, limit: int | None = None) -> None:
    """Refuse a picture of more than `limit` (default: the process's) pixels, in one line."""
    limit = max_pixels() if limit is None else limit
    if width * height > limit:
        raise ImageError(f"image is {width}x{height} ({width * height / 1e6:.1f} megapixels), more than this "
                         f"station accepts ({limit / 1e6:.1f} megapixels, [vision] max_pixels): {name}")


def check_header(data: bytes, name: str, limit: int | None = None) -> None:
    """Refuse an oversized JPEG, PNG or BMP from its header (before any decoding)."""
    size = header_size(data)
    if size is not None:
        check_pixels(size[0], size[1], name, limit)


def check_file(path: str | os.PathLike[str], limit: int | None = None) -> None:
    """`check_header` on a file (for readers that decode with OpenCV themselves, like the replay camera)."""
    check_header(read_file(path), str(path), limit)


def decode_image(data: bytes, name: str = "<bytes>", limit: int | None = None) -> np.ndarray:
    """Decode encoded image bytes (JPEG, PNG, TIFF, BMP, WebP...) to uint8 RGB; `name` is for messages.

    Pictures over `limit` pixels (default: the process's `max_pixels()`) are refused: JPEG, PNG and BMP
    from the header before decoding, other formats right after it.
    """
    if not data:
        raise ImageError(f"image file is empty (0 bytes): {name}")
    check_header(data, name, limit)
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
    check_pixels(bgr.shape[1], bgr.shape[0], name, limit)
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
