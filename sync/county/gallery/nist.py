"""A booking record as an ANSI/NIST-ITL 1-2011 transaction (traditional encoding): builder and validator.

The county's mug-shot tools read ANSI/NIST-ITL files, not our CBOR records. This module turns one
verified :class:`~sync.wire.WireRecord` into one transaction: a Type-1 header, one Type-2 with the
booking data and one Type-10 per capture. ``nistitl`` (PyPI, CeCILL-C) is used as the byte codec
only: it computes LEN and CNT and splits the separators, and checks nothing else. Everything the
standard (and the county's reader) requires is checked here, by :func:`validate_transaction`,
on the bytes as ``nistitl`` reads them back, so an export that passes is what the county receives.

Field mapping (``F`` = frontal, ``L``/``R`` = left/right profile, ``S`` = scar/mark/tattoo capture)
--------------------------------------------------------------------------------------------------
======== ===== ========================================================================================
Field    Name  Value
======== ===== ========================================================================================
1.002    VER   ``0500`` (ANSI/NIST-ITL 1-2011; set ``0501``/``0502`` for the 2013/2015 updates once the
               receiving spec confirms the code: both are unconfirmed in standards.md)
1.003    CNT   computed: ``1<US>n`` then ``type<US>IDC`` per record, in file order
1.004    TOT   ``MUG`` by default. Agency-defined: the FBI's EBTS arrest TOTs (``CAR``, ``CNA``) require
               fingerprints, so a photo-only transaction must not claim them. Configurable.
1.005    DAT   the record's creation date (``created_at``) in the agency's time zone, ``YYYYMMDD``
1.007    DAI   ``dai`` from the config, else the booking ORI
1.008    ORI   the booking's agency ORI (9 characters, as the wire already enforces)
1.009    TCN   the record id (UUIDv7, 36 characters): the gallery's idempotency key, end to end
1.011/12 NSR/  ``00.00``: these give the scanning resolution of friction-ridge images (Types 3-7); a
         NTR   photo-only transaction has none. Configurable for a receiver that insists on 19.69.
1.013    DOM   only when configured (e.g. ``NORAM`` and a version for an EBTS receiver)
1.014    GMT   ``created_at`` in UTC, ``YYYYMMDDHHMMSSZ``
1.015    DCS   ``003<US>UTF-8`` only when some text is not 7-bit ASCII (the default character set)
2.002    IDC   ``0``
2.701    BKN   booking number          } Type-2 content is agency-defined (the standard only fixes
2.702    BOR   booking agency ORI      } 2.001/2.002). These numbers sit in a block EBTS does not
2.703    OPR   operator id             } use; a county remaps them with ``type2_fields``.
2.704    CDT   capture time, UTC, ``YYYYMMDDHHMMSSZ``
2.705    STN   station slug
2.706    RID   record id
10.002   IDC   1, 2, ... in capture order
10.003   IMT   ``FACE`` for F/L/R; for S ``TATTOO`` or ``SCAR`` when the description says so (first of
               the words "tattoo..."/"scar..." wins), else ``MARK`` (moles, birthmarks, needle marks,
               brands, piercings: the catch-all)
10.004   SRC   ``src`` from the config, else the booking ORI
10.005   PHD   the booking's capture date in the agency's time zone
10.006/7 HLL/  width and height read from the JPEG frame header (never from metadata)
         VLL
10.008-10 SLC  ``0`` (no physical scale: a camera photo has none) with THPS = TVPS = ``1``: square pixels
10.011   CGA   ``JPEGB``: the station's JPEG, byte for byte (never re-encoded)
10.012   CSP   ``YCC`` for a 3-component JPEG, ``GRAY`` for 1
10.013   SAP   FACE only; see *SAP* below
10.020   POS   FACE only: frontal ``F``, left_profile ``L``, right_profile ``R``
10.024   SQS   F only: ``QVU<US>QAV<US>QAP`` = the unified quality score 0-100 (254 when the record has
               none, 255 when the station failed to assess it), the configured vendor id (4 hex) and
               product id. Not on profiles: ISO/IEC 29794-5 scores frontal faces, and on a profile
               it would only measure how far from frontal the head is.
10.026   SXS   F only: ``NEUTRAL`` when the eyes-open, mouth-closed and neutral-expression gates all
               passed; ``BLINK``/``MOUTH OPEN``/``HAT`` for those gates failing; ``UNKNOWN`` when
               nothing is known and the SAP (40, 50, 51) makes SXS mandatory
10.038   COM   why the image was kept or downgraded (officer override reason, SAP fallback), <= 126
10.042   SMD   S only: ``SMI<US>TAC<US>TSC<US>TDS`` = IMT, tattoo class/subclass (``OTHER``/``MISC``
               for tattoos, empty otherwise) and the officer's description (<= 256 characters)
10.902   ANN   standardized frontal only: ``GMT<US>NAV<US>OWN<US>PRO`` recording the rotation/crop/scale
10.992   T2C   ``0`` (the Type-2 IDC), only for VER 0501 and later (the field is new in the 2013 update)
10.999   DATA  the JPEG bytes
======== ===== ========================================================================================

Not written: 10.040 SMT (NCIC SMT code). The standard says its content "shall be from the NCIC code",
and the wire carries only the officer's free-text description; guessing an NCIC code from free text
would put wrong data in a coded field. The description goes to SMD's description item instead.

SAP (10.013)
------------
The station's quality report names the profile's SAP (``quality.report.sap``). A FACE image claims it
only when (a) for the frontal view, the station's gates passed with no officer override, and (b) the
image meets that level's geometry (Annex E): SAP 30/32 at least 480x600 and 4:5 (W:H), SAP 40/50/51 at
least 768x1024 and 3:4, SAP 42/52 3:4 and at least 480x600; aspect within 1%, and (c) for a profile view,
the level is one of 30 and above and the frontal view has at least that level. Otherwise the image is
exported as SAP ``fallback_sap`` (20, "legacy mug shot": a booking photo not shown to meet a best-practice
level) and COM says why. Profile crops are rarely 4:5, so profiles usually export as 20: claiming 30 for
them would be false, and a strict county reader would refuse the file.

POS (10.020) follows the standard's meaning: ``L`` = left profile = the subject's left side faces the
camera (-90 degrees yaw), ``R`` the right side (+90). The station's ``left_profile``/``right_profile`` are
taken to mean the same (the subject's side); the appliance's officer guidance must say so.

Validation issues are ``(record_type, field, message)``; record type 0 means the file as a whole.
"""

from __future__ import annotations

import re
import unicodedata
import zoneinfo
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, NamedTuple

from sync.protocol.jpeg import jpeg_info
from sync.protocol.wire import WireCapture, WireRecord

# ----------------------------------------------------------------------------------------- codes
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
COM_MAX, TDS_MAX = 126, 256

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

_ORI_RE = re.compile(r"[A-Z0-9]{9}")
_TOT_RE = re.compile(r"[A-Z0-9]{1,16}")
_RES_RE = re.compile(r"\d{2}\.\d{2}")
_HEX4_RE = re.compile(r"[0-9A-F]{4}")
_DIGITS_RE = re.compile(r"\d+")
_SMT_WORD_RE = re.compile(r"\b(tattoo\w*|tat|scar\w*)\b", re.IGNORECASE)

#: A field value: plain text, the binary image (xx.999), or subfields of information items.
FieldValue = str | bytes | tuple[tuple[str, ...], ...]


class NistIssue(NamedTuple):
    """One thing wrong with a transaction, worded for county IT: the record type (0 = the whole
    file), the field (``"10.013 SAP"``) and what is wrong, naming the record's IDC."""

    record_type: int
    field: str
    message: str

    def __str__(self) -> str:
        where = "file" if self.record_type == 0 else f"Type-{self.record_type}"
        return f"{where} {self.field}: {self.message}"


class NistExportError(Exception):
    """The record cannot be exported as a valid transaction; ``issues`` says why."""

    def __init__(self, record_id: str, issues: Sequence[NistIssue]) -> None:
        self.record_id = record_id
        self.issues = list(issues)
        lines = "\n".join(f"  - {i}" for i in self.issues)
        super().__init__(f"record {record_id} is not a valid ANSI/NIST-ITL transaction:\n{lines}")


class NistConfigError(ValueError):
    """An export setting that cannot produce a valid transaction."""


class NistCodecMissing(RuntimeError):
    """``nistitl`` is not installed."""


_CONFIG_TYPES: dict[str, type | tuple[type, ...]] = {
    "version": str,
    "tot": str,
    "dai": (str, type(None)),
    "src": (str, type(None)),
    "domain_name": (str, type(None)),
    "domain_version": (str, type(None)),
    "nsr": str,
    "ntr": str,
    "timezone": str,
    "quality_vendor": str,
    "quality_product": int,
    "fallback_sap": int,
    "smt_default_imt": str,
    "annotation_owner": str,
    "type2_fields": Mapping,
}


@dataclass(frozen=True)
class NistConfig:
    """What the county sets for its receiving system; the defaults produce a valid ANSI/NIST-ITL 1-2011
    transaction. See the module docstring for what each value becomes."""

    version: str = "0500"
    tot: str = "MUG"
    dai: str | None = None
    src: str | None = None
    domain_name: str | None = None
    domain_version: str | None = None
    nsr: str = "00.00"
    ntr: str = "00.00"
    timezone: str = "UTC"
    quality_vendor: str = "0000"
    quality_product: int = 1
    fallback_sap: int = 20
    smt_default_imt: str = "MARK"
    annotation_owner: str = "booking-station"
    type2_fields: Mapping[str, int] = field(default_factory=lambda: dict(TYPE2_DEFAULT_FIELDS))

    def __post_init__(self) -> None:
        wrong = [
            name
            for name, kind in _CONFIG_TYPES.items()
            if not (isinstance(getattr(self, name), kind) and not isinstance(getattr(self, name), bool))
        ]
        if wrong:
            raise NistConfigError(f"wrong type for {', '.join(wrong)} (see NistConfig)")
        problems: list[str] = []
        if self.version not in VERSIONS:
            problems.append(f"version {self.version!r} is not one of {', '.join(VERSIONS)}")
        if not _TOT_RE.fullmatch(self.tot):
            problems.append(f"tot {self.tot!r} must be 1-16 upper-case letters or digits")
        for name in ("dai", "src"):
            value = getattr(self, name)
            if value is not None and not _ORI_RE.fullmatch(value):
                problems.append(f"{name} {value!r} must be a 9-character ORI (A-Z, 0-9)")
        if self.domain_version is not None and self.domain_name is None:
            problems.append("domain_version needs domain_name")
        for name in ("nsr", "ntr"):
            if not _RES_RE.fullmatch(getattr(self, name)):
                problems.append(f"{name} {getattr(self, name)!r} must look like 00.00 or 19.69")
        try:
            zoneinfo.ZoneInfo(self.timezone)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            problems.append(f"timezone {self.timezone!r} is not an IANA time zone (e.g. America/Los_Angeles)")
        if not _HEX4_RE.fullmatch(self.quality_vendor):
            problems.append(f"quality_vendor {self.quality_vendor!r} must be 4 upper-case hex digits")
        if not 1 <= self.quality_product <= 65535:
            problems.append("quality_product must be 1..65535")
        if self.fallback_sap not in SAP_CODES or self.fallback_sap >= 30:
            problems.append("fallback_sap must be a SAP code below 30 (it is used when a level is not met)")
        if self.smt_default_imt not in SMT_IMTS:
            problems.append(f"smt_default_imt must be one of {', '.join(sorted(SMT_IMTS))}")
        if not self.annotation_owner.strip() or len(self.annotation_owner) > 64:
            problems.append("annotation_owner must be 1-64 characters")
        unknown = set(self.type2_fields) - set(TYPE2_DEFAULT_FIELDS)
        missing = set(TYPE2_DEFAULT_FIELDS) - set(self.type2_fields)
        numbers = list(self.type2_fields.values())
        if unknown or missing:
            problems.append(f"type2_fields must name exactly {', '.join(TYPE2_DEFAULT_FIELDS)}")
        elif any(type(n) is not int or not 3 <= n <= 999 for n in numbers) or len(set(numbers)) != len(numbers):
            problems.append("type2_fields numbers must be distinct integers 3..999")
        if problems:
            raise NistConfigError("; ".join(problems))

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    def type2_labels(self) -> dict[int, str]:
        """Type-2 field number -> mnemonic, for messages."""
        return {n: TYPE2_MNEMONICS[k] for k, n in self.type2_fields.items()}


@dataclass
class NistRecord:
    """One logical record as field number -> value. LEN (xx.001) and CNT (1.003) are left out when
    building: ``nistitl`` computes them. Decoded records carry every field the file had."""

    type: int
    fields: dict[int, FieldValue]

    @property
    def idc(self) -> int | None:
        value = self.fields.get(2)
        return int(value) if isinstance(value, str) and _DIGITS_RE.fullmatch(value) else None

    def text(self, tag: int) -> str | None:
        """The field as one string (first item of the first subfield when it has several)."""
        value = self.fields.get(tag)
        if isinstance(value, str):
            return value
        if isinstance(value, tuple) and value and value[0]:
            return value[0][0]
        return None


def sap_geometry_problems(sap: int, width: int, height: int) -> list[str]:
    """Why a ``width`` x ``height`` image does not meet SAP ``sap``'s Annex E geometry (empty: it does).
    Levels below 30 have no Annex E geometry and always pass here."""
    if sap in (30, 32):
        ratio, label, min_w, min_h = 4 / 5, "4:5", 480, 600
    elif sap in (40, 50, 51):
        # SAP 50/51 pixel minimums are unconfirmed (standards.md); 768x1024 is the confirmed floor of 40+.
        ratio, label, min_w, min_h = 3 / 4, "3:4", 768, 1024
    elif sap in (42, 52):
        ratio, label, min_w, min_h = 3 / 4, "3:4", 480, 600
    else:
        return []
    out: list[str] = []
    if width < min_w or height < min_h:
        out.append(f"SAP {sap} needs at least {min_w}x{min_h} pixels; this image is {width}x{height}")
    if height <= 0 or abs(width / height - ratio) > ASPECT_TOLERANCE * ratio:
        out.append(
            f"SAP {sap} needs a {label} (width:height) image; {width}x{height} is "
            f"{width / max(height, 1):.3f}, not {ratio:.3f}"
        )
    return out


# --------------------------------------------------------------------------------- quality report
def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _report(quality: Mapping[str, Any]) -> Mapping[str, Any]:
    """The quality engine's report (``quality.report``); older records keep it at the top level."""
    report = quality.get("report")
    return report if isinstance(report, Mapping) else quality


def claimed_sap(quality: Mapping[str, Any]) -> int | None:
    """The SAP the station's quality profile claims, if any."""
    for source in (_report(quality), quality):
        sap = source.get("sap")
        if type(sap) is int and sap in SAP_CODES:
            return sap
    return None


def unified_quality(quality: Mapping[str, Any]) -> int:
    """The unified quality score as an ANSI/NIST quality value: 0-100, 255 when the station tried and
    failed to assess it, 254 when the record carries none."""
    report = _report(quality)
    candidates = (
        _mapping(report.get("measures")).get("unified_quality_score"),
        quality.get("unified_quality_score"),
        quality.get("0x41"),
    )
    for entry in candidates:
        if entry is None:
            continue
        score = entry.get("score") if isinstance(entry, Mapping) else entry
        if isinstance(entry, Mapping) and "score" in entry and score is None:
            return 255
        if isinstance(score, (int, float)) and not isinstance(score, bool):
            return max(0, min(100, round(float(score))))
    return 254


def _gate_passed(quality: Mapping[str, Any], measure: str) -> bool | None:
    entry = _mapping(_mapping(_report(quality).get("measures")).get(measure))
    passed = entry.get("passed")
    return passed if isinstance(passed, bool) else None


def facial_description(quality: Mapping[str, Any]) -> list[str]:
    """SXS codes the station's gates support (see the module docstring)."""
    eyes, mouth, neutral = (_gate_passed(quality, m) for m in ("eyes_open", "mouth_closed", "expression_neutrality"))
    codes: list[str] = []
    if eyes is True and mouth is True and neutral is True:
        codes.append("NEUTRAL")
    if eyes is False:
        codes.append("BLINK")
    if mouth is False:
        codes.append("MOUTH OPEN")
    if _gate_passed(quality, "no_head_coverings") is False:
        codes.append("HAT")
    return codes


def smt_image_type(description: str | None, default: str = "MARK") -> str:
    """TATTOO or SCAR when the description says so (first such word wins), else ``default``."""
    match = _SMT_WORD_RE.search(description or "")
    if match is None:
        return default
    return "SCAR" if match.group(1).lower().startswith("scar") else "TATTOO"


# ------------------------------------------------------------------------------------------ build
def _date(moment: datetime, zone: zoneinfo.ZoneInfo) -> str:
    return moment.astimezone(zone).strftime("%Y%m%d")


def _gmt(moment: datetime) -> str:
    return moment.astimezone(timezone.utc).strftime("%Y%m%d%H%M%SZ")


def _free_text(text: str, limit: int) -> str:
    """Officer text for a Type-10 field: NFC, no ``999:`` (a reader that looks for the image field by
    its tag, as ``nistitl`` does, would cut the record there) and at most ``limit`` characters."""
    clean = unicodedata.normalize("NFC", text).replace("999:", "999 :").strip()
    return clean if len(clean) <= limit else clean[: limit - 3].rstrip() + "..."


def _choose_sap(capture: WireCapture, pos: str, config: NistConfig) -> tuple[int, str | None]:
    """The SAP this image may claim, and the reason when it falls back (see the module docstring)."""
    quality = capture.quality
    claim = claimed_sap(quality)
    fallback = config.fallback_sap
    if claim is None:
        return fallback, None
    if pos == "F":
        passed = _report(quality).get("passed", quality.get("passed"))
        if capture.override_reason is not None or passed is not True:
            return fallback, f"SAP {fallback}: the station did not record its SAP {claim} quality gates as passed"
    elif claim < 30:
        return fallback, None  # levels below 30 describe frontal images only
    info = jpeg_info(capture.jpeg)
    width, height = (info.width, info.height) if info else (capture.width, capture.height)
    problems = sap_geometry_problems(claim, width, height)
    if problems:
        return fallback, f"SAP {fallback}: {problems[0]}"
    return claim, None


def _comment(parts: Iterable[str | None]) -> str | None:
    text = "; ".join(p for p in parts if p)
    return _free_text(text, COM_MAX) if text else None


def _type10(capture: WireCapture, idc: int, record: WireRecord, config: NistConfig) -> NistRecord:
    info = jpeg_info(capture.jpeg)
    width, height = (info.width, info.height) if info else (capture.width, capture.height)
    fields: dict[int, FieldValue] = {2: str(idc)}
    pos = POSE_TO_POS.get(capture.pose)
    imt = "FACE" if pos else smt_image_type(capture.description, config.smt_default_imt)
    fields[3] = imt
    fields[4] = config.src or record.booking.ori
    fields[5] = _date(record.booking.captured_at, config.zone)
    fields[6], fields[7] = str(width), str(height)
    fields[8], fields[9], fields[10] = "0", "1", "1"
    fields[11] = "JPEGL" if info is not None and info.sof == 0xC3 else "JPEGB"
    fields[12] = "GRAY" if info is not None and info.components == 1 else "YCC"
    override = f"kept by officer override: {capture.override_reason}" if capture.override_reason else None
    if pos is not None:
        sap, sap_note = _choose_sap(capture, pos, config)
        fields[13] = str(sap)
        fields[20] = pos
        if pos == "F":
            fields[24] = ((str(unified_quality(capture.quality)), config.quality_vendor, str(config.quality_product)),)
            codes = facial_description(capture.quality)
            if not codes and sap in SXS_MANDATORY_SAPS:
                codes = ["UNKNOWN"]
            if codes:
                fields[26] = tuple((c,) for c in codes)
        comment = _comment((override, sap_note))
    else:
        tattoo = imt == "TATTOO"
        fields[42] = (
            (
                imt,
                "OTHER" if tattoo else "",
                "MISC" if tattoo else "",
                _free_text(capture.description or "", TDS_MAX),
            ),
        )
        comment = _comment((override,))
    if comment:
        fields[38] = comment
    standardized = _mapping(capture.quality.get("standardized"))
    if pos == "F" and standardized:
        profile = str(capture.quality.get("profile") or _report(capture.quality).get("profile") or "profile")
        fields[902] = (
            (
                _gmt(record.booking.captured_at),
                _free_text(f"booking-station standardize {profile}", 64),
                _free_text(config.annotation_owner, 64),
                _free_text(f"rotated to level eyes, cropped and scaled to {profile} geometry {width}x{height}", 255),
            ),
        )
    if config.version >= "0501":
        fields[992] = "0"
    fields[999] = capture.jpeg
    return NistRecord(10, fields)


def _cap_profile_saps(type10: list[NistRecord], config: NistConfig) -> None:
    """A profile view may claim a best-practice level only when the frontal view has at least that
    level: the levels describe a capture session whose core is the full-face frontal photo."""
    frontal = max((int(r.text(13) or 0) for r in type10 if r.fields.get(20) == "F"), default=0)
    for rec in type10:
        sap = int(rec.text(13) or 0)
        if rec.fields.get(20) in ("L", "R") and sap >= 30 and sap > frontal:
            rec.fields[13] = str(config.fallback_sap)
            note = f"SAP {config.fallback_sap}: the frontal view does not meet SAP {sap}"
            rec.fields[38] = _comment((rec.text(38), note)) or note


def build_records(record: WireRecord, config: NistConfig | None = None) -> list[NistRecord]:
    """The transaction's records for ``record`` (Type-1, Type-2, one Type-10 per capture), unvalidated."""
    config = config or NistConfig()
    booking = record.booking
    t2: dict[int, FieldValue] = {2: "0"}
    t2_values = {
        "booking_number": booking.booking_number,
        "ori": booking.ori,
        "operator": booking.operator,
        "captured_at": _gmt(booking.captured_at),
        "station": record.station,
        "record_id": record.record_id,
    }
    for key, number in config.type2_fields.items():
        t2[number] = unicodedata.normalize("NFC", t2_values[key])
    type10 = [_type10(c, i + 1, record, config) for i, c in enumerate(record.captures)]
    _cap_profile_saps(type10, config)
    t1: dict[int, FieldValue] = {
        2: config.version,
        4: config.tot,
        5: _date(record.created_at, config.zone),
        7: config.dai or booking.ori,
        8: booking.ori,
        9: record.record_id,
        11: config.nsr,
        12: config.ntr,
    }
    if config.domain_name:
        t1[13] = ((config.domain_name, config.domain_version or ""),) if config.domain_version else config.domain_name
    t1[14] = _gmt(record.created_at)
    records = [NistRecord(1, t1), NistRecord(2, t2), *type10]
    if not all(_is_ascii(v) for r in records for v in r.fields.values()):
        t1[15] = (("003", "UTF-8"),)
    return records


def _is_ascii(value: FieldValue) -> bool:
    if isinstance(value, bytes):
        return True
    if isinstance(value, str):
        return value.isascii()
    return all(item.isascii() for sub in value for item in sub)


# ------------------------------------------------------------------------------------------ codec
def require_codec() -> None:
    """Raise :class:`NistCodecMissing` now (at start-up) rather than on the first record."""
    _nistitl()


def _nistitl() -> Any:
    try:
        import nistitl
    except ImportError as exc:
        raise NistCodecMissing(
            "ANSI/NIST-ITL export needs the nistitl package: pip install 'nistitl>=0.6,<0.7'"
        ) from exc
    return nistitl


def _charset(records: Sequence[NistRecord]) -> str:
    dcs = records[0].fields.get(15) if records and records[0].type == 1 else None
    index = dcs[0][0] if isinstance(dcs, tuple) and dcs and dcs[0] else dcs if isinstance(dcs, str) else "000"
    return CHARSETS.get(index, "ascii")


def encode_records(records: Sequence[NistRecord]) -> bytes:
    """Traditional encoding of ``records`` through ``nistitl`` (which computes LEN and CNT). Text is
    written in the character set 1.015 DCS names (UTF-8 when present; ``nistitl`` itself writes Latin-1,
    so UTF-8 text is handed to it as the Latin-1 reading of its UTF-8 bytes)."""
    nistitl = _nistitl()
    utf8 = _charset(records) == "utf-8"

    def text(value: str) -> str:
        return value.encode("utf-8").decode("latin-1") if utf8 else value

    def nist_value(value: FieldValue) -> Any:
        if isinstance(value, str):
            return text(value)
        return [[text(item) for item in sub] for sub in value]  # type: ignore[union-attr]

    msg = nistitl.Message()
    header = msg[0]
    for tag in [f.tag for f in header._fields if f.tag not in (1, 3)]:
        del header[tag]  # drop nistitl's defaults (VER 0400, today's date, a random TCN ...)
    for rec in records:
        if rec.type == 1:
            target = header
        else:
            target = nistitl.AsciiRecord(rec.type)
            target.IDC = int(rec.fields.get(2, "0"))  # type: ignore[arg-type]
            msg += target
        for tag, value in sorted(rec.fields.items()):
            if (rec.type != 1 and tag == 2) or tag in (1,) or (rec.type == 1 and tag == 3):
                continue
            if isinstance(value, bytes):
                target += nistitl.BinaryField(rec.type, tag, value)
            else:
                target += nistitl.Field(rec.type, tag, nist_value(value))
    return bytes(msg.NIST)


class NistFormatError(ValueError):
    """The bytes are not a transaction ``nistitl`` can read."""


def decode_transaction(data: bytes) -> list[NistRecord]:
    """Read a traditional-encoding transaction with ``nistitl`` into :class:`NistRecord` values
    (every field, LEN and CNT included, as text; the image field as bytes)."""
    nistitl = _nistitl()
    msg = nistitl.Message()
    try:
        msg.parse(bytes(data))
    except Exception as exc:  # nistitl raises NistException, and IndexError/ValueError on odd input
        raise NistFormatError(f"nistitl cannot read the file: {exc}") from None
    records: list[NistRecord] = []
    for rec in msg:
        fields_attr = getattr(rec, "_fields", None)
        if fields_attr is None:
            raise NistFormatError(f"record type {rec.type} is a binary record, which a booking export never has")
        fields: dict[int, FieldValue] = {}
        for f in fields_attr:
            fields[int(f.tag)] = _normalize(f.value)
        records.append(NistRecord(int(rec.type), fields))
    if _charset(records) == "utf-8":
        for rec in records:
            for tag, value in rec.fields.items():
                rec.fields[tag] = _utf8(value)
    return records


def _normalize(value: Any) -> FieldValue:
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    if isinstance(value, (list, tuple)):
        subs = tuple(tuple(str(i) for i in s) if isinstance(s, (list, tuple)) else (str(s),) for s in value)
        return subs[0][0] if len(subs) == 1 and len(subs[0]) == 1 else subs
    return "" if value is None else str(value)


def canonical(value: FieldValue) -> FieldValue:
    """One subfield of one item is the same bytes as plain text: compare them as plain text."""
    if isinstance(value, tuple) and len(value) == 1 and len(value[0]) == 1:
        return value[0][0]
    return value


def _utf8(value: FieldValue) -> FieldValue:
    """Undo ``nistitl``'s Latin-1 reading of UTF-8 text (1.015 DCS 003)."""
    if isinstance(value, bytes):
        return value

    def one(text: str) -> str:
        return text.encode("latin-1").decode("utf-8", errors="replace")

    if isinstance(value, str):
        return one(value)
    return tuple(tuple(one(i) for i in sub) for sub in value)


# --------------------------------------------------------------------------------------- validate
class _Checker:
    """Collects issues with the record type, field label and IDC worded in."""

    def __init__(self, type2_labels: Mapping[int, str]) -> None:
        self.issues: list[NistIssue] = []
        self.type2_labels = type2_labels

    def label(self, rtype: int, tag: int) -> str:
        names = self.type2_labels if rtype == 2 else MNEMONICS.get(rtype, {})
        name = names.get(tag)
        return f"{rtype}.{tag:03d}" + (f" {name}" if name else "")

    def add(self, rec: NistRecord | None, tag: int | None, message: str) -> None:
        if rec is None:
            self.issues.append(NistIssue(0, "-", message))
            return
        where = f"IDC {rec.fields.get(2)}: " if rec.type != 1 and isinstance(rec.fields.get(2), str) else ""
        self.issues.append(NistIssue(rec.type, self.label(rec.type, tag) if tag else "-", where + message))

    def require(self, rec: NistRecord, tags: Iterable[int], why: str = "") -> None:
        for tag in tags:
            value = rec.fields.get(tag)
            if value is None or value == "" or value == ():
                self.add(rec, tag, "mandatory field is missing" + (f" ({why})" if why else ""))


def _valid_date(text: str | None) -> bool:
    if text is None or not re.fullmatch(r"\d{8}", text):
        return False
    try:
        datetime.strptime(text, "%Y%m%d")
    except ValueError:
        return False
    return True


def _valid_gmt(text: str | None) -> bool:
    if text is None or not re.fullmatch(r"\d{14}Z", text):
        return False
    try:
        datetime.strptime(text, "%Y%m%d%H%M%SZ")
    except ValueError:
        return False
    return True


def _int(text: str | None) -> int | None:
    return int(text) if text is not None and _DIGITS_RE.fullmatch(text) else None


def _texts(value: FieldValue | None) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, tuple):
        for sub in value:
            yield from sub


def validate_records(records: Sequence[NistRecord], config: NistConfig | None = None) -> list[NistIssue]:
    """Every rule this module knows, on decoded records (see :func:`validate_transaction`)."""
    check = _Checker(config.type2_labels() if config else {})
    if not records or records[0].type != 1:
        check.add(None, None, "a transaction must start with its Type-1 record")
        return check.issues
    t1 = records[0]
    _check_type1(check, t1, records)
    for rec in records[1:]:
        if rec.type == 1:
            check.add(rec, None, "a transaction has exactly one Type-1 record, at the start")
        elif rec.type == 2:
            _check_type2(check, rec, config)
        elif rec.type == 10:
            _check_type10(check, rec, records, t1.text(2) or "")
        else:
            check.add(rec, None, f"record type {rec.type} is not part of a booking export (Types 1, 2, 10)")
    _check_transaction(check, records)
    return check.issues


def _check_type1(check: _Checker, t1: NistRecord, records: Sequence[NistRecord]) -> None:
    check.require(t1, (1, 2, 3, 4, 5, 7, 8, 9, 11, 12))
    ver = t1.text(2)
    if ver is not None and ver not in VERSIONS:
        check.add(t1, 2, f"version {ver!r} is not one of {', '.join(VERSIONS)}")
    tot = t1.text(4)
    if tot and not _TOT_RE.fullmatch(tot):
        check.add(t1, 4, f"{tot!r} must be 1-16 upper-case letters or digits")
    if t1.text(5) is not None and not _valid_date(t1.text(5)):
        check.add(t1, 5, f"{t1.text(5)!r} is not a date in YYYYMMDD form")
    for tag in (7, 8):
        value = t1.text(tag)
        if value is not None and not _ORI_RE.fullmatch(value):
            check.add(t1, tag, f"{value!r} must be a 9-character agency identifier (A-Z, 0-9)")
    tcn = t1.text(9)
    if tcn is not None and not 1 <= len(tcn) <= 40:
        check.add(t1, 9, "TCN must be 1-40 characters")
    for tag in (11, 12):
        value = t1.text(tag)
        if value is not None and not _RES_RE.fullmatch(value):
            check.add(t1, tag, f"{value!r} must be a resolution in ppmm written NN.NN (00.00 for no fingerprints)")
    if 14 in t1.fields and not _valid_gmt(t1.text(14)):
        check.add(t1, 14, f"{t1.text(14)!r} is not a UTC time in YYYYMMDDHHMMSSZ form")
    dcs = t1.fields.get(15)
    index = dcs[0][0] if isinstance(dcs, tuple) else dcs
    if dcs is not None and index not in CHARSETS:
        check.add(t1, 15, f"character set {index!r} is not supported here (000 ASCII, 001 Latin-1, 003 UTF-8)")
    if dcs is None or index == "000":
        for rec in records:
            for tag, value in rec.fields.items():
                if not isinstance(value, bytes) and not _is_ascii(value):
                    check.add(rec, tag, "text outside 7-bit ASCII needs 1.015 DCS naming its character set")
    _check_cnt(check, t1, records)


def _check_cnt(check: _Checker, t1: NistRecord, records: Sequence[NistRecord]) -> None:
    cnt = t1.fields.get(3)
    subs = (cnt,) if isinstance(cnt, str) else cnt if isinstance(cnt, tuple) else ()
    if not subs:
        return
    if any(isinstance(s, str) or len(s) != 2 for s in subs):
        check.add(t1, 3, "every CNT subfield must be two items: record type and IDC")
        return
    entries = [(s[0], s[1]) for s in subs]  # type: ignore[index]
    if entries[0] != ("1", str(len(records) - 1)):
        check.add(t1, 3, f"first CNT subfield is {'/'.join(entries[0])}; the file has {len(records) - 1} other records")
    listed = entries[1:]
    if len(listed) != len(records) - 1:
        check.add(t1, 3, f"CNT lists {len(listed)} records; the file has {len(records) - 1}")
    for n, ((rtype, idc), rec) in enumerate(zip(listed, records[1:], strict=False), start=2):
        if (_int(rtype), _int(idc)) != (rec.type, rec.idc):
            check.add(
                t1,
                3,
                f"CNT entry {n} says Type-{rtype} IDC {idc}; record {n} is Type-{rec.type} IDC {rec.fields.get(2)}",
            )


def _check_type2(check: _Checker, rec: NistRecord, config: NistConfig | None) -> None:
    check.require(rec, (1, 2))
    if config is not None:
        check.require(rec, sorted(config.type2_fields.values()), "this county's Type-2 layout")
        ori_tag = config.type2_fields["ori"]
        ori = rec.text(ori_tag)
        if ori and not _ORI_RE.fullmatch(ori):
            check.add(rec, ori_tag, f"{ori!r} must be a 9-character agency identifier (A-Z, 0-9)")
        when = rec.text(config.type2_fields["captured_at"])
        if when and not _valid_gmt(when):
            check.add(rec, config.type2_fields["captured_at"], f"{when!r} is not a UTC time YYYYMMDDHHMMSSZ")


def _check_type10(check: _Checker, rec: NistRecord, records: Sequence[NistRecord], version: str) -> None:
    f = rec.fields
    check.require(rec, (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 999))
    imt = rec.text(3)
    if imt is not None and imt not in IMT_CODES:
        check.add(rec, 3, f"image type {imt!r} is not one of {', '.join(IMT_CODES)}")
    src = rec.text(4)
    if src is not None and not 1 <= len(src) <= 35:
        check.add(rec, 4, "source agency must be 1-35 characters")
    if 5 in f and not _valid_date(rec.text(5)):
        check.add(rec, 5, f"{rec.text(5)!r} is not a date in YYYYMMDD form")
    hll, vll = _int(rec.text(6)), _int(rec.text(7))
    for tag, value in ((6, hll), (7, vll)):
        if tag in f and (value is None or not 10 <= value <= 99999):
            check.add(rec, tag, f"{rec.text(tag)!r} must be a pixel count 10..99999")
    slc, thps, tvps = rec.text(8), _int(rec.text(9)), _int(rec.text(10))
    if slc is not None and slc not in ("0", "1", "2"):
        check.add(rec, 8, f"scale units {slc!r} must be 0 (aspect only), 1 (per inch) or 2 (per cm)")
    for tag, value in ((9, thps), (10, tvps)):
        if tag in f and (value is None or value < 1):
            check.add(rec, tag, "must be a positive integer")
    cga, csp = rec.text(11), rec.text(12)
    if cga is not None and cga not in CGA_CODES:
        check.add(rec, 11, f"compression {cga!r} is not one of {', '.join(sorted(CGA_CODES))}")
    if csp is not None and csp not in CSP_CODES:
        check.add(rec, 12, f"colour space {csp!r} is not one of {', '.join(sorted(CSP_CODES))}")
    data = f.get(999)
    info = jpeg_info(data) if isinstance(data, bytes) else None
    if cga in ("JPEGB", "JPEGL") and isinstance(data, bytes):
        if info is None:
            check.add(rec, 999, f"CGA is {cga} but the image data is not a JPEG with a frame header")
        else:
            if cga == "JPEGB" and not info.baseline:
                check.add(rec, 11, f"JPEGB needs a baseline (8-bit sequential) JPEG; this one is {info.process}")
            if cga == "JPEGL" and info.sof != 0xC3:
                check.add(rec, 11, f"JPEGL needs a lossless JPEG; this one is {info.process}")
            if not info.jfif:
                check.add(rec, 999, f"{cga} image data must be JFIF (an APP0 'JFIF' marker); this JPEG has none")
            if not info.complete:
                check.add(rec, 999, "the JPEG does not end with an EOI marker: the image is truncated")
            if (hll, vll) != (info.width, info.height) and hll is not None and vll is not None:
                check.add(rec, 6, f"HLL x VLL say {hll}x{vll}; the JPEG is {info.width}x{info.height}")
            want = "GRAY" if info.components == 1 else "YCC"
            if csp is not None and csp != want and not (want == "YCC" and csp == "SYCC"):
                check.add(rec, 12, f"a {info.components}-component JPEG is {want}, not {csp}")
    width, height = (info.width, info.height) if info else (hll or 0, vll or 0)

    sap_text, pos = rec.text(13), rec.text(20)
    sap = _int(sap_text)
    if imt == "FACE":
        check.require(rec, (13,), "IMT is FACE")
        if sap_text is not None and sap not in SAP_CODES:
            check.add(rec, 13, f"{sap_text!r} is not a subject acquisition profile code")
        if pos is not None and pos not in POS_CODES:
            check.add(rec, 20, f"pose {pos!r} is not one of F, R, L, A, D")
        if pos == "A" and 21 not in f:
            check.add(rec, 21, "POS A (angled) needs the pose offset angle POA")
        if pos == "D" and 25 not in f:
            check.add(rec, 25, "POS D needs the subject pose angles SPA")
        if sap is not None and sap >= 30:
            if pos is None and 25 not in f:
                check.add(rec, 20, f"SAP {sap} needs the pose: POS or SPA")
            if thps is not None and tvps is not None and thps != tvps:
                check.add(rec, 9, f"SAP {sap} needs square pixels; THPS {thps} and TVPS {tvps} differ")
            for problem in sap_geometry_problems(sap, width, height):
                check.add(rec, 13, problem)
        if sap in SXS_MANDATORY_SAPS:
            check.require(rec, (26,), f"SAP {sap}")
        for code in _texts(f.get(26)):
            if code not in SXS_CODES:
                check.add(rec, 26, f"{code!r} is not a subject facial description code")
    elif imt in SMT_IMTS:
        for tag, name in ((13, "SAP"), (20, "POS"), (26, "SXS")):
            if tag in f:
                check.add(rec, tag, f"{name} describes a face; IMT {imt} images do not carry it")
        smd = f.get(42)
        if smd is None:
            check.add(rec, 42, f"an IMT {imt} image needs its description (SMT descriptors, SMD)")
        else:
            subs = (smd,) if isinstance(smd, str) else smd
            for sub in subs:
                items = (sub,) if isinstance(sub, str) else sub
                smi = items[0] if items else ""
                if smi != imt:
                    check.add(rec, 42, f"SMT code indicator {smi!r} does not match IMT {imt}")
                if smi == "TATTOO" and (len(items) < 2 or items[1] not in TATTOO_CLASSES):
                    check.add(rec, 42, "a TATTOO needs its tattoo class (HUMAN, ANIMAL, ..., OTHER)")
                desc = items[3] if len(items) > 3 else ""
                if not desc.strip():
                    check.add(rec, 42, f"the {imt.lower()} has no description")
                elif len(desc) > TDS_MAX:
                    check.add(rec, 42, f"the description is longer than {TDS_MAX} characters")
    sqs = f.get(24)
    if sqs is not None:
        subs = (sqs,) if isinstance(sqs, str) else sqs
        for sub in subs:
            items = (sub,) if isinstance(sub, str) else sub
            qvu = _int(items[0]) if items else None
            if len(items) != 3:
                check.add(rec, 24, "a quality score is three items: score, vendor id, product id")
                continue
            if qvu is None or not (0 <= qvu <= 100 or qvu in (254, 255)):
                check.add(rec, 24, f"score {items[0]!r} must be 0-100, 254 (not computed) or 255 (failed)")
            if not _HEX4_RE.fullmatch(items[1]):
                check.add(rec, 24, f"vendor id {items[1]!r} must be 4 hex digits")
            product = _int(items[2])
            if product is None or not 1 <= product <= 65535:
                check.add(rec, 24, f"product id {items[2]!r} must be 1-65535")
    com = rec.text(38)
    if com is not None and len(com) > COM_MAX:
        check.add(rec, 38, f"comment is longer than {COM_MAX} characters")
    ann = f.get(902)
    if ann is not None:
        for sub in (ann,) if isinstance(ann, str) else ann:
            items = (sub,) if isinstance(sub, str) else sub
            if len(items) != 4 or not _valid_gmt(items[0]) or not all(i.strip() for i in items[1:]):
                check.add(rec, 902, "an annotation is four items: GMT, algorithm, owner, process")
    if version >= "0501":
        check.require(rec, (992,), f"VER {version}")
    t2c = rec.text(992)
    if t2c is not None and not any(r.type == 2 and r.fields.get(2) == t2c for r in records):
        check.add(rec, 992, f"refers to Type-2 IDC {t2c}, which the file does not have")
    for tag, value in f.items():
        if tag != 999 and any("999:" in t for t in _texts(value)):
            check.add(rec, tag, "text contains '999:', which readers take for the start of the image data")


def _check_transaction(check: _Checker, records: Sequence[NistRecord]) -> None:
    seen: dict[tuple[int, int], NistRecord] = {}
    for rec in records[1:]:
        idc = rec.idc
        if idc is None or not 0 <= idc <= 99:
            check.add(rec, 2, f"IDC {rec.fields.get(2)!r} must be an integer 0..99")
            continue
        if (rec.type, idc) in seen:
            check.add(rec, 2, f"another Type-{rec.type} record already uses IDC {idc}")
        seen[(rec.type, idc)] = rec
    faces = [r for r in records if r.type == 10 and r.text(3) == "FACE"]
    levels = [(r, _int(r.text(13)) or 0) for r in faces]
    if any(sap >= 30 for _, sap in levels) and not any(sap >= 30 and r.text(20) == "F" for r, sap in levels):
        first = next(r for r, sap in levels if sap >= 30)
        check.add(first, 20, "a best-practice SAP (30 and above) needs a frontal image (POS F) of that level")


def _compare(expected: Sequence[NistRecord], actual: Sequence[NistRecord]) -> list[NistIssue]:
    issues: list[NistIssue] = []
    if [r.type for r in expected] != [r.type for r in actual]:
        exp = ", ".join(str(r.type) for r in expected)
        got = ", ".join(str(r.type) for r in actual)
        return [NistIssue(0, "-", f"read back record types [{got}], built [{exp}]")]
    for exp, got in zip(expected, actual, strict=True):
        for tag in sorted(set(exp.fields) | set(got.fields)):
            if tag == 1 or (exp.type == 1 and tag == 3):
                continue  # LEN and CNT are computed by the codec (and CNT is checked on its own)
            want, have = exp.fields.get(tag), got.fields.get(tag)
            if (want if want is None else canonical(want)) != (have if have is None else canonical(have)):
                what = "image bytes differ" if tag == 999 else f"{want!r} read back as {have!r}"
                issues.append(NistIssue(exp.type, f"{exp.type}.{tag:03d}", f"IDC {exp.fields.get(2, '-')}: {what}"))
    return issues


def validate_transaction(
    data: bytes, *, expected: Sequence[NistRecord] | None = None, config: NistConfig | None = None
) -> list[NistIssue]:
    """Read ``data`` back with ``nistitl`` and check it: mandatory fields per record type, CNT against
    the records and their IDCs, field formats, the SAP/IMT/POS rules, the image against HLL/VLL/CGA/CSP,
    and (with ``expected``, the records it was built from) that every field reads back unchanged.
    Returns the issues; an empty list means the file is good."""
    try:
        records = decode_transaction(data)
    except NistFormatError as exc:
        return [NistIssue(0, "-", str(exc))]
    issues = validate_records(records, config)
    if expected is not None:
        issues.extend(_compare(expected, records))
    return issues


def export_record(record: WireRecord, config: NistConfig | None = None) -> bytes:
    """The record as a validated ANSI/NIST-ITL transaction; raises :class:`NistExportError` with the
    issues when it would not be valid (nothing invalid ever leaves the gallery)."""
    config = config or NistConfig()
    records = build_records(record, config)
    data = encode_records(records)
    issues = validate_transaction(data, expected=records, config=config)
    if issues:
        raise NistExportError(record.record_id, issues)
    return data
