"""The validator: every rule the county's reader relies on, checked on the records as ``nistitl`` reads them
back (the field rules are the tables in :mod:`sync.county.gallery.nist.rules`). Issues are
``(record_type, field, message)``; record type 0 means the file as a whole."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

from sync.county.gallery.nist.codec import canonical, decode_transaction
from sync.county.gallery.nist.codes import MNEMONICS, ORI_RE
from sync.county.gallery.nist.config import NistConfig
from sync.county.gallery.nist.model import NistFormatError, NistIssue, NistRecord, is_ascii
from sync.county.gallery.nist.rules import (
    TYPE1_RULES,
    TYPE10_RULES,
    Image,
    Rule,
    Subject,
    as_int,
    charset_index,
    valid_gmt,
)


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


def apply_rules(check: _Checker, subject: Subject, rules: Sequence[Rule]) -> None:
    """The mandatory fields of ``rules`` first, then every applicable row in table order."""
    rec = subject.rec
    check.require(rec, [rule.tag for rule in rules if rule.required])
    for rule in rules:
        if rule.applies is not None and not rule.applies(subject):  # type: ignore[arg-type]
            continue
        why = rule.required_if(subject) if rule.required_if else None  # type: ignore[arg-type]
        if why:
            check.require(rec, (rule.tag,), why)
        if rule.valid is not None and rule.tag in rec.fields:
            text = rec.text(rule.tag)
            if not rule.valid(text):
                check.add(rec, rule.tag, rule.problem.format(value=text))
        for tag, message in rule.check(subject, rule) if rule.check else ():
            check.add(rec, tag, message)


def _check_charset(check: _Checker, t1: NistRecord, records: Sequence[NistRecord]) -> None:
    """Text outside 7-bit ASCII only when 1.015 DCS names a character set."""
    dcs, index = charset_index(t1)
    if dcs is None or index == "000":
        for rec in records:
            for tag, value in rec.fields.items():
                if not isinstance(value, bytes) and not is_ascii(value):
                    check.add(rec, tag, "text outside 7-bit ASCII needs 1.015 DCS naming its character set")


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
        if (as_int(rtype), as_int(idc)) != (rec.type, rec.idc):
            check.add(
                t1,
                3,
                f"CNT entry {n} says Type-{rtype} IDC {idc}; record {n} is Type-{rec.type} IDC {rec.fields.get(2)}",
            )


# ---------------------------------------------------------------------------------------- Type-2
def _check_type2(check: _Checker, rec: NistRecord, config: NistConfig | None) -> None:
    check.require(rec, (1, 2))
    if config is not None:
        check.require(rec, sorted(config.type2_fields.values()), "this county's Type-2 layout")
        ori_tag = config.type2_fields["ori"]
        ori = rec.text(ori_tag)
        if ori and not ORI_RE.fullmatch(ori):
            check.add(rec, ori_tag, f"{ori!r} must be a 9-character agency identifier (A-Z, 0-9)")
        when = rec.text(config.type2_fields["captured_at"])
        if when and not valid_gmt(when):
            check.add(rec, config.type2_fields["captured_at"], f"{when!r} is not a UTC time YYYYMMDDHHMMSSZ")


# ------------------------------------------------------------------------------------ transaction
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
    levels = [(r, as_int(r.text(13)) or 0) for r in faces]
    if any(sap >= 30 for _, sap in levels) and not any(sap >= 30 and r.text(20) == "F" for r, sap in levels):
        first = next(r for r, sap in levels if sap >= 30)
        check.add(first, 20, "a best-practice SAP (30 and above) needs a frontal image (POS F) of that level")


def validate_records(records: Sequence[NistRecord], config: NistConfig | None = None) -> list[NistIssue]:
    """Every rule this package knows, on decoded records (see :func:`validate_transaction`)."""
    check = _Checker(config.type2_labels() if config else {})
    if not records or records[0].type != 1:
        check.add(None, None, "a transaction must start with its Type-1 record")
        return check.issues
    t1 = records[0]
    version = t1.text(2) or ""
    apply_rules(check, Subject(t1, records, version), TYPE1_RULES)
    _check_charset(check, t1, records)
    _check_cnt(check, t1, records)
    for rec in records[1:]:
        if rec.type == 1:
            check.add(rec, None, "a transaction has exactly one Type-1 record, at the start")
        elif rec.type == 2:
            _check_type2(check, rec, config)
        elif rec.type == 10:
            apply_rules(check, Image.of(rec, records, version), TYPE10_RULES)
        else:
            check.add(rec, None, f"record type {rec.type} is not part of a booking export (Types 1, 2, 10)")
    _check_transaction(check, records)
    return check.issues


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
