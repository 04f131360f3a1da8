"""County-side commands for `booking-gallery`: the CA, enrolment tokens and the enrolment server.

Registered by ``sync/county/cli.py``::

    from sync.county.enroll.cli import ca, enroll_server, tokens
    main.add_command(ca); main.add_command(tokens); main.add_command(enroll_server)

Every option of ``enroll-server`` can also come from the environment (``BOOKING_ENROLL_*``), which is how
``systemd/booking-gallery-enroll.service`` configures it through an ``EnvironmentFile``. With
``--db`` (``BOOKING_ENROLL_GALLERY_DB``; old name ``--gallery-db``) the server registers station keys into the gallery's
own device table (``sync.county.gallery.devices.StoreDeviceRegistry``) instead of ``devices.json``. Errors are
one line on stderr and exit status 2, never a traceback.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from sync.cli_conventions import echo_result, json_option, renamed_option
from sync.county.config import current_config
from sync.county.enroll.ca import (
    CA_CERT,
    CA_DAYS,
    SERVER_CERT_DAYS,
    STATION_CERT_DAYS,
    CAError,
    CountyCA,
    certificate_pem,
    generate_tls_key,
    private_key_pem,
)
from sync.county.enroll.registry import JsonDeviceRegistry
from sync.county.enroll.server import ServerSetupError, make_server, serve
from sync.county.enroll.service import EnrollmentService, MqttEndpoint
from sync.county.enroll.tokens import DB_NAME, DEFAULT_TTL, TokenStore
from sync.protocol.files import write_private_file, write_public_file
from sync.protocol.sdnotify import Watchdog
from sync.protocol.topics import TopicError, check_slug

DEFAULT_CA_DIR = Path("/var/lib/booking-enroll")
EXIT_SETUP = 2


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(EXIT_SETUP)


def _ca_dir_or_default(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path:
    """Flag (or its old name ``--dir``) > ``BOOKING_CA_DIR`` > ``[ca] dir`` of county.toml > the default."""
    if value is not None or ctx.resilient_parsing:
        return value  # type: ignore[return-value]
    configured = current_config().ca_dir
    return Path(configured) if configured is not None else DEFAULT_CA_DIR


def _ca_dir_option(func):  # type: ignore[no-untyped-def]
    option = renamed_option("--ca-dir", "--dir", "ca_dir", type=click.Path(path_type=Path), envvar="BOOKING_CA_DIR",
                            show_envvar=True, callback=_ca_dir_or_default,
                            help=f"the county CA directory (default: [ca] dir of county.toml, else {DEFAULT_CA_DIR})")
    return option(func)


def _load_ca(ca_dir: Path) -> CountyCA:
    try:
        return CountyCA.load(ca_dir)
    except CAError as exc:
        _fail(str(exc))
    raise AssertionError("unreachable")


# --- ca ---------------------------------------------------------------------------------------------


@click.group("ca")
def ca() -> None:
    """The county certificate authority that signs station and server certificates."""


@ca.command("init")
@_ca_dir_option
@click.option("--county", required=True, help="county id (a slug, e.g. king-county)")
@click.option("--days", type=click.IntRange(1, 36500), default=CA_DAYS, show_default=True,
              help="validity of the CA certificate")
@json_option("print {county, ca_dir, ca_certificate, not_after}")
def ca_init(ca_dir: Path, county: str, days: int, as_json: bool) -> None:
    """Create the county CA (EC P-256) and the county's Ed25519 command-signing key in --ca-dir.

    Run it as the user the enrolment server runs as (booking-enroll), so the service can read the key:
    `sudo -u booking-enroll booking-gallery ca init --ca-dir /var/lib/booking-enroll --county ID`.
    """
    try:
        authority = CountyCA.init(ca_dir, county, days=days)
    except CAError as exc:
        _fail(str(exc))
        return
    except OSError as exc:
        _fail(f"cannot create the CA in {ca_dir}: {exc.strerror or exc}")
        return
    cert = authority.certificate
    echo_result(as_json, {"county": county, "ca_dir": str(ca_dir), "ca_certificate": str(ca_dir / CA_CERT),
                          "not_after": cert.not_valid_after_utc.isoformat()}, [
        f"created the CA of county {county} in {ca_dir} (directory 0700, private keys 0600):",
        f"  ca.key, ca.crt             EC P-256 CA, valid until {cert.not_valid_after_utc:%Y-%m-%d}",
        "  command-signing.key/.pub   Ed25519 key that signs commands to stations",
        "next: a TLS certificate for the enrolment server and the broker "
        "(booking-gallery ca server-cert --name HOST ...),",
        "      a token per station (booking-gallery tokens issue --station ID), "
        f"and {ca_dir / CA_CERT} on every device."])


def _issue_to_files(out_cert: Path, out_key: Path, issue: Callable[[Any], Any]) -> Any:
    """Make a key, have `issue` sign a certificate for its public key, write both; never overwrite a file.

    Both files are checked before anything is made, so a refusal leaves no half-written pair behind.
    """
    for path in (out_cert, out_key):
        if path.exists():
            _fail(f"{path} exists; refusing to overwrite it")
    key = generate_tls_key()
    try:
        cert = issue(key.public_key())
        write_private_file(out_key, private_key_pem(key))
        write_public_file(out_cert, certificate_pem(cert).encode())
    except (CAError, OSError) as exc:
        _fail(str(exc))
    return cert


def _cert_document(cert: Any, out_cert: Path, out_key: Path) -> dict[str, Any]:
    """The ``--json`` fields every issued certificate shares."""
    return {"certificate": str(out_cert), "key": str(out_key), "serial": format(cert.serial_number, "x"),
            "not_after": cert.not_valid_after_utc.isoformat()}


@ca.command("server-cert")
@_ca_dir_option
@click.option("--name", "names", multiple=True, required=True,
              help="DNS name or IP address the server is reached at (repeatable; the first is the CN)")
@click.option("--out-cert", type=click.Path(path_type=Path), required=True, help="certificate file to write (PEM)")
@click.option("--out-key", type=click.Path(path_type=Path), required=True, help="private key file to write (0600)")
@click.option("--days", type=click.IntRange(1, 3650), default=SERVER_CERT_DAYS, show_default=True)
@json_option("print {names, certificate, key, serial, not_after}")
def ca_server_cert(ca_dir: Path, names: tuple[str, ...], out_cert: Path, out_key: Path, days: int,
                   as_json: bool) -> None:
    """Issue a TLS server certificate (enrolment server, MQTT broker) signed by the county CA."""
    authority = _load_ca(ca_dir)
    cert = _issue_to_files(out_cert, out_key,
                           lambda key: authority.issue_server_certificate(key, list(names), days=days))
    echo_result(as_json, {"names": list(names), **_cert_document(cert, out_cert, out_key)},
                [f"wrote {out_cert} (server certificate for {', '.join(names)}, valid until "
                 f"{cert.not_valid_after_utc:%Y-%m-%d}) and {out_key} (0600)"])


@ca.command("client-cert")
@_ca_dir_option
@click.option("--name", required=True, help="the certificate CN, e.g. gallery.king-county for the gallery worker")
@click.option("--out-cert", type=click.Path(path_type=Path), required=True, help="certificate file to write (PEM)")
@click.option("--out-key", type=click.Path(path_type=Path), required=True, help="private key file to write (0600)")
@click.option("--days", type=click.IntRange(1, 3650), default=SERVER_CERT_DAYS, show_default=True)
@json_option("print {name, certificate, key, serial, not_after}")
def ca_client_cert(ca_dir: Path, name: str, out_cert: Path, out_key: Path, days: int, as_json: bool) -> None:
    """Issue a TLS client certificate for a county service (the gallery receiver's broker login)."""
    authority = _load_ca(ca_dir)
    cert = _issue_to_files(out_cert, out_key, lambda key: authority.issue_client_certificate(key, name, days=days))
    echo_result(as_json, {"name": name, **_cert_document(cert, out_cert, out_key)},
                [f"wrote {out_cert} (client certificate CN={name}, valid until "
                 f"{cert.not_valid_after_utc:%Y-%m-%d}) and {out_key} (0600)"])


# --- tokens -----------------------------------------------------------------------------------------


@click.group("tokens")
def tokens() -> None:
    """One-time enrolment tokens for new stations."""


@tokens.command("issue")
@_ca_dir_option
@click.option("--station", required=True, help="the station id the token enrols (a slug, e.g. desk-1)")
@click.option("--expires-in", "hours", type=click.FloatRange(min=0, min_open=True),
              default=DEFAULT_TTL.total_seconds() / 3600, show_default=True, help="hours until the token expires")
@click.option("--json", "as_json", is_flag=True, help="print {token, token_id, station, expires_at} as JSON")
def tokens_issue(ca_dir: Path, station: str, hours: float, as_json: bool) -> None:
    """Issue a one-time enrolment token for STATION. It is shown once; only its hash is stored."""
    try:
        check_slug(station, "station")
    except TopicError as exc:
        _fail(str(exc))
    authority = _load_ca(ca_dir)
    registered = JsonDeviceRegistry.in_ca_dir(ca_dir)
    try:
        issued = TokenStore.in_ca_dir(ca_dir).issue(authority.county, station, ttl=dt.timedelta(hours=hours))
        already = registered.get(station)
    except OSError as exc:
        _fail(f"cannot write the token store in {ca_dir}: {exc}")
        return
    except Exception as exc:  # sqlite3 errors and a broken registry file: one clear line
        _fail(f"cannot issue a token in {ca_dir}: {exc}")
        return
    expires = issued.expires_at.isoformat(timespec="seconds")
    if as_json:
        click.echo(json.dumps({"token": issued.token, "token_id": issued.token_id, "county": issued.county,
                               "station": issued.station, "expires_at": expires}))
        return
    click.echo(issued.token)
    click.echo(f"one-time enrolment token {issued.token_id} for station {station} of county {issued.county}, "
               f"expires {expires}", err=True)
    if already:
        click.echo(f"note: station {station} is already registered (since {already.get('registered_at')}); only "
                   "that device's own keys can enrol with it again", err=True)


@tokens.command("list")
@_ca_dir_option
@json_option("print {tokens: [{token_id, station, county, issued_at, expires_at, state, certificate_serial}]}")
def tokens_list(ca_dir: Path, as_json: bool) -> None:
    """List issued tokens (id, station, expiry, use); never their clear text, which is not stored."""
    _load_ca(ca_dir)
    now = dt.datetime.now(dt.timezone.utc)
    # No token issued yet: listing creates nothing.
    infos = TokenStore.in_ca_dir(ca_dir).list() if (ca_dir / DB_NAME).is_file() else []
    documents, lines = [], []
    for info in infos:
        state = ("used " + info.used_at.isoformat(timespec="seconds") if info.used_at
                 else "expired" if info.expires_at <= now else "open")
        documents.append({"token_id": info.token_id, "station": info.station, "county": info.county,
                          "issued_at": info.issued_at.isoformat(), "expires_at": info.expires_at.isoformat(),
                          "state": state.split()[0], "certificate_serial": info.certificate_serial})
        lines.append(f"{info.token_id}  {info.station:<20} expires {info.expires_at:%Y-%m-%d %H:%M}Z  {state}")
    echo_result(as_json, {"tokens": documents}, lines)


# --- enroll-server ----------------------------------------------------------------------------------


@click.command("enroll-server")
@_ca_dir_option
@click.option("--host", default="0.0.0.0", envvar="BOOKING_ENROLL_HOST", show_default=True, show_envvar=True,
              help="address to listen on")
@click.option("--port", type=click.IntRange(0, 65535), default=8443, envvar="BOOKING_ENROLL_PORT",
              show_default=True, show_envvar=True)
@click.option("--tls-cert", type=click.Path(path_type=Path), required=True, envvar="BOOKING_ENROLL_TLS_CERT",
              show_envvar=True, help="the server's certificate chain (PEM)")
@click.option("--tls-key", type=click.Path(path_type=Path), required=True, envvar="BOOKING_ENROLL_TLS_KEY",
              show_envvar=True, help="the server's private key (PEM)")
@click.option("--mqtt-host", default=None, envvar="BOOKING_ENROLL_MQTT_HOST", show_envvar=True,
              help="broker host handed to enrolled stations (their station.toml)")
@click.option("--mqtt-port", type=click.IntRange(1, 65535), default=8883, envvar="BOOKING_ENROLL_MQTT_PORT",
              show_default=True, show_envvar=True)
@click.option("--cert-days", type=click.IntRange(1, 3650), default=STATION_CERT_DAYS,
              envvar="BOOKING_ENROLL_CERT_DAYS", show_default=True, show_envvar=True,
              help="validity of issued station certificates")
@renamed_option("--db", "--gallery-db", "gallery_db", envvar="BOOKING_ENROLL_GALLERY_DB", show_envvar=True,
                metavar="URL",
                help="register each enrolled station's signing key straight into the gallery's device table "
                   "(a SQLite path or postgresql://...), instead of devices.json in the CA directory")
def enroll_server(ca_dir: Path, host: str, port: int, tls_cert: Path, tls_key: Path, mqtt_host: str | None,
                  mqtt_port: int, cert_days: int, gallery_db: str | None) -> None:
    """Serve station enrolment over HTTPS (POST /enroll) until stopped.

    With --db a provisioned station can deliver at once: its key is in the table the gallery
    verifies records against, and a station the gallery has revoked cannot enrol again under its id.
    """
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    store = None
    registry = None
    if gallery_db:
        # Imported here: a county that keeps the default JSON registry runs the enrolment server without
        # the gallery's dependencies (CBOR, database drivers) being loaded into the process holding the CA key.
        from sync.county.gallery.devices import StoreDeviceRegistry
        from sync.county.gallery.store import GalleryStoreError, open_store

        try:
            store = open_store(gallery_db)
        except (GalleryStoreError, OSError) as exc:
            _fail(f"cannot open the gallery database {gallery_db}: {exc}")
            return
        registry = StoreDeviceRegistry(store)
    try:
        try:
            service = EnrollmentService.from_ca_dir(
                ca_dir, registry=registry, cert_days=cert_days,
                mqtt=MqttEndpoint(mqtt_host, mqtt_port) if mqtt_host else None)
            server = make_server(service, host, port, tls_cert, tls_key, watchdog=Watchdog.from_environment())
        except (CAError, ServerSetupError) as exc:
            _fail(str(exc))
            return
        if gallery_db:
            logging.getLogger("booking.enroll").info("registering station keys into the gallery database")
        serve(server)
    finally:
        if store is not None:
            store.close()
