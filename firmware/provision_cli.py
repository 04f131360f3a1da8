"""`booking-station provision`: the click command around :func:`firmware.provision.provision`.

Registered by ``appliance/cli.py`` with ``main.add_command(provision)``. The token is secret until used,
so besides ``--token`` it can come from ``--token-file``, ``$BOOKING_ENROLL_TOKEN`` or a hidden prompt,
keeping it out of shell history and ``ps``.

Exit status: 0 enrolled or already provisioned; 1 the server refused (token used, wrong or expired,
CSR refused, station conflict); 2 this device or the network is the problem (unreachable server,
untrusted TLS, unwritable directories).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from appliance.cli_support import renamed_option
from appliance.config import ENV_DATA_DIR, resolve_data_dir
from firmware import provision as device
from firmware.provision import DEFAULT_CONFIG_DIR, SERVICE_USER, ProvisionError
from sync.protocol.record import AGENCY_ORI, RecordRuleError, check_field

EXIT_REFUSED = 1
EXIT_SETUP = 2


def _read_token(token: str | None, token_file: Path | None, needed: bool) -> str:
    """The token from the option, the file or a hidden prompt; "" when the station needs none (a re-run)."""
    if token and token_file:
        raise click.UsageError("give the token with --token or --token-file, not both")
    if token_file is not None:
        try:
            return token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise click.UsageError(f"cannot read the token file {token_file}: {exc.strerror or exc}") from exc
    if token or not needed:
        return token or ""
    if not sys.stdin.isatty():
        # A token piped in (`echo "$TOKEN" | booking-station provision ...`) keeps it out of argv and history.
        piped = sys.stdin.readline().strip()
        if not piped:
            raise click.UsageError("no enrolment token: give --token, --token-file, $BOOKING_ENROLL_TOKEN "
                                   "or pipe it on standard input")
        return piped
    return str(click.prompt("enrolment token", hide_input=True))


def _check_agency(ctx: click.Context, param: click.Parameter, value: str | None) -> str | None:
    if value is None:
        return None
    try:
        return check_field(AGENCY_ORI, value.strip().upper(), "--agency")
    except RecordRuleError as exc:
        raise click.BadParameter(f"{exc} (e.g. WA0170000)") from None


@click.command("provision")
@click.option("--county", required=True, help="county id (a slug, e.g. king-county)")
@click.option("--station", required=True, help="this station's id (a slug, e.g. desk-1); becomes its certificate CN")
@click.option("--enroll-url", required=True, help="the county enrolment server, e.g. https://enroll.example:8443/enroll")
@click.option("--token", default=None, envvar="BOOKING_ENROLL_TOKEN", show_envvar=True,
              help="one-time enrolment token from county IT (prompted for when not given)")
@click.option("--token-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="read the token from this file instead")
@click.option("--ca-bundle", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="the county CA certificate (PEM) that the enrolment server's certificate must chain to")
@click.option("--config-dir", type=click.Path(path_type=Path, file_okay=False), default=DEFAULT_CONFIG_DIR,
              show_default=True, help="where station.toml is written")
@click.option("--data-dir", type=click.Path(path_type=Path, file_okay=False), default=None,
              help=f"station data directory; keys go to DATA_DIR/keys, and station.toml records it as [station] "
                   f"data_dir (default: ${ENV_DATA_DIR}, else the data_dir of an existing station.toml, "
                   f"else /var/lib/booking-station)")
@click.option("--mqtt-host", default=None, help="broker host for station.toml (default: what the server says)")
@click.option("--mqtt-port", type=click.IntRange(1, 65535), default=None, help="broker port (default 8883)")
@renamed_option("--device-profile", "--profile", "device_profile", metavar="NAME",
                help="device profile to record in station.toml (see firmware/profiles)")
@click.option("--agency", "agency_ori", default=None, callback=_check_agency,
              help="the agency's 9-character NCIC ORI, recorded as [station] agency_ori so officers need not type it")
@click.option("--force", is_flag=True, help="enrol again even though a valid certificate is in place")
@click.option("--new-keys", is_flag=True, help="generate new keys instead of re-using this device's")
@click.option("--user", "service_user", default=SERVICE_USER, show_default=True,
              help="when run as root: the user the station services run as, who gets the key directory")
@click.option("--json", "as_json", is_flag=True, help="print the result as one JSON object")
def provision(county: str, station: str, enroll_url: str, token: str | None, token_file: Path | None,
              ca_bundle: Path, config_dir: Path, data_dir: Path | None, mqtt_host: str | None, mqtt_port: int | None,
              device_profile: str | None, agency_ori: str | None, force: bool, new_keys: bool, service_user: str,
              as_json: bool) -> None:
    """Enrol this device with the county: keys made here, certificate from the county CA, station.toml written.

    Safe to re-run: a station that is already provisioned with a valid certificate is left as it is.
    """
    configured = device.read_station_table(config_dir / "station.toml").get("data_dir") if data_dir is None else None
    data_dir = resolve_data_dir(data_dir, configured if isinstance(configured, str) else None).absolute()
    if device_profile is not None:
        from firmware.profiles import DeviceProfileError, load_profile

        try:
            load_profile(device_profile)  # a typo is caught now, not when the station first starts
        except DeviceProfileError as exc:
            raise click.UsageError(str(exc)) from exc
    identity = device.current_identity(device.StationPaths(config_dir, data_dir))
    needed = force or identity is None or (identity.county, identity.station) != (county, station)
    secret = _read_token(token, token_file, needed)

    def echo(line: str) -> None:
        click.echo(line, err=as_json)

    try:
        result = device.provision(county, station, enroll_url, secret, ca_bundle, config_dir, data_dir,
                                  force=force, new_keys=new_keys, mqtt_host=mqtt_host, mqtt_port=mqtt_port,
                                  device_profile=device_profile, agency_ori=agency_ori,
                                  service_user=service_user, echo=echo)
    except ProvisionError as exc:
        if as_json:
            click.echo(json.dumps({"status": "error", "error": exc.code, "message": str(exc)}))
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_REFUSED if exc.refused else EXIT_SETUP)
    if as_json:
        click.echo(json.dumps({"status": result.status, "county": result.county, "station": result.station,
                               "serial": result.serial, "not_after": result.not_after.isoformat(),
                               "config": str(result.paths.config_file), "keys": str(result.paths.keys_dir)}))

