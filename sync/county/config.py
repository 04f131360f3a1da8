"""County configuration: one TOML file, ``county.toml``, read by every ``booking-gallery`` command.

``/etc/booking-gallery/county.toml`` by default, or ``booking-gallery --config FILE`` (also
``$BOOKING_GALLERY_CONFIG``). It is the gallery receiver's file (``receiver.example.toml``: ``[broker]``,
``[gallery]``, ``[export]``) plus ``[ca] dir``, so one file serves ``receive`` and every other command::

    [gallery]
    db = "/var/lib/booking-gallery/gallery.db"   # or postgresql://gallery@db.king.example.gov/gallery
    [ca]
    dir = "/var/lib/booking-enroll"
    [export]
    folder = "/var/lib/booking-gallery/eft"
    [search]
    engine = "faiss"                             # or "pgvector"; see sync/county/search/settings.py
    [console]
    port = 8600                                  # see sync/county/console/settings.py

A command-line flag wins over its environment variable, which wins over this file, which wins over the
built-in default. A missing default file means defaults; a missing file named with ``--config`` is an
error, and so is an unknown section or key (a typo is caught, not ignored). Relative paths are taken
from the file's folder, like the receiver's certificate paths.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import click
from click.core import ParameterSource

from sync.county.console.settings import ConsoleConfigError, ConsoleSettings
from sync.county.gallery.export import ExportConfigError, ExportSettings
from sync.county.gallery.receiver import ReceiverConfig
from sync.county.search.settings import SearchConfigError, SearchSettings

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

DEFAULT_CONFIG = Path("/etc/booking-gallery/county.toml")
CONFIG_ENV = "BOOKING_GALLERY_CONFIG"


class CountyConfigError(ValueError):
    """The configuration file is unreadable or has a wrong section, key or value; the message says which."""


@dataclass(frozen=True)
class CountyConfig:
    """What ``county.toml`` says; ``None`` where it says nothing (the command's own default applies)."""

    source: Path | None = None
    db: str | None = None  # [gallery] db
    ca_dir: Path | None = None  # [ca] dir
    export: ExportSettings = field(default_factory=ExportSettings)  # [export]
    search: SearchSettings = field(default_factory=SearchSettings)  # [search]
    console: ConsoleSettings = field(default_factory=ConsoleSettings)  # [console]


def _receiver_keys() -> set[str]:
    return {f.name for f in fields(ReceiverConfig)}


# [broker] and [gallery] are the receiver's tables: their keys are ReceiverConfig's (as its loader reads them).
SECTIONS: dict[str, Any] = {"broker": _receiver_keys, "gallery": _receiver_keys, "ca": lambda: {"dir"},
                            "export": None, "search": SearchSettings.keys, "console": ConsoleSettings.keys}


def _path_value(path: Path, section: str, key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CountyConfigError(f"{path}: [{section}] {key} must be a non-empty string")
    return value


def _check_sections(path: Path, data: dict[str, Any]) -> None:
    for section, values in data.items():
        if section not in SECTIONS:
            raise CountyConfigError(f"{path}: unknown section [{section}] (known: {', '.join(SECTIONS)})")
        if not isinstance(values, dict):
            raise CountyConfigError(f"{path}: [{section}] must be a table")
        known = SECTIONS[section]
        unknown = set() if known is None else set(values) - known()
        if unknown:
            raise CountyConfigError(f"{path}: unknown key(s) in [{section}]: {', '.join(sorted(unknown))}")


def load_county_config(path: str | os.PathLike[str] | None = None) -> CountyConfig:
    """Read county.toml; a missing default file means all defaults, a missing named file is an error."""
    if path is None:
        if not DEFAULT_CONFIG.is_file():
            return CountyConfig()
        path = DEFAULT_CONFIG
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CountyConfigError(f"config file not found: {path}") from None
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CountyConfigError(f"config file {path} cannot be read: {exc}") from None
    _check_sections(path, data)
    base = path.resolve().parent
    db = data.get("gallery", {}).get("db")
    if db is not None:
        db = _path_value(path, "gallery", "db", db)
    ca_dir = data.get("ca", {}).get("dir")
    try:
        export = ExportSettings.from_mapping(data.get("export", {}), base)
        search = SearchSettings.from_mapping(data.get("search", {}), base)
        console = ConsoleSettings.from_mapping(data.get("console", {}), base)
    except (ExportConfigError, SearchConfigError, ConsoleConfigError) as exc:
        raise CountyConfigError(f"{path}: {exc}") from None
    return CountyConfig(
        source=path,
        db=db,
        ca_dir=None if ca_dir is None else base / _path_value(path, "ca", "dir", ca_dir),
        export=export,
        search=search,
        console=console,
    )


# ------------------------------------------------------------------------------------ for the commands
class ConfigSetupError(click.ClickException):
    """A configuration or database a command cannot start with: one line, exit status 2."""

    exit_code = 2


def current_config() -> CountyConfig:
    """The configuration the ``booking-gallery`` group loaded; a command invoked on its own (tests,
    embedding) reads ``$BOOKING_GALLERY_CONFIG`` or the default file itself."""
    ctx = click.get_current_context(silent=True)
    config = ctx.find_object(CountyConfig) if ctx is not None else None
    if config is None:
        try:
            config = load_county_config(os.environ.get(CONFIG_ENV) or None)
        except CountyConfigError as exc:
            raise ConfigSetupError(str(exc)) from None
        if ctx is not None and ctx.obj is None:
            ctx.obj = config
    return config


def from_config(attribute: str) -> Any:
    """A click option callback: when the option was left at its default (no flag, no environment
    variable), take ``attribute`` of county.toml if the file sets it."""

    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
        if ctx.resilient_parsing or param.name is None:
            return value
        if ctx.get_parameter_source(param.name) not in (ParameterSource.DEFAULT, None):
            return value
        configured = getattr(current_config(), attribute)
        return value if configured is None else configured

    return callback
