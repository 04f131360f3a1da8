"""What every `booking-station` CLI module shares: the one-line error exit, exit codes and the station config.

CLI modules are named `cli.py` inside the package they drive (capture, ui, store, ...) or `<topic>_cli.py`
beside a topic module (`doctor_cli.py`, `firmware/provision_cli.py`). They are registered on the
`booking-station` group in `appliance.cli` and take the config the group loaded (`--config`) from the
click context, so a command run on its own (`python -m appliance.capture.cli`) still works.
"""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from appliance.config import StationConfig, StationConfigError, load_config

EXIT_INPUT = 1  # some input could not be processed
EXIT_SETUP = 2  # the station itself is not usable (config, models, runtime, data directory)


def fail(message: str, code: int = EXIT_SETUP) -> NoReturn:
    """One clear line on stderr and a non-zero exit: never a traceback for the officer or county IT."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def station_config(ctx: click.Context) -> StationConfig:
    """The config the `booking-station` group loaded, or the default file when run on its own."""
    root = ctx.find_root().obj
    if isinstance(root, dict) and isinstance(root.get("config"), StationConfig):
        return root["config"]
    try:
        return load_config(None)
    except StationConfigError as exc:
        fail(str(exc), EXIT_SETUP)
