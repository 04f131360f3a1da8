"""The byte codec: ANSI/NIST-ITL traditional encoding through ``nistitl`` (PyPI, CeCILL-C), which computes
LEN and CNT and splits the separators, and checks nothing else (:mod:`sync.county.gallery.nist.validate` does)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sync.county.gallery.nist.codes import CHARSETS
from sync.county.gallery.nist.model import FieldValue, NistCodecMissing, NistFormatError, NistRecord


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
