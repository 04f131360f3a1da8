"""What the ANSI/NIST-ITL package passes around: a logical record, a validation issue and the errors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from sync.county.gallery.nist.codes import DIGITS_RE

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


class NistFormatError(ValueError):
    """The bytes are not a transaction ``nistitl`` can read."""


@dataclass
class NistRecord:
    """One logical record as field number -> value. LEN (xx.001) and CNT (1.003) are left out when
    building: ``nistitl`` computes them. Decoded records carry every field the file had."""

    type: int
    fields: dict[int, FieldValue]

    @property
    def idc(self) -> int | None:
        value = self.fields.get(2)
        return int(value) if isinstance(value, str) and DIGITS_RE.fullmatch(value) else None

    def text(self, tag: int) -> str | None:
        """The field as one string (first item of the first subfield when it has several)."""
        value = self.fields.get(tag)
        if isinstance(value, str):
            return value
        if isinstance(value, tuple) and value and value[0]:
            return value[0][0]
        return None


def is_ascii(value: FieldValue) -> bool:
    """Whether a field's text is 7-bit ASCII (the default character set); the image always is."""
    if isinstance(value, bytes):
        return True
    if isinstance(value, str):
        return value.isascii()
    return all(item.isascii() for sub in value for item in sub)
