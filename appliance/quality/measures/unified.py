"""Unified quality score (0x41): one number for "how usable is this photo for face recognition".

OFIQ uses the feature norm of a MagFace ResNet-50 (a 170 MB network). On the device we combine the
measures we already have, weighted by what the OFIQ evaluation found to matter for recognition error
rates (sharpness, compression, yaw and resolution most; lighting and colour little):

    UQS = 100 * exp( sum_i w_i * ln(max(score_i, 1) / 100) / sum_i w_i )

a weighted geometric mean of the component scores. A geometric mean lets one bad component pull the
whole score down (a sharp photo with eyes closed is not a good photo), which an arithmetic mean hides.
Components that failed to assess are left out; when more than half of the weight is missing the UQS
itself fails to assess. Weights are in `measures.toml` under [unified_quality_score.params.weights].
The raw value is that 0-100 number; the score maps it linearly (identity by default).
Limits: it is only as good as its components, and it is not calibrated against a matcher's FNMR the way
MagFace is; use it to rank captures of the same subject, not as a cross-site quality statistic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from appliance.quality.registry import measure
from appliance.quality.session import QualitySession
from appliance.quality.types import CannotAssess


@measure("unified_quality_score", 0x41)
def unified_quality_score(s: QualitySession, p: Mapping[str, Any]) -> tuple[float, dict]:
    """Weighted geometric mean of the component scores most tied to recognition accuracy."""
    s.face  # noqa: B018 - no face, no score (raises CannotAssess)
    weights: Mapping[str, float] = p.get("weights", {})
    if not weights:
        raise CannotAssess("no components configured")
    total = sum(weights.values())
    acc, used = 0.0, 0.0
    for name, w in weights.items():
        r = s.result(name)
        if r.score is None:
            continue
        acc += w * math.log(max(r.score, 1.0) / 100.0)
        used += w
    if used < 0.5 * total:
        raise CannotAssess("too few component measures could be assessed")
    return 100.0 * math.exp(acc / used), {"weight_used": used / total}
