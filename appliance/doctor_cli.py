"""``booking-station doctor``: the click command around :func:`appliance.doctor.run_doctor`.

Register it on the device CLI (``appliance/cli.py``)::

    from appliance.doctor_cli import doctor
    main.add_command(doctor)

Exit status 0 when every check passes and 1 when any fails, so an installer script or a monitoring
agent can gate on it; the table (or ``--json``) says which check and why.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from appliance.cli_support import data_dir_option, renamed_option
from appliance.doctor import BROKER_TIMEOUT, CAMERA_TIMEOUT, render, run_doctor


def _config_path(ctx: click.Context, own: Path | None) -> Path | None:
    """``--config`` of this command, else the main group's (its loaded config remembers the file)."""
    if own is not None:
        return own
    obj = ctx.find_root().obj
    source = getattr(obj.get("config"), "source", None) if isinstance(obj, dict) else None
    return Path(source) if source else None


@click.command("doctor")
@click.option("--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="station config (default: the main --config, else /etc/booking-station/station.toml)")
@data_dir_option("station.db, keys/, sync/", file_okay=False)
@renamed_option("--device-profile", "--profile", "device_profile", metavar="NAME",
                help="device profile to check against (default: [station] device_profile)")
@renamed_option("--camera", "--camera-source", "camera_source", metavar="SOURCE",
                help="camera source for a profile that names none (replay: a folder, image or video)")
@click.option("--broker-timeout", type=click.FloatRange(0.5, 60), default=BROKER_TIMEOUT, show_default=True,
              help="seconds to wait for the broker")
@click.option("--camera-timeout", type=click.FloatRange(1, 120), default=CAMERA_TIMEOUT, show_default=True,
              help="seconds to wait for the camera's frames")
@click.option("--json", "as_json", is_flag=True, help="print {ok, checks: [{check, ok, detail}]}")
@click.pass_context
def doctor(ctx: click.Context, config_path: Path | None, data_dir: Path, device_profile: str | None,
           camera_source: str | None, broker_timeout: float, camera_timeout: float, as_json: bool) -> None:
    """Check this device against its profile: camera, models, clock, identity, broker, disk, database, keys.

    Changes nothing on the station. Exit status 0 when every check passes, 1 otherwise.
    """
    results = run_doctor(_config_path(ctx, config_path), data_dir, profile=device_profile, camera_source=camera_source,
                         broker_timeout=broker_timeout, camera_timeout=camera_timeout)
    if as_json:
        click.echo(json.dumps({"ok": all(r.ok for r in results), "checks": [r.as_dict() for r in results]}))
    else:
        for line in render(results):
            click.echo(line)
    sys.exit(0 if all(r.ok for r in results) else 1)
