"""Expression neutrality (0x5b) from the face mesh's shape, with the head pose undone.

OFIQ feeds two emotion-recognition CNNs (HSEmotion EfficientNet-B0/B2) into an AdaBoost classifier. On the
device we use what a booking officer means by "not neutral": a smile, an open mouth, raised brows. Each is
a distance in the pose-normalised mesh (`QualitySession.frontal_mesh`, unit inter-eye distance) compared
with the range seen on neutral faces, and the raw value sums how far each exceeds that range, in units of
its typical spread:

- mouth width (corner to corner) beyond `neutral_mouth_width` (smiles widen the mouth),
- corner lift: the mouth corners above the lip midline (smiles raise the corners),
- lip gap beyond `neutral_lip_gap` (laughing, talking),
- brow height above the eye line beyond `neutral_brow_height` (surprise).

0 is neutral; about 1.5 is a clear closed-mouth smile; open laughter reaches 5-7. The neutral ranges in
`measures.toml` were set from the MEDS-II mug-shots and the neutral portraits in the shared set.
Limits: it sees geometry only, so frowning, sadness or a smirk on one side only partly register; people
whose resting mouth is wide read slightly non-neutral; the brow term is the least reliable (hair and
glasses move the mesh's brow points).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from appliance.quality.registry import measure
from appliance.quality.session import QualitySession
from appliance.vision import landmarks as lm

BROW_POINTS = (105, 66, 334, 296)  # upper brow points above each eye's middle


def expression_features(s: QualitySession) -> dict[str, float]:
    """Shape features of the pose-normalised mesh, in inter-eye distances (y down)."""
    m = s.frontal_mesh
    width = float(np.linalg.norm(m[lm.MOUTH_LEFT, :2] - m[lm.MOUTH_RIGHT, :2]))
    centre_y = (m[lm.UPPER_LIP_INNER, 1] + m[lm.LOWER_LIP_INNER, 1]) / 2
    corners_y = (m[lm.MOUTH_RIGHT, 1] + m[lm.MOUTH_LEFT, 1]) / 2
    gap = float(abs(m[lm.LOWER_LIP_INNER, 1] - m[lm.UPPER_LIP_INNER, 1]))
    eye_y = float(np.mean(m[list(lm.RIGHT_EYE_RING) + list(lm.LEFT_EYE_RING), 1]))
    brow = float(eye_y - np.mean(m[list(BROW_POINTS), 1]))
    return {"mouth_width": width, "corner_lift": float(centre_y - corners_y), "lip_gap": gap, "brow_height": brow}


@measure("expression_neutrality", 0x5B, live=True)
def expression_neutrality(s: QualitySession, p: Mapping[str, Any]) -> tuple[float, dict]:
    """Non-neutrality index: summed excess of smile width, corner lift, lip gap and brow height."""
    f = expression_features(s)
    defaults = {"mouth_width": (0.90, 0.10), "corner_lift": (0.01, 0.04), "lip_gap": (0.05, 0.08),
                "brow_height": (0.48, 0.06)}
    raw = 0.0
    for key, (neutral, unit) in defaults.items():
        excess = (f[key] - float(p.get(f"neutral_{key}", neutral))) / float(p.get(f"{key}_unit", unit))
        raw += max(0.0, excess)
    return raw, f
