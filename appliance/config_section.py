"""The base every station-config section is built on, and the one-line wording of its errors.

Every section of ``station.toml`` (``appliance.config``; ``[sync]`` in ``sync.station.config``) is a pydantic
model on :class:`ConfigSection`, so defaults, types and ranges are declared once, beside the key. The
models are strict (a TOML string is not silently turned into a number, ``true`` is not a port) and refuse
keys they do not know, because a typo in a county's file must stop the station at start-up instead of
being ignored at a booking desk. :func:`describe` turns pydantic's error list into the one line a person
at the desk reads: the file, the section, the key, the value and what it must be.

This module imports nothing from the rest of the station, so the sync agent's section can use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

#: pydantic error types -> the words the line uses (``{...}`` filled from the error's context).
_WORDS = {
    "greater_than_equal": "must be at least {ge}",
    "less_than_equal": "must be at most {le}",
    "greater_than": "must be above {gt}",
    "less_than": "must be below {lt}",
    "int_type": "must be a whole number",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "string_type": "must be text",
    "bool_type": "must be true or false",
    "dict_type": "must be a table",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "list_type": "must be a list",
    "finite_number": "must be a finite number",
}


class ConfigSection(BaseModel):
    """One ``[section]`` of station.toml: strict types, unknown keys refused, values still settable in code."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)

    @classmethod
    def known_keys(cls) -> list[str]:
        """The keys a file may use (field names; the old name of a renamed key is accepted but not listed)."""
        return list(cls.model_fields)


def _words(error: Mapping[str, Any]) -> str:
    template = _WORDS.get(str(error.get("type")))
    if template is not None:
        try:
            return template.format(**(error.get("ctx") or {}))
        except (KeyError, IndexError):
            pass
    message = str(error.get("msg", "is not valid"))
    for prefix in ("Value error, ", "Assertion failed, "):
        message = message.removeprefix(prefix)
    return message.replace("Input should be", "must be")


def _key(loc: tuple[Any, ...]) -> str:
    return ".".join(str(part) for part in loc)


def _located(error: Mapping[str, Any], section: str | None) -> tuple[str | None, tuple[Any, ...]]:
    loc = tuple(error.get("loc", ()))
    if section is not None:
        return section, loc
    return (str(loc[0]), loc[1:]) if loc else (None, ())


def describe(exc: ValidationError, *, section: str | None = None,
             sections: Mapping[str, type[ConfigSection]] | None = None) -> str:
    """The first problem of ``exc`` as ``[section] key = value: what it must be``.

    ``section`` names the section when ``exc`` came from one section's model (its locations start at the
    key); otherwise (the whole config, whose tables are ``sections``) the first location part is the
    section. Unknown keys of one section are listed together, with the keys the section knows.
    """
    errors = exc.errors()
    where_first, loc = _located(errors[0], section)
    first = errors[0]
    if first.get("type") == "extra_forbidden":
        if not loc:  # an unknown top-level table
            return f"unknown section [{where_first}] (known: {', '.join(sections or {})})"
        unknown = sorted({_key(key) for e in errors if e.get("type") == "extra_forbidden"
                          for name, key in [_located(e, section)] if name == where_first and key})
        model = (sections or {}).get(where_first or "")
        known = f" (known: {', '.join(model.known_keys())})" if model is not None else ""
        return f"unknown key(s) in [{where_first}]: {', '.join(unknown)}{known}"
    where = f"[{where_first}]" if where_first else "the config"
    if not loc:
        if first.get("type") in ("model_type", "model_attributes_type", "dict_type"):
            return f"{where} must be a table"
        return f"{where} {_words(first)}"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where} {_key(loc)} = {first.get('input')!r}: {_words(first)}{more}"
