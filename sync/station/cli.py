"""``booking-station sync`` (the delivery service) and ``booking-station status`` (is it delivering?).

Register them on the device CLI with :func:`register`. Both read the station config (``--config FILE``;
without it the main group's ``--config``, else /etc/booking-station/station.toml) for the ``[sync]``
section and the provisioned ``[station]``, ``[mqtt]`` and ``[keys]`` sections, and take ``--data-dir``
like the store commands (``$BOOKING_STATION_DATA_DIR``, default /var/lib/booking-station).

``sync`` runs until SIGTERM or SIGINT, then publishes the retained offline status and disconnects
cleanly; under systemd it reports READY, STATUS and WATCHDOG (see ``systemd/booking-station-sync.service``).
Errors that make it impossible to run (no config, missing key or certificate, damaged database) are
one ``error:`` line and exit status 2, so systemd's restart limit stops a station that cannot work
from restarting forever.

``status`` works whether or not the agent runs: the queue comes from the database, the link state from
the file the agent keeps (``DATA_DIR/sync/status.json``), with its age, so a stale file is visible as such.
Run directly as ``python -m sync.station.cli sync|status`` (the tests and the benchmark do).
"""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, NoReturn

import click

from appliance.config import DEFAULT_CONFIG
from appliance.store.cli import data_dir_option, open_store
from appliance.store.errors import StationStoreError
from sync.station.agent import STATUS_FILE, SyncAgent, SyncSetupError
from sync.station.config import SyncConfig, SyncConfigError, load_agent_settings, load_sync_config
from sync.station.remote import load_remote_settings, state_dir
from sync.station.status import pid_alive

EXIT_SETUP = 2


def _fail(message: str, code: int = EXIT_SETUP) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def _config_path(ctx: click.Context, own: Path | None) -> Path:
    """``--config`` of this command, else the main group's (its loaded config remembers the file)."""
    if own is not None:
        return own
    obj = ctx.find_root().obj
    source = getattr(obj.get("config"), "source", None) if isinstance(obj, dict) else None
    return Path(source) if source else DEFAULT_CONFIG


def config_option(func: Any) -> Any:
    return click.option(
        "--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
        help=f"station config file with [sync] (default: the main --config, else {DEFAULT_CONFIG})",
    )(func)


@click.command("sync")
@config_option
@data_dir_option
@click.option("-v", "--verbose", is_flag=True, help="debug logging")
@click.pass_context
def sync_command(ctx: click.Context, config_path: Path | None, data_dir: Path, verbose: bool) -> None:
    """Deliver queued bookings to the county gallery until stopped (SIGTERM).

    Records stay queued until the gallery confirms each one; this command never marks a record
    delivered on anything less. Safe to kill at any moment: nothing is lost and nothing is marked
    delivered that was not confirmed.
    """
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not verbose:
        logging.getLogger("paho").setLevel(logging.WARNING)
    try:
        config, store_options = load_agent_settings(_config_path(ctx, config_path), data_dir)
    except SyncConfigError as exc:
        _fail(str(exc))
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    agent = SyncAgent(config, data_dir, store_options=store_options)
    try:
        agent.run(stop)
    except (SyncSetupError, StationStoreError) as exc:
        _fail(str(exc))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _read_agent_status(data_dir: Path) -> dict[str, Any] | None:
    try:
        return json.loads((state_dir(data_dir) / STATUS_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def collect_status(config: SyncConfig | None, data_dir: Path) -> dict[str, Any]:
    """Everything ``status`` shows, as one JSON-ready dict."""
    with open_store(data_dir, create=False) as store:
        counts = store.queue_counts()
        age = store.oldest_pending_age()
        alarms = [{"name": a.name, "message": a.message, "raised_at": a.raised_at} for a in store.active_alarms()]
        row = store.conn.execute("SELECT MAX(delivered_at) FROM outbox").fetchone()
    agent = _read_agent_status(data_dir)
    now = datetime.now(timezone.utc)
    link: dict[str, Any] = {"running": False, "connected": False, "last_error": None, "updated_at": None,
                            "updated_seconds_ago": None}
    if agent is not None:
        updated = agent.get("at")
        try:
            ago = (now - datetime.fromisoformat(updated)).total_seconds() if updated else None
        except ValueError:
            ago = None
        running = agent.get("reason") != "stopped" and pid_alive(agent.get("pid"))
        link = {
            "running": running,
            "connected": bool(agent.get("connected")) and running,
            "last_error": agent.get("last_error"),
            "updated_at": updated,
            "updated_seconds_ago": None if ago is None else round(ago, 1),
            "in_flight": agent.get("in_flight"),
        }
    return {
        "county": config.county if config else None,
        "station": config.station if config else None,
        "broker": f"{config.host}:{config.port}" if config else None,
        "protocol": config.protocol if config else None,
        "agent": link,
        "queue": counts,
        "oldest_pending_age_s": None if age is None else round(age.total_seconds(), 1),
        "last_ack_at": row[0] if row and row[0] else None,
        "alarms": alarms,
        "remote_settings": load_remote_settings(data_dir),
    }


@click.command("status")
@config_option
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="one JSON object on one line")
@click.pass_context
def status_command(ctx: click.Context, config_path: Path | None, data_dir: Path, as_json: bool) -> None:
    """Show whether this station is delivering: the link, the queue, the last gallery ack, alarms."""
    config = None
    config_error = None
    try:
        config = load_sync_config(_config_path(ctx, config_path), data_dir)
    except SyncConfigError as exc:
        config_error = str(exc)  # the queue is still worth showing
    try:
        status = collect_status(config, data_dir)
    except StationStoreError as exc:
        _fail(str(exc))
    if config_error:
        status["config_error"] = config_error
    # Monitoring runs `status` and reads its exit code: "not delivering" must not look like success.
    delivering = bool(status["agent"]["running"] and status["agent"]["connected"]) and not config_error
    status["delivering"] = delivering
    if as_json:
        click.echo(json.dumps(status, sort_keys=True))
    else:
        _print_status(status, config is not None, config_error)
    ctx.exit(0 if delivering else 1)


def _print_status(status: dict[str, Any], has_config: bool, config_error: str | None) -> None:
    agent = status["agent"]
    where = f"station {status['station']} of county {status['county']}" if has_config else "station (config unreadable)"
    click.echo(f"{where}, broker {status['broker'] or '?'} (MQTT {status['protocol'] or '?'})")
    if config_error:
        click.echo(f"config: {config_error}")
    if not agent["running"]:
        link = "sync agent NOT running"
    elif agent["connected"]:
        link = "sync agent running, connected"
    else:
        link = "sync agent running, NOT connected" + (f" ({agent['last_error']})" if agent["last_error"] else "")
    if agent["updated_seconds_ago"] is not None:
        link += f"; its status is {agent['updated_seconds_ago']:.0f} s old"
    click.echo(link)
    q = status["queue"]
    age = status["oldest_pending_age_s"]
    click.echo(f"queue: pending {q['pending']}, delivered {q['delivered']}, rejected {q['rejected']}; "
               f"oldest pending {'none' if age is None else f'{age:.0f} s'}; last gallery ack "
               f"{status['last_ack_at'] or 'never'}")
    for alarm in status["alarms"]:
        click.echo(f"ALARM {alarm['name']} since {alarm['raised_at']}: {alarm['message']}")
    for key, value in status["remote_settings"].items():
        click.echo(f"remote setting {key} = {value}")


COMMANDS = (sync_command, status_command)


def register(group: click.Group) -> None:
    """Add ``sync`` and ``status`` to the device CLI (``appliance/cli.py``)."""
    for command in COMMANDS:
        group.add_command(command)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """The sync commands on their own (``python -m sync.station.cli``)."""


register(main)

if __name__ == "__main__":
    main()
