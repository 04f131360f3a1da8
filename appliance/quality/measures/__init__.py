"""The measures, one function each, registered by name on import (see `appliance.quality.registry`).

| module | measures |
|---|---|
| `unified` | unified_quality_score (0x41) |
| `photometric` | background_uniformity ... natural_colour (0x42-0x4b) |
| `geometry` | single_face_present, eyes_open, mouth_closed, inter_eye_distance ... head_pose_roll |
| `occlusion` | eyes_visible, mouth/face occlusion, no_head_coverings, glasses_glare |
| `expression` | expression_neutrality (0x5b) |
"""

from appliance.quality.measures import expression, geometry, occlusion, photometric, unified  # noqa: F401
