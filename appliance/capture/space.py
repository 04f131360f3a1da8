"""How much disk the next booking may need, for the free-space check before it starts and before each photo
is processed (:meth:`CaptureStation.check_space`): in one place, from the configuration and from what this
desk's recent bookings really took.

The save checks its exact size (`appliance.store.space.booking_write_bytes` of its JPEGs and templates);
the early check cannot know the photos yet, so it bounds them:

* **From the configuration**: the standardized frontal is the capture standard's output (``[output]``
  width x height at its ``jpeg_quality``); each profile view is kept as taken, cut to the subject, so at
  most one camera frame (the camera options' ``width`` x ``height`` or ``still_size``; without them, the
  station's ``[vision] max_pixels``, the largest picture it accepts) at `images.JPEG_QUALITY`. A JPEG's
  size is bounded per pixel by its quality (`JPEG_BYTES_PER_PIXEL`: twice the largest measured on real
  face photos, 57 images of 0.16-12.6 MP: 0.30 B/px at quality 92, 0.40 at 95, 0.82 at 100).
* **From recent bookings**: the largest image total of the newest bookings in the store (a desk that
  takes scar/mark/tattoo photos needs more than the three views).

The larger of the two goes through the save's own rule (twice over for the WAL, plus its overhead) with
the largest templates the record format allows.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from appliance.capture.images import JPEG_QUALITY
from appliance.quality.profile import Geometry
from appliance.store.space import booking_write_bytes
from sync.protocol.record import MAX_TEMPLATE_DIM, SINGLE_POSES

#: Upper bound of a JPEG's bytes per pixel for a photograph, by the highest quality it applies to (see the
#: module docstring for the measurements behind it; pure noise would take more, a camera does not see it).
JPEG_BYTES_PER_PIXEL: tuple[tuple[int, float], ...] = ((90, 0.6), (95, 0.8), (98, 1.2), (100, 1.7))

#: How many of the newest bookings the measured size is taken from.
RECENT_BOOKINGS = 20


def jpeg_bytes_bound(pixels: int, quality: int) -> int:
    """At most how many bytes a photograph of ``pixels`` pixels takes as a JPEG of ``quality`` (1-100)."""
    per_pixel = next(bound for top, bound in JPEG_BYTES_PER_PIXEL if min(max(int(quality), 1), 100) <= top)
    return int(pixels * per_pixel) + 1024  # plus the JFIF header and tables


def camera_frame_pixels(camera_options: Mapping[str, Any], max_pixels: int) -> int:
    """The pixels of one full camera frame as configured, else ``max_pixels`` (the largest picture the
    station reads at all), never more than ``max_pixels``."""
    size = camera_options.get("still_size")
    if size is None and camera_options.get("width") and camera_options.get("height"):
        size = (camera_options["width"], camera_options["height"])
    try:
        width, height = (int(v) for v in size)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return int(max_pixels)
    return min(width * height, int(max_pixels)) if width > 0 and height > 0 else int(max_pixels)


def configured_image_bytes(geometry: Geometry, frame_pixels: int) -> int:
    """The JPEG bytes of a booking's three views at most: the standardized frontal and two profile frames."""
    frontal = jpeg_bytes_bound(geometry.width * geometry.height, geometry.jpeg_quality)
    return frontal + (len(SINGLE_POSES) - 1) * jpeg_bytes_bound(frame_pixels, JPEG_QUALITY)


def booking_bytes_needed(geometry: Geometry, frame_pixels: int, recent_image_bytes: Iterable[int] = ()) -> int:
    """The free space (beyond the store's floor) the early check asks for before a booking and each photo."""
    images = max(configured_image_bytes(geometry, frame_pixels), max(recent_image_bytes, default=0))
    return booking_write_bytes(images, len(SINGLE_POSES) * MAX_TEMPLATE_DIM)
