"""`booking-station serve` (the officer UI) and `booking-station users ...` (officer accounts, for the
station admin).

    booking-station serve [--host 127.0.0.1] [--port 8080] [--data-dir DIR] [--camera SPEC] [--profile NAME]
    booking-station users add OFFICER_ID [--name "Full Name"] [--role officer|station-admin] [--pin-stdin] [--json]
    booking-station users list [--json]
    booking-station users unlock OFFICER_ID [--json]
    booking-station users reset-totp OFFICER_ID

`users add` and `users reset-totp` print the officer's TOTP enrolment exactly once: a QR code for the
authenticator app, and the URI and secret for apps that take it typed in (`--json`: one object, with the
QR code as SVG). It is stored only encrypted, and nobody can show it again: enrol it in the officer's
authenticator app at once. Every account change is written to the station's audit log
with the admin's user name as actor.

Until `appliance/cli.py` registers these (`register(main)`), they run on their own:
``python -m appliance.ui serve ...``.
"""

from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from appliance.cli_support import (
    EXIT_INPUT,
    EXIT_SETUP,
    capture_standard_option,
    quality_flags,
    standalone_group,
    standards_dir_option,
    station_config,
    with_flags,
)
from appliance.cli_support import data_dir_option as _shared_data_dir_option
from appliance.cli_support import fail as _fail
from appliance.config import ENV_DATA_DIR

ENV_STATION = "BOOKING_STATION_ID"
ENV_AGENCY = "BOOKING_STATION_AGENCY"




def _admin() -> str:
    try:
        return f"admin:{getpass.getuser()}"
    except Exception:  # no user name in this environment (containers)
        return "admin"


data_dir_option = _shared_data_dir_option("station.db, accounts.db, keys/", file_okay=False)


@click.command("serve")
@click.option("--host", default=None, help="address to listen on (default 127.0.0.1: the kiosk browser only)")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help="TCP port (default 8080)")
@data_dir_option
@click.option("--camera", default=None, metavar="SPEC",
              help="camera spec (replay:PATH, opencv:0, picamera2, ...); default: the config's [camera]")
@capture_standard_option("capture standard (nist-sap30, nist-sap40, icao; default: [quality] capture_standard, "
                          "else nist-sap30)")
@standards_dir_option()
@click.option("--station", "station_id", default=None, envvar=ENV_STATION, metavar="ID",
              help=f"station id (default: [station] in the config; env {ENV_STATION})")
@click.option("--agency", default=None, envvar=ENV_AGENCY, metavar="ORI",
              help=f"default agency ORI on the start form (env {ENV_AGENCY})")
@click.option("--idle-lock-minutes", type=click.FloatRange(min=0, min_open=True, max=30), default=None,
              help="lock a session after this many idle minutes (at most 30, the default)")
@click.option("--jms-token-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="file with the jail management system's API token (mode 0600); omit to refuse JMS calls")
@click.pass_context
def serve_command(ctx: click.Context, host: str | None, port: int | None, data_dir: Path, camera: str | None,
                  capture_standard: str | None, standards_dir: Path | None, station_id: str | None,
                  agency: str | None,
                  idle_lock_minutes: float | None, jms_token_file: Path | None) -> None:
    """Run the officer UI (web page and JSON API) until stopped."""
    from appliance.scheduler import build_scheduler, settings_from_config
    from appliance.store import StationStoreError
    from appliance.ui.accounts import AccountError
    from appliance.ui.server import build_context, run
    from appliance.ui.settings import SettingsError, UISettings
    from appliance.vision.bundle import BundleError
    from appliance.vision.runtime import RuntimeMissing

    config = with_flags(station_config(ctx), quality_flags(capture_standard, standards_dir))
    station_id = station_id or config.station.station or None
    if not station_id:
        _fail(f"this station has no id yet: provision it, or pass --station ID (or set {ENV_STATION})", EXIT_SETUP)
    if not data_dir.is_dir():
        _fail(f"data directory {data_dir} does not exist; pass --data-dir (or set {ENV_DATA_DIR})", EXIT_SETUP)
    agency = agency or config.station.agency_ori or None
    try:
        settings = UISettings.build(config, data_dir=data_dir, station_id=station_id, host=host, port=port,
                                    camera=camera, agency_ori=agency,
                                    idle_lock_minutes=idle_lock_minutes,
                                    jms_token_file=str(jms_token_file) if jms_token_file else None)
        app_ctx = build_context(settings, config)
        housekeeping_settings = settings_from_config(config, data_dir)
    except (SettingsError, StationStoreError, AccountError, BundleError, RuntimeMissing) as exc:
        _fail(str(exc), EXIT_SETUP)
    except (LookupError, ValueError, OSError) as exc:  # unknown profile name, bad profile file
        _fail(f"cannot start: {exc}", EXIT_SETUP)
    click.echo(f"booking station {station_id}: officer UI on http://{_url_host(settings.host)}:{settings.port}/",
               err=True)
    # Retention, audit retention and the disk watch run beside the desk for as long as it is up.
    housekeeping = build_scheduler(housekeeping_settings)
    housekeeping.start()
    try:
        run(app_ctx)
    finally:
        housekeeping.shutdown(wait=False)


def _url_host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host


# --- users -----------------------------------------------------------------------------------------------

@click.group("users")
def users_group() -> None:
    """Officer accounts (PIN + TOTP) of this station, for the station admin."""


def _accounts(data_dir: Path, *, create: bool = True) -> Any:
    """Open the accounts file (and the store, whose key encrypts the TOTP secrets). ``create=False`` (a command
    that only reads) opens what exists and makes no file: None when the station has no accounts file yet."""
    from appliance.store import StationStoreError, Store
    from appliance.store.crypto import BlobCipher, load_key
    from appliance.store.db import data_paths
    from appliance.ui.accounts import ACCOUNTS_FILE, AccountError, AccountStore

    if not data_dir.is_dir():
        _fail(f"data directory {data_dir} does not exist; pass --data-dir (or set {ENV_DATA_DIR})", EXIT_SETUP)
    db_path, key_path = data_paths(data_dir)
    if not create and not (db_path.is_file() and key_path.is_file()):
        _fail(f"no station database at {db_path}: {data_dir} is not a station's data directory (pass --data-dir "
              f"or set {ENV_DATA_DIR}), or the station has not run yet", EXIT_SETUP)
    try:
        with Store.open_data_dir(data_dir):
            pass  # creates the key on a fresh station, refuses a wrong one
        if not create and not (data_dir / ACCOUNTS_FILE).is_file():
            return None
        return AccountStore.open_data_dir(data_dir, BlobCipher(load_key(data_paths(data_dir)[1])))
    except (StationStoreError, AccountError) as exc:
        _fail(str(exc), EXIT_SETUP)


def _audit(data_dir: Path, action: str, details: dict[str, Any]) -> None:
    from appliance.store import Store

    with Store.open_data_dir(data_dir) as store:
        store.append_audit(_admin(), action, details)


def _read_pin(pin_stdin: bool) -> str:
    if pin_stdin:
        return sys.stdin.readline().strip()
    from sync.credentials import PIN_RULE

    click.echo(PIN_RULE, err=True)  # said before the PIN is chosen, not only when one is refused
    return click.prompt("PIN", hide_input=True, confirmation_prompt=True)


def _issuer(ctx: click.Context) -> str:
    """The authenticator entry's issuer: the county and station of this desk (from the station config)."""
    from appliance.ui.accounts import totp_issuer

    station = station_config(ctx).station
    return totp_issuer(station.county, station.station)


def _print_secret(secret: Any, as_json: bool) -> None:
    from appliance.ui.enrolment import qr_svg, qr_text

    if as_json:
        click.echo(json.dumps({"officer_id": secret.officer_id, "totp_uri": secret.uri, "totp_secret": secret.secret,
                               "qr_svg": qr_svg(secret.uri)}))
        return
    click.echo(f"TOTP for {secret.officer_id} (shown once): scan this code with the officer's authenticator app now.")
    click.echo(qr_text(secret.uri), nl=False)
    click.echo(f"  URI:    {secret.uri}")
    click.echo(f"  secret: {secret.secret}")


@users_group.command("add")
@click.argument("officer_id")
@click.option("--name", default=None, help="the officer's full name (default: the officer id)")
@click.option("--role", type=click.Choice(["officer", "station-admin"]), default="officer", show_default=True,
              help="a station admin also enrols officers on the desk's Officers screen")
@click.option("--pin-stdin", is_flag=True, help="read the PIN from the first line of stdin (scripts)")
@click.option("--json", "as_json", is_flag=True, help="print one JSON object (URI, secret, QR code as SVG)")
@data_dir_option
@click.pass_context
def users_add(ctx: click.Context, officer_id: str, name: str | None, role: str, pin_stdin: bool, as_json: bool,
              data_dir: Path) -> None:
    """Create an account and print its authenticator QR code (and URI) once."""
    from appliance.ui.accounts import AccountError

    issuer = _issuer(ctx)
    with _accounts(data_dir) as accounts:
        try:
            secret = accounts.add(officer_id, name or officer_id, _read_pin(pin_stdin), role=role, issuer=issuer)
        except AccountError as exc:
            _fail(str(exc), EXIT_INPUT)
    _audit(data_dir, "account_create", {"officer_id": officer_id, "name": name or officer_id, "role": role})
    _print_secret(secret, as_json)


@users_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="print {users: [{officer_id, name, locked, ...}]}")
@data_dir_option
def users_list(as_json: bool, data_dir: Path) -> None:
    """List accounts with their lock state."""
    from appliance.store.clock import utc_now

    accounts = _accounts(data_dir, create=False)
    if accounts is None:
        officers = []
    else:
        with accounts:
            officers = accounts.officers()
    now = utc_now()
    if as_json:
        click.echo(json.dumps({"users": [
            {"officer_id": o.officer_id, "name": o.name, "role": o.role, "locked": o.locked(now),
             "locked_until": o.locked_until.isoformat() if o.locked(now) and o.locked_until else None,
             "failed_count": o.failed_count, "created_at": o.created_at.isoformat(),
             "last_logon_at": o.last_logon_at.isoformat() if o.last_logon_at else None} for o in officers]}))
        return
    for o in officers:
        locked = o.locked(now)
        state = f"LOCKED until {o.locked_until.astimezone():%H:%M}" if locked and o.locked_until else "active"
        last = f"{o.last_logon_at.astimezone():%Y-%m-%d %H:%M}" if o.last_logon_at else "never"
        click.echo(f"{o.officer_id:<20} {o.name:<30} {state:<20} last sign-in {last}")
    if not officers:
        click.echo("no accounts yet: booking-station users add OFFICER_ID")


@users_group.command("unlock")
@click.argument("officer_id")
@click.option("--json", "as_json", is_flag=True, help="print {officer_id, unlocked}")
@data_dir_option
def users_unlock(officer_id: str, as_json: bool, data_dir: Path) -> None:
    """Unlock an account locked after failed sign-ins."""
    from appliance.ui.accounts import AccountError

    with _accounts(data_dir) as accounts:
        try:
            accounts.unlock(officer_id)
        except AccountError as exc:
            _fail(str(exc), EXIT_INPUT)
    _audit(data_dir, "account_unlock", {"officer_id": officer_id})
    click.echo(json.dumps({"officer_id": officer_id, "unlocked": True}) if as_json else f"{officer_id}: unlocked")


@users_group.command("reset-totp")
@click.argument("officer_id")
@click.option("--json", "as_json", is_flag=True)
@data_dir_option
@click.pass_context
def users_reset_totp(ctx: click.Context, officer_id: str, as_json: bool, data_dir: Path) -> None:
    """Give an account a new TOTP secret (lost or replaced phone) and print it once."""
    from appliance.ui.accounts import AccountError

    issuer = _issuer(ctx)
    with _accounts(data_dir) as accounts:
        try:
            secret = accounts.reset_totp(officer_id, issuer=issuer)
        except AccountError as exc:
            _fail(str(exc), EXIT_INPUT)
    _audit(data_dir, "totp_reset", {"officer_id": officer_id})
    _print_secret(secret, as_json)


def register(group: click.Group) -> None:
    """Add `serve` and `users` to the `booking-station` group."""
    group.add_command(serve_command)
    group.add_command(users_group)


main = standalone_group(register, "The officer UI commands on their own (`python -m appliance.ui ...`).")

if __name__ == "__main__":
    main(prog_name=os.path.basename(sys.argv[0]) if sys.argv else "booking-station")
