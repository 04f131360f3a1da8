"""The ANSI/NIST-ITL code tables the builder and the validator share: versions, SAP, IMT, POS, CGA, CSP,
SXS and tattoo codes, field mnemonics, the Type-2 layout, the formats of coded fields and the SAP levels'
Annex E geometry."""

from __future__ import annotations

import re

from sync.protocol import record as rules

FS, GS, RS, US = b"\x1c", b"\x1d", b"\x1e", b"\x1f"
VERSIONS = ("0400", "0500", "0501", "0502")
SAP_CODES: dict[int, str] = {
    0: "unknown profile",
    1: "surveillance facial image",
    10: "driver's licence image (AAMVA)",
    11: "ANSI full frontal",
    12: "ANSI token",
    13: "ISO full frontal",
    14: "ISO token",
    15: "PIV facial image",
    20: "legacy mug shot",
    30: "best practice level 30",
    32: "mobile ID best practice level 32",
    40: "best practice level 40",
    42: "mobile ID best practice level 42",
    50: "best practice level 50",
    51: "best practice level 51",
    52: "mobile ID best practice level 52",
}
SXS_MANDATORY_SAPS = frozenset({40, 50, 51})
IMT_CODES = ("FACE", "SCAR", "MARK", "TATTOO")
SMT_IMTS = frozenset({"SCAR", "MARK", "TATTOO"})
POS_CODES = frozenset({"F", "R", "L", "A", "D"})
POSE_TO_POS = {"frontal": "F", "left_profile": "L", "right_profile": "R"}
CGA_CODES = frozenset({"NONE", "WSQ20", "JPEGB", "JPEGL", "JP2", "JP2L", "PNG"})
CSP_CODES = frozenset({"GRAY", "RGB", "SRGB", "YCC", "SYCC"})
SXS_CODES = frozenset(
    {
        "BEARD", "BLINK", "CLEAR GLASSES", "DARK GLASSES", "DISTORTING CONDITION", "EYES AWAY", "FROWNING", "HAT",
        "LEFT EYE PATCH", "MOUSTACHE", "MOUTH OPEN", "NEUTRAL", "NO EAR", "RAISED BROWS", "RIGHT EYE PATCH",
        "SCARF", "SMILE", "SQUINTING", "TEETH VISIBLE", "UNKNOWN",
    }
)  # fmt: skip
TATTOO_CLASSES = frozenset({"HUMAN", "ANIMAL", "PLANT", "FLAG", "OBJECT", "ABSTRACT", "SYMBOL", "OTHER"})
CHARSETS = {"000": "ascii", "001": "latin-1", "003": "utf-8"}  # 1.015 DCS character set index -> codec
ASPECT_TOLERANCE = 0.01
# Format limits of the export's own fields (not of the record): the 10.038 comment is cut at COM_MAX, the
# 10.042 SMT description (TDS) at TDS_MAX. The record's SMT description limit (sync.protocol.record) fits TDS.
COM_MAX, TDS_MAX = 126, 256
assert rules.SMT_DESCRIPTION.max_len <= TDS_MAX, "an SMT description the record accepts must fit 10.042 TDS"

MNEMONICS: dict[int, dict[int, str]] = {
    1: {1: "LEN", 2: "VER", 3: "CNT", 4: "TOT", 5: "DAT", 6: "PRY", 7: "DAI", 8: "ORI", 9: "TCN", 10: "TCR",
        11: "NSR", 12: "NTR", 13: "DOM", 14: "GMT", 15: "DCS"},
    2: {1: "LEN", 2: "IDC"},
    10: {1: "LEN", 2: "IDC", 3: "IMT", 4: "SRC", 5: "PHD", 6: "HLL", 7: "VLL", 8: "SLC", 9: "THPS", 10: "TVPS",
         11: "CGA", 12: "CSP", 13: "SAP", 20: "POS", 21: "POA", 24: "SQS", 25: "SPA", 26: "SXS", 38: "COM",
         40: "SMT", 42: "SMD", 902: "ANN", 992: "T2C", 999: "DATA"},
}  # fmt: skip
TYPE2_DEFAULT_FIELDS: dict[str, int] = {
    "booking_number": 701,
    "ori": 702,
    "operator": 703,
    "captured_at": 704,
    "station": 705,
    "record_id": 706,
}
TYPE2_MNEMONICS = {
    "booking_number": "BKN",
    "ori": "BOR",
    "operator": "OPR",
    "captured_at": "CDT",
    "station": "STN",
    "record_id": "RID",
}

ORI_RE = rules.AGENCY_ORI.pattern  # NCIC ORI, the record's rule (1.007 DAI, 1.008 ORI, 10.004 SRC, 2.702 BOR)
TOT_RE = re.compile(r"[A-Z0-9]{1,16}")
RES_RE = re.compile(r"\d{2}\.\d{2}")
HEX4_RE = re.compile(r"[0-9A-F]{4}")
DIGITS_RE = re.compile(r"\d+")
SMT_WORD_RE = re.compile(r"\b(tattoo\w*|tat|scar\w*)\b", re.IGNORECASE)

#: Annex E geometry of the best-practice levels: SAP -> (width:height ratio, its label, minimum width,
#: minimum height). SAP 50/51 pixel minimums are not confirmed by a published source; 768x1024 is the confirmed
#: floor of 40 and above.
SAP_GEOMETRY: dict[int, tuple[float, str, int, int]] = {
    30: (4 / 5, "4:5", 480, 600),
    32: (4 / 5, "4:5", 480, 600),
    40: (3 / 4, "3:4", 768, 1024),
    50: (3 / 4, "3:4", 768, 1024),
    51: (3 / 4, "3:4", 768, 1024),
    42: (3 / 4, "3:4", 480, 600),
    52: (3 / 4, "3:4", 480, 600),
}


def sap_geometry_problems(sap: int, width: int, height: int) -> list[str]:
    """Why a ``width`` x ``height`` image does not meet SAP ``sap``'s Annex E geometry (empty: it does).
    Levels below 30 have no Annex E geometry and always pass here."""
    if sap not in SAP_GEOMETRY:
        return []
    ratio, label, min_w, min_h = SAP_GEOMETRY[sap]
    out: list[str] = []
    if width < min_w or height < min_h:
        out.append(f"SAP {sap} needs at least {min_w}x{min_h} pixels; this image is {width}x{height}")
    if height <= 0 or abs(width / height - ratio) > ASPECT_TOLERANCE * ratio:
        out.append(
            f"SAP {sap} needs a {label} (width:height) image; {width}x{height} is "
            f"{width / max(height, 1):.3f}, not {ratio:.3f}"
        )
    return out
