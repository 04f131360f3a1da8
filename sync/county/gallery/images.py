"""The gallery decodes every capture before it keeps a record: the JPEG's header (which the wire format
has already matched against the record's width and height, and which the Type-10 export copies) must
describe the picture a viewer will show.

The picture is decoded as a viewer shows it, EXIF orientation applied. A JPEG that does not decode, or
whose picture is not the size its header and fields claim (a sideways-stored photo with an orientation
tag; a frame header edited after encoding), is refused with its own reason code, so the station keeps
the record and the county never exports a file whose image fields describe another picture. Decoding
is bounded: the wire format caps each side at `MAX_IMAGE_SIDE` and the record at its byte limit.

This runs before every ack, so it decodes at 1/8 scale first (libjpeg still entropy-decodes every
coefficient, so a JPEG that does not decode fails the same way, but it skips most of the inverse DCT,
upsampling and colour conversion: about 2.4x faster on a 1 MB photo). The scaled size is
``ceil(side / 8)``; only when that fails or disagrees with the fields, or cannot tell a sideways picture from an
upright one (both sides round to the same eighth), is the picture decoded at full size to decide and
to name the sizes in the refusal.
OpenCV (a base dependency) is imported on the first record, not with the receiver: the gallery's
commands that never decode (devices, broker-config, ...) start without it.
"""

from __future__ import annotations

from typing import Any

from sync.protocol.wire import VerifiedRecord, WireError


def check_decoded_sizes(verified: VerifiedRecord) -> None:
    """Raise `WireError` (``bad_jpeg`` or ``jpeg_size_mismatch``) for the first capture that fails."""
    import cv2
    import numpy as np

    record = verified.record
    for i, capture in enumerate(record.captures):
        where = f"captures[{i}] ({capture.pose})"
        data = np.frombuffer(capture.jpeg, dtype=np.uint8)
        expected = (-(-capture.width // 8), -(-capture.height // 8))
        ambiguous = expected[0] == expected[1] and capture.width != capture.height
        if not ambiguous and _decoded_size(cv2, data, cv2.IMREAD_REDUCED_GRAYSCALE_8) == expected:
            continue
        full = _decoded_size(cv2, data, cv2.IMREAD_COLOR)
        if full is None:
            raise WireError("bad_jpeg", f"{where}: the JPEG does not decode", record_id=record.record_id)
        width, height = full
        if (width, height) != (capture.width, capture.height):
            raise WireError("jpeg_size_mismatch", f"{where}: the JPEG header says {capture.width}x{capture.height} "
                            f"but the picture decodes to {width}x{height}", record_id=record.record_id)


def _decoded_size(cv2: Any, data: Any, flags: int) -> tuple[int, int] | None:
    """(width, height) of the picture as a viewer shows it (EXIF orientation applied), or None."""
    try:
        picture = cv2.imdecode(data, flags)
    except cv2.error:
        return None
    if picture is None:
        return None
    return picture.shape[1], picture.shape[0]
