"""What every `booking-station` CLI module shares: the one-line error exit, exit codes and the station config.

The conventions both CLIs share (``renamed_option``, ``--json``) are in :mod:`sync.cli_conventions`.

CLI modules are named `cli.py` inside the package they drive (capture, ui, store, ...) or `<topic>_cli.py`
beside a topic module (`doctor_cli.py`, `firmware/provision_cli.py`). They are registered on the
`booking-station` group in `appliance.cli` and take the config the group loaded (`--config`) from the
click context, so a command run on its own (`python -m appliance.capture.cli`) still works.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import click

from appliance.config import ENV_DATA_DIR, StationConfig, StationConfigError, load_config, resolve_data_dir
from sync.cli_conventions import EXIT_CHECK_FAILED, EXIT_USAGE, renamed_option

# The README's convention for both CLIs: 0 ok, 1 a check failed, 2 a usage or input error. A photo with no
# face, an unknown officer or an unreadable file is the caller's input to fix, not a failed check: exit 2,
# so a script can tell "fix what you gave me" (2) from "what you asked about is not right" (1).
EXIT_CHECK = EXIT_CHECK_FAILED  # a check ran and failed (a quality gate, doctor, audit verify, not delivering)
EXIT_INPUT = EXIT_USAGE  # some input could not be processed (no face, unknown officer, bad image or value)
EXIT_SETUP = EXIT_USAGE  # the station itself is not usable (config, models, runtime, data directory)


def fail(message: str, code: int = EXIT_SETUP) -> NoReturn:
    """One clear line on stderr and a non-zero exit: never a traceback for the officer or county IT."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def load_group_config(ctx: click.Context, config_path: Path | None) -> StationConfig:
    """Load the station config a command group was given (``--config``, else the default file) into
    ``ctx.obj``, where :func:`station_config` finds it for every command below; one line and exit 2 when it
    cannot be read. The `booking-station` group and the standalone groups load it the same way."""
    try:
        ctx.obj = {"config": load_config(config_path)}
    except StationConfigError as exc:
        fail(str(exc), EXIT_SETUP)
    return ctx.obj["config"]


def standalone_group(register: Callable[[click.Group], None], doc: str) -> click.Group:
    """A group of only the commands ``register`` adds to `booking-station`, to run one CLI module on its own
    (``python -m appliance.ui``, ``python -m appliance.capture.cli``) with the same ``--config`` loading.

    It is built here once rather than written out in each module, so the standalone groups cannot drift from
    each other; it leaves out what only the full group does (the version option, the vision limits)."""

    @click.group(name="main", help=doc, context_settings={"help_option_names": ["-h", "--help"]})
    @click.option("--config", "config_path", type=click.Path(path_type=Path), default=None,
                  help="station config file")
    @click.pass_context
    def group(ctx: click.Context, config_path: Path | None) -> None:
        load_group_config(ctx, config_path)

    register(group)
    return group


def station_config(ctx: click.Context) -> StationConfig:
    """The config the `booking-station` group loaded, or the default file when run on its own."""
    root = ctx.find_root().obj
    if isinstance(root, dict) and isinstance(root.get("config"), StationConfig):
        return root["config"]
    try:
        return load_config(None)
    except StationConfigError as exc:
        fail(str(exc), EXIT_SETUP)


def with_flags(config: StationConfig, flags: Mapping[str, Mapping[str, Any]]) -> StationConfig:
    """Command-line flags as the top layer of the station config (``{section: {key: value}}``; a flag left
    out, None, changes nothing), checked by the same model as the file: a bad value exits 2 naming it."""
    layer = {section: {key: value for key, value in values.items() if value is not None}
             for section, values in flags.items()}
    try:
        return config.layered({section: values for section, values in layer.items() if values}, "command line")
    except StationConfigError as exc:
        fail(str(exc), EXIT_SETUP)


def quality_flags(capture_standard: str | None, standards_dir: Path | None) -> dict[str, dict[str, Any]]:
    """``--capture-standard`` and ``--standards-dir`` as a ``[quality]`` layer for :func:`with_flags`."""
    return {"quality": {"capture_standard": capture_standard,
                        "standards_dir": None if standards_dir is None else str(standards_dir)}}


def _data_dir_callback(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path:
    """``--data-dir`` resolved by :func:`appliance.config.resolve_data_dir` (flag > env > station.toml > default).

    The station.toml is the command's own ``--config`` if it has one and it was given (click processes an
    option not on the command line after those that are, so it is known here), else the main group's.
    A config that cannot be read counts as no ``data_dir`` here; the command itself reports it.
    """
    if value is not None:
        return resolve_data_dir(value)
    own = ctx.params.get("config_path")
    config: StationConfig | None = None
    try:
        config = load_config(own) if own is not None else station_config_or_default(ctx)
    except StationConfigError:
        config = None
    return resolve_data_dir(None, config.station.data_dir if config is not None else None)


def station_config_or_default(ctx: click.Context) -> StationConfig:
    """The main group's loaded config, else the default file (raises StationConfigError)."""
    root = ctx.find_root().obj
    if isinstance(root, dict) and isinstance(root.get("config"), StationConfig):
        return root["config"]
    return load_config(None)


def data_dir_option(what: str = "station.db, keys/", *, file_okay: bool = True) -> Callable[[Any], Any]:
    """The one ``--data-dir`` option of every command (see :func:`appliance.config.resolve_data_dir`)."""
    return click.option(
        "--data-dir", type=click.Path(path_type=Path, file_okay=file_okay, dir_okay=True), default=None,
        callback=_data_dir_callback,
        help=f"station data directory ({what}); default: ${ENV_DATA_DIR}, else [station] data_dir in "
             f"station.toml, else /var/lib/booking-station")


def capture_standard_option(help_text: str, *, required: bool = False) -> Callable[[Any], Any]:
    """``--capture-standard NAME`` (nist-sap30, nist-sap40, icao or a county's); old name ``--profile``."""
    return renamed_option("--capture-standard", "--profile", "capture_standard", required=required,
                          metavar="NAME", help=help_text)


def standards_dir_option() -> Callable[[Any], Any]:
    """``--standards-dir DIR``: a county folder of capture standards; old name ``--profile-dir``."""
    return renamed_option("--standards-dir", "--profile-dir", "standards_dir",
                          type=click.Path(path_type=Path, file_okay=False),
                          help="county folder of capture standards that override or add to the shipped ones "
                               "(default: [quality] standards_dir)")
