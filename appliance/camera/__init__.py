"""Camera backends behind one interface; see `appliance.camera.base` for the spec format.

Only the interface and the registry are imported here: each backend module (and its hardware library,
e.g. picamera2) is imported when a spec selects it.
"""

from appliance.camera.base import (
    BACKENDS,
    Camera,
    CameraEnded,
    CameraError,
    Frame,
    FrameUnreadable,
    create_camera,
    open_camera,
    parse_spec,
)

__all__ = [
    "BACKENDS",
    "Camera",
    "CameraEnded",
    "CameraError",
    "Frame",
    "FrameUnreadable",
    "create_camera",
    "open_camera",
    "parse_spec",
]
