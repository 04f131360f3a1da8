"""A verified booking record as ANSI/NIST-ITL records: a Type-1 header, one Type-2 with the booking data
and one Type-10 per capture (see the package docstring for the field mapping and the SAP rules)."""

from __future__ import annotations

import unicodedata
import zoneinfo
from collections.abc import Iterable, Mapping
from datetime import datetime, timezone
from typing import Any

from sync.county.gallery.nist.codes import (
    COM_MAX,
    POSE_TO_POS,
    SAP_CODES,
    SMT_WORD_RE,
    SXS_MANDATORY_SAPS,
    TDS_MAX,
    sap_geometry_problems,
)
from sync.county.gallery.nist.config import NistConfig
from sync.county.gallery.nist.model import FieldValue, NistRecord, is_ascii
from sync.county.gallery.nist.pose import pose_fields
from sync.protocol.jpeg import jpeg_info
from sync.protocol.wire import WireCapture, WireRecord


# ----------------------------------------------------------------------------------- quality report
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
    match = SMT_WORD_RE.search(description or "")
    if match is None:
        return default
    return "SCAR" if match.group(1).lower().startswith("scar") else "TATTOO"


# -------------------------------------------------------------------------------------------- build
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


SHORTENED = "..."


def _shorten(text: str, budget: int) -> str:
    """`text` in at most `budget` characters, cut only between words and marked with SHORTENED."""
    if len(text) <= budget:
        return text
    room = budget - len(SHORTENED)
    words = text[: room + 1].split(" ") if room > 0 else [""]
    kept = " ".join(words[:-1]) if len(words) > 1 else ""  # the last piece may be a cut word: drop it
    kept = kept.rstrip(" ,;:.-")
    return f"{kept}{SHORTENED}" if kept else SHORTENED


def _comment(parts: Iterable[str | None]) -> str | None:
    """10.038 COM from "code: text" parts ("kept by officer override: ...", "SAP 20: ..."), joined by "; ".

    COM holds COM_MAX characters. When the parts do not fit, the longest texts are shortened between
    words with a "..." marker; every part's code (before its first ": ") is always kept whole, so a reader
    still sees why the image was kept or downgraded. The full reason stays in the gallery's record.
    """
    items = []
    for part in parts:
        for piece in (part or "").split("; "):
            clean = unicodedata.normalize("NFC", piece).replace("999:", "999 :").strip()
            if clean:
                code, sep, text = clean.partition(": ")
                items.append([code + sep, text] if sep else ["", clean])
    if not items:
        return None
    while len("; ".join(c + t for c, t in items)) > COM_MAX:
        longest = max(items, key=lambda item: len(item[1]))
        if longest[1] in ("", SHORTENED):
            break
        excess = len("; ".join(c + t for c, t in items)) - COM_MAX
        longest[1] = _shorten(longest[1], max(len(SHORTENED), len(longest[1]) - excess))
    text = "; ".join(c + t for c, t in items)
    return text if len(text) <= COM_MAX else _shorten(text, COM_MAX)


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
    if capture.operator is not None:  # a hand-over: this photo was taken by another officer than the booking's
        override = _comment((f"taken by officer {capture.operator}", override))
    if pos is not None:
        pos, angles = pose_fields(capture.pose, capture.quality)
        sap, sap_note = _choose_sap(capture, pos, config)
        fields[13] = str(sap)
        fields[20] = pos
        if angles is not None:
            fields[25] = (angles,)
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
    if not all(is_ascii(v) for r in records for v in r.fields.values()):
        t1[15] = (("003", "UTF-8"),)
    return records
