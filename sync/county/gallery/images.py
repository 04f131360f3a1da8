"""The gallery decodes every capture before it keeps a record: the JPEG's header (which the wire format
has already matched against the record's width and height, and which the Type-10 export copies) must
describe the picture a viewer will show.

The picture is decoded as a viewer shows it, EXIF orientation applied. A JPEG that does not decode, or
whose picture is not the size its header and fields claim (a sideways-stored photo with an orientation
tag; a frame header edited after encoding), is refused with its own reason code, so the station keeps
the record and the county never exports a file whose image fields describe another picture. Decoding
is bounded: the wire format caps each side at `MAX_IMAGE_SIDE` and the record at its byte limit.
OpenCV (a base dependency) is imported on the first record, not with the receiver: the gallery's
commands that never decode (devices, broker-config, ...) start without it.
"""

from __future__ import annotations

from sync.protocol.wire import VerifiedRecord, WireError


def check_decoded_sizes(verified: VerifiedRecord) -> None:
    """Raise `WireError` (``bad_jpeg`` or ``jpeg_size_mismatch``) for the first capture that fails."""
    import cv2
    import numpy as np

    record = verified.record
    for i, capture in enumerate(record.captures):
        where = f"captures[{i}] ({capture.pose})"
        try:
            picture = cv2.imdecode(np.frombuffer(capture.jpeg, dtype=np.uint8), cv2.IMREAD_COLOR)
        except cv2.error:
            picture = None
        if picture is None:
            raise WireError("bad_jpeg", f"{where}: the JPEG does not decode", record_id=record.record_id)
        height, width = picture.shape[:2]
        if (width, height) != (capture.width, capture.height):
            raise WireError("jpeg_size_mismatch", f"{where}: the JPEG header says {capture.width}x{capture.height} "
                            f"but the picture decodes to {width}x{height}", record_id=record.record_id)
