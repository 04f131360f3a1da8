"""What a county sets for its receiving system (:class:`NistConfig`), checked when it is made."""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

from sync.county.gallery.nist.codes import (
    HEX4_RE,
    ORI_RE,
    RES_RE,
    SAP_CODES,
    SMT_IMTS,
    TOT_RE,
    TYPE2_DEFAULT_FIELDS,
    TYPE2_MNEMONICS,
    VERSIONS,
)
from sync.county.gallery.nist.model import NistConfigError

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
    transaction. See the package docstring for what each value becomes."""

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
        problems = [problem for rule in _CONFIG_RULES for problem in rule(self)]
        if problems:
            raise NistConfigError("; ".join(problems))

    @property
    def zone(self) -> zoneinfo.ZoneInfo:
        return zoneinfo.ZoneInfo(self.timezone)

    def type2_labels(self) -> dict[int, str]:
        """Type-2 field number -> mnemonic, for messages."""
        return {n: TYPE2_MNEMONICS[k] for k, n in self.type2_fields.items()}


# The settings' checks, in the order their problems are reported (the types are already right).
def _header_problems(c: NistConfig) -> Iterator[str]:
    if c.version not in VERSIONS:
        yield f"version {c.version!r} is not one of {', '.join(VERSIONS)}"
    if not TOT_RE.fullmatch(c.tot):
        yield f"tot {c.tot!r} must be 1-16 upper-case letters or digits"
    for name in ("dai", "src"):
        value = getattr(c, name)
        if value is not None and not ORI_RE.fullmatch(value):
            yield f"{name} {value!r} must be a 9-character ORI (A-Z, 0-9)"
    if c.domain_version is not None and c.domain_name is None:
        yield "domain_version needs domain_name"
    for name in ("nsr", "ntr"):
        if not RES_RE.fullmatch(getattr(c, name)):
            yield f"{name} {getattr(c, name)!r} must look like 00.00 or 19.69"


def _timezone_problems(c: NistConfig) -> Iterator[str]:
    try:
        zoneinfo.ZoneInfo(c.timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        yield f"timezone {c.timezone!r} is not an IANA time zone (e.g. America/Los_Angeles)"


def _image_problems(c: NistConfig) -> Iterator[str]:
    if not HEX4_RE.fullmatch(c.quality_vendor):
        yield f"quality_vendor {c.quality_vendor!r} must be 4 upper-case hex digits"
    if not 1 <= c.quality_product <= 65535:
        yield "quality_product must be 1..65535"
    if c.fallback_sap not in SAP_CODES or c.fallback_sap >= 30:
        yield "fallback_sap must be a SAP code below 30 (it is used when a level is not met)"
    if c.smt_default_imt not in SMT_IMTS:
        yield f"smt_default_imt must be one of {', '.join(sorted(SMT_IMTS))}"
    if not c.annotation_owner.strip() or len(c.annotation_owner) > 64:
        yield "annotation_owner must be 1-64 characters"


def _type2_problems(c: NistConfig) -> Iterator[str]:
    unknown = set(c.type2_fields) - set(TYPE2_DEFAULT_FIELDS)
    missing = set(TYPE2_DEFAULT_FIELDS) - set(c.type2_fields)
    numbers = list(c.type2_fields.values())
    if unknown or missing:
        yield f"type2_fields must name exactly {', '.join(TYPE2_DEFAULT_FIELDS)}"
    elif any(type(n) is not int or not 3 <= n <= 999 for n in numbers) or len(set(numbers)) != len(numbers):
        yield "type2_fields numbers must be distinct integers 3..999"


_CONFIG_RULES: tuple[Callable[[NistConfig], Iterator[str]], ...] = (
    _header_problems,
    _timezone_problems,
    _image_problems,
    _type2_problems,
)
