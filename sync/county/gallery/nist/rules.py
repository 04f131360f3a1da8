"""The Type-1 and Type-10 rules as tables (:data:`TYPE1_RULES`, :data:`TYPE10_RULES`): one row per field
rule, checked in table order by :func:`sync.county.gallery.nist.validate.apply_rules`; rows marked ``required``
are checked first, all together. A row's own checks yield ``(field, message)`` findings."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sync.county.gallery.nist.codes import (
    CGA_CODES,
    CHARSETS,
    COM_MAX,
    CSP_CODES,
    DIGITS_RE,
    HEX4_RE,
    IMT_CODES,
    ORI_RE,
    POS_CODES,
    RES_RE,
    SAP_CODES,
    SMT_IMTS,
    SXS_CODES,
    SXS_MANDATORY_SAPS,
    TATTOO_CLASSES,
    TDS_MAX,
    TOT_RE,
    VERSIONS,
    sap_geometry_problems,
)
from sync.county.gallery.nist.model import FieldValue, NistRecord
from sync.protocol.jpeg import JpegInfo, jpeg_info

#: What a rule found: the field (of the record being checked) and what is wrong with it.
Finding = tuple[int, str]


# ----------------------------------------------------------------------------------------- values
def valid_date(text: str | None) -> bool:
    if text is None or not re.fullmatch(r"\d{8}", text):
        return False
    try:
        datetime.strptime(text, "%Y%m%d")
    except ValueError:
        return False
    return True


def valid_gmt(text: str | None) -> bool:
    if text is None or not re.fullmatch(r"\d{14}Z", text):
        return False
    try:
        datetime.strptime(text, "%Y%m%d%H%M%SZ")
    except ValueError:
        return False
    return True


def as_int(text: str | None) -> int | None:
    return int(text) if text is not None and DIGITS_RE.fullmatch(text) else None


def _texts(value: FieldValue | None) -> Iterable[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, tuple):
        for sub in value:
            yield from sub


def _items(value: FieldValue) -> Iterator[tuple[str, ...]]:
    """The information items of each subfield (plain text is one subfield of one item)."""
    for sub in (value,) if isinstance(value, str) else value:
        yield (sub,) if isinstance(sub, str) else sub  # type: ignore[misc]


def _optional(valid: Callable[[str], object]) -> Callable[[str | None], bool]:
    """``valid`` for a field that has text; a field without text is left to the mandatory-field check."""
    return lambda text: text is None or bool(valid(text))


def _one_of(codes: Iterable[str]) -> Callable[[str | None], bool]:
    allowed = frozenset(codes)
    return _optional(allowed.__contains__)


def _pixel_count(text: str | None) -> bool:
    value = as_int(text)
    return value is not None and 10 <= value <= 99999


def _positive(text: str | None) -> bool:
    value = as_int(text)
    return value is not None and value >= 1


# ------------------------------------------------------------------------------------ rule tables
@dataclass(frozen=True)
class Subject:
    """The record a rule looks at, in its transaction (``version`` is 1.002 VER)."""

    rec: NistRecord
    records: Sequence[NistRecord]
    version: str


@dataclass(frozen=True)
class Image(Subject):
    """A Type-10 record with what several of its rules need worked out once."""

    imt: str | None
    hll: int | None
    vll: int | None
    thps: int | None
    tvps: int | None
    info: JpegInfo | None  # the JPEG's frame header, when 10.999 is a JPEG
    width: int  # from the JPEG when it has a frame header, else HLL x VLL (0 when missing)
    height: int
    sap: int | None
    pos: str | None

    @classmethod
    def of(cls, rec: NistRecord, records: Sequence[NistRecord], version: str) -> Image:
        hll, vll = as_int(rec.text(6)), as_int(rec.text(7))
        data = rec.fields.get(999)
        info = jpeg_info(data) if isinstance(data, bytes) else None
        width, height = (info.width, info.height) if info else (hll or 0, vll or 0)
        return cls(
            rec, records, version, imt=rec.text(3), hll=hll, vll=vll, thps=as_int(rec.text(9)),
            tvps=as_int(rec.text(10)), info=info, width=width, height=height, sap=as_int(rec.text(13)),
            pos=rec.text(20),
        )  # fmt: skip


@dataclass(frozen=True)
class Rule:
    """One row of a record type's rules. In a row, ``required_if`` is checked first, then ``valid``,
    then ``check``; a field can have more than one row."""

    tag: int
    name: str  # the field's mnemonic
    required: bool = False  # mandatory in every record of the type
    applies: Callable[[Image], bool] | None = None  # the row is for these records only (None: all)
    required_if: Callable[[Image], str | None] | None = None  # mandatory for the reason this returns
    valid: Callable[[str | None], object] | None = None  # tests the field's text when the field is present
    problem: str = ""  # the message when ``valid`` fails; ``{value!r}`` is the text
    check: Callable[..., Iterable[Finding]] | None = None  # (subject, rule) -> findings: anything else


# ---------------------------------------------------------------------------------------- Type-1
_ORI_PROBLEM = "{value!r} must be a 9-character agency identifier (A-Z, 0-9)"
_RES_PROBLEM = "{value!r} must be a resolution in ppmm written NN.NN (00.00 for no fingerprints)"


def charset_index(t1: NistRecord) -> tuple[FieldValue | None, object]:
    """1.015 DCS and the character set index it names."""
    dcs = t1.fields.get(15)
    return dcs, dcs[0][0] if isinstance(dcs, tuple) else dcs


def _known_charset(s: Subject, rule: Rule) -> Iterator[Finding]:
    dcs, index = charset_index(s.rec)
    if dcs is not None and index not in CHARSETS:
        yield 15, f"character set {index!r} is not supported here (000 ASCII, 001 Latin-1, 003 UTF-8)"


TYPE1_RULES: tuple[Rule, ...] = (
    Rule(1, "LEN", required=True),
    Rule(2, "VER", required=True, valid=_one_of(VERSIONS),
         problem="version {value!r} is not one of " + ", ".join(VERSIONS)),
    Rule(3, "CNT", required=True),  # checked against the records by _check_cnt
    Rule(4, "TOT", required=True, valid=lambda v: not v or TOT_RE.fullmatch(v),
         problem="{value!r} must be 1-16 upper-case letters or digits"),
    Rule(5, "DAT", required=True, valid=_optional(valid_date), problem="{value!r} is not a date in YYYYMMDD form"),
    Rule(7, "DAI", required=True, valid=_optional(ORI_RE.fullmatch), problem=_ORI_PROBLEM),
    Rule(8, "ORI", required=True, valid=_optional(ORI_RE.fullmatch), problem=_ORI_PROBLEM),
    Rule(9, "TCN", required=True, valid=_optional(lambda v: 1 <= len(v) <= 40), problem="TCN must be 1-40 characters"),
    Rule(11, "NSR", required=True, valid=_optional(RES_RE.fullmatch), problem=_RES_PROBLEM),
    Rule(12, "NTR", required=True, valid=_optional(RES_RE.fullmatch), problem=_RES_PROBLEM),
    Rule(14, "GMT", valid=valid_gmt, problem="{value!r} is not a UTC time in YYYYMMDDHHMMSSZ form"),
    Rule(15, "DCS", check=_known_charset),
)  # fmt: skip


# --------------------------------------------------------------------------------------- Type-10
def _is_face(s: Image) -> bool:
    return s.imt == "FACE"


def _is_mark(s: Image) -> bool:
    return s.imt in SMT_IMTS


def _image_matches_fields(s: Image, rule: Rule) -> Iterator[Finding]:
    """A JPEG named by CGA is one, of that process, JFIF, complete, and of the size and colours the fields say."""
    cga, data = s.rec.text(11), s.rec.fields.get(999)
    if cga not in ("JPEGB", "JPEGL") or not isinstance(data, bytes):
        return
    if s.info is None:
        yield 999, f"CGA is {cga} but the image data is not a JPEG with a frame header"
        return
    info, csp = s.info, s.rec.text(12)
    if cga == "JPEGB" and not info.baseline:
        yield 11, f"JPEGB needs a baseline (8-bit sequential) JPEG; this one is {info.process}"
    if cga == "JPEGL" and info.sof != 0xC3:
        yield 11, f"JPEGL needs a lossless JPEG; this one is {info.process}"
    if not info.jfif:
        yield 999, f"{cga} image data must be JFIF (an APP0 'JFIF' marker); this JPEG has none"
    if not info.complete:
        yield 999, "the JPEG does not end with an EOI marker: the image is truncated"
    if (s.hll, s.vll) != (info.width, info.height) and s.hll is not None and s.vll is not None:
        yield 6, f"HLL x VLL say {s.hll}x{s.vll}; the JPEG is {info.width}x{info.height}"
    want = "GRAY" if info.components == 1 else "YCC"
    if csp is not None and csp != want and not (want == "YCC" and csp == "SYCC"):
        yield 12, f"a {info.components}-component JPEG is {want}, not {csp}"


def _needed_for_pose(pos: str, message: str) -> Callable[[Image, Rule], Iterator[Finding]]:
    """The row's field is mandatory when POS is ``pos``."""

    def check(s: Image, rule: Rule) -> Iterator[Finding]:
        if s.pos == pos and rule.tag not in s.rec.fields:
            yield rule.tag, message

    return check


def _best_practice_level(s: Image, rule: Rule) -> Iterator[Finding]:
    """SAP 30 and above: a pose, square pixels and the level's Annex E geometry."""
    if s.sap is None or s.sap < 30:
        return
    if s.pos is None and 25 not in s.rec.fields:
        yield 20, f"SAP {s.sap} needs the pose: POS or SPA"
    if s.thps is not None and s.tvps is not None and s.thps != s.tvps:
        yield 9, f"SAP {s.sap} needs square pixels; THPS {s.thps} and TVPS {s.tvps} differ"
    for problem in sap_geometry_problems(s.sap, s.width, s.height):
        yield 13, problem


def _sxs_mandatory(s: Image) -> str | None:
    return f"SAP {s.sap}" if s.sap in SXS_MANDATORY_SAPS else None


def _sxs_codes(s: Image, rule: Rule) -> Iterator[Finding]:
    for code in _texts(s.rec.fields.get(26)):
        if code not in SXS_CODES:
            yield 26, f"{code!r} is not a subject facial description code"


def _face_field_on_mark(s: Image, rule: Rule) -> Iterator[Finding]:
    if rule.tag in s.rec.fields:
        yield rule.tag, f"{rule.name} describes a face; IMT {s.imt} images do not carry it"


def _smt_descriptors(s: Image, rule: Rule) -> Iterator[Finding]:
    smd = s.rec.fields.get(42)
    if smd is None:
        yield 42, f"an IMT {s.imt} image needs its description (SMT descriptors, SMD)"
        return
    imt = s.imt or ""
    for items in _items(smd):
        smi = items[0] if items else ""
        if smi != imt:
            yield 42, f"SMT code indicator {smi!r} does not match IMT {imt}"
        if smi == "TATTOO" and (len(items) < 2 or items[1] not in TATTOO_CLASSES):
            yield 42, "a TATTOO needs its tattoo class (HUMAN, ANIMAL, ..., OTHER)"
        desc = items[3] if len(items) > 3 else ""
        if not desc.strip():
            yield 42, f"the {imt.lower()} has no description"
        elif len(desc) > TDS_MAX:
            yield 42, f"the description is longer than {TDS_MAX} characters"


def _quality_scores(s: Image, rule: Rule) -> Iterator[Finding]:
    sqs = s.rec.fields.get(24)
    for items in _items(sqs) if sqs is not None else ():
        qvu = as_int(items[0]) if items else None
        if len(items) != 3:
            yield 24, "a quality score is three items: score, vendor id, product id"
            continue
        if qvu is None or not (0 <= qvu <= 100 or qvu in (254, 255)):
            yield 24, f"score {items[0]!r} must be 0-100, 254 (not computed) or 255 (failed)"
        if not HEX4_RE.fullmatch(items[1]):
            yield 24, f"vendor id {items[1]!r} must be 4 hex digits"
        product = as_int(items[2])
        if product is None or not 1 <= product <= 65535:
            yield 24, f"product id {items[2]!r} must be 1-65535"


def _annotations(s: Image, rule: Rule) -> Iterator[Finding]:
    ann = s.rec.fields.get(902)
    for items in _items(ann) if ann is not None else ():
        if len(items) != 4 or not valid_gmt(items[0]) or not all(i.strip() for i in items[1:]):
            yield 902, "an annotation is four items: GMT, algorithm, owner, process"


def _t2c_required(s: Image) -> str | None:
    return f"VER {s.version}" if s.version >= "0501" else None


def _t2c_names_a_type2(s: Image, rule: Rule) -> Iterator[Finding]:
    t2c = s.rec.text(992)
    if t2c is not None and not any(r.type == 2 and r.fields.get(2) == t2c for r in s.records):
        yield 992, f"refers to Type-2 IDC {t2c}, which the file does not have"


def _no_image_tag_in_text(s: Image, rule: Rule) -> Iterator[Finding]:
    for tag, value in s.rec.fields.items():
        if tag != 999 and any("999:" in t for t in _texts(value)):
            yield tag, "text contains '999:', which readers take for the start of the image data"


TYPE10_RULES: tuple[Rule, ...] = (
    Rule(1, "LEN", required=True),
    Rule(2, "IDC", required=True),  # checked across records by _check_transaction
    Rule(3, "IMT", required=True, valid=_one_of(IMT_CODES),
         problem="image type {value!r} is not one of " + ", ".join(IMT_CODES)),
    Rule(4, "SRC", required=True, valid=_optional(lambda v: 1 <= len(v) <= 35),
         problem="source agency must be 1-35 characters"),
    Rule(5, "PHD", required=True, valid=valid_date, problem="{value!r} is not a date in YYYYMMDD form"),
    Rule(6, "HLL", required=True, valid=_pixel_count, problem="{value!r} must be a pixel count 10..99999"),
    Rule(7, "VLL", required=True, valid=_pixel_count, problem="{value!r} must be a pixel count 10..99999"),
    Rule(8, "SLC", required=True, valid=_one_of(("0", "1", "2")),
         problem="scale units {value!r} must be 0 (aspect only), 1 (per inch) or 2 (per cm)"),
    Rule(9, "THPS", required=True, valid=_positive, problem="must be a positive integer"),
    Rule(10, "TVPS", required=True, valid=_positive, problem="must be a positive integer"),
    Rule(11, "CGA", required=True, valid=_one_of(CGA_CODES),
         problem="compression {value!r} is not one of " + ", ".join(sorted(CGA_CODES))),
    Rule(12, "CSP", required=True, valid=_one_of(CSP_CODES),
         problem="colour space {value!r} is not one of " + ", ".join(sorted(CSP_CODES))),
    Rule(999, "DATA", required=True, check=_image_matches_fields),
    # FACE images
    Rule(13, "SAP", applies=_is_face, required_if=lambda s: "IMT is FACE",
         valid=_optional(lambda v: as_int(v) in SAP_CODES),
         problem="{value!r} is not a subject acquisition profile code"),
    Rule(20, "POS", applies=_is_face, valid=_one_of(POS_CODES), problem="pose {value!r} is not one of F, R, L, A, D"),
    Rule(21, "POA", applies=_is_face, check=_needed_for_pose("A", "POS A (angled) needs the pose offset angle POA")),
    Rule(25, "SPA", applies=_is_face, check=_needed_for_pose("D", "POS D needs the subject pose angles SPA")),
    Rule(13, "SAP", applies=_is_face, check=_best_practice_level),
    Rule(26, "SXS", applies=_is_face, required_if=_sxs_mandatory, check=_sxs_codes),
    # SCAR, MARK and TATTOO images
    Rule(13, "SAP", applies=_is_mark, check=_face_field_on_mark),
    Rule(20, "POS", applies=_is_mark, check=_face_field_on_mark),
    Rule(26, "SXS", applies=_is_mark, check=_face_field_on_mark),
    Rule(42, "SMD", applies=_is_mark, check=_smt_descriptors),
    # every image
    Rule(24, "SQS", check=_quality_scores),
    Rule(38, "COM", valid=_optional(lambda v: len(v) <= COM_MAX),
         problem=f"comment is longer than {COM_MAX} characters"),
    Rule(902, "ANN", check=_annotations),
    Rule(992, "T2C", required_if=_t2c_required, check=_t2c_names_a_type2),
    Rule(999, "DATA", check=_no_image_tag_in_text),
)  # fmt: skip
