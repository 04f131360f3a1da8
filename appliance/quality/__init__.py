"""The quality engine: ISO/IEC 29794-5 measures, profiles with gates and guidance, standard crops.

Public API (what capture, the CLI and the record writer use)::

    engine = QualityEngine(analyzer, "nist-sap30", county_dir=None)
    engine.live(frame) -> LiveResult        # per preview frame: live gates only
    engine.full(image) -> Report            # per capture: every measure, every gate, guidance
    standardize(image, face, profile.geometry) -> Standardized   # level, crop, scale, fresh JPEG

Notes for county staff and reviewers are in `appliance/quality/README.md`.
"""

from appliance.quality.engine import LiveResult, QualityEngine, Report
from appliance.quality.profile import Geometry, Profile, QualityProfileError, available_profiles, load_profile
from appliance.quality.session import QualitySession
from appliance.quality.standardize import Standardized, StandardizeError, standardize
from appliance.quality.types import CannotAssess, GateResult, Guidance, MeasureResult

__all__ = [
    "CannotAssess",
    "GateResult",
    "Geometry",
    "Guidance",
    "LiveResult",
    "MeasureResult",
    "Profile",
    "QualityProfileError",
    "QualityEngine",
    "QualitySession",
    "Report",
    "Standardized",
    "StandardizeError",
    "available_profiles",
    "load_profile",
    "standardize",
]
