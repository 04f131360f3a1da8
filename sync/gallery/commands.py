"""Click commands of the county side, for ``booking-gallery`` (``sync/cli.py``) to register::

    from sync.gallery.commands import register_commands
    register_commands(main)

Commands: ``records``, ``devices register|list|revoke``, ``receive``, ``export`` and ``broker-config``.
Each database command takes ``--db`` (a SQLite path or a ``postgresql://`` URL, also read from
``BOOKING_GALLERY_DB``). Failures print one plain sentence and exit 1, never a traceback.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from sync.broker_config import BrokerConfig, write_broker_files
from sync.gallery import devices as device_registry
from sync.gallery.export import (
    ExportConfigError,
    ExportError,
    ExportingReceiver,
    ExportSettings,
    export_stored,
    write_atomic,
)
from sync.gallery.nist import NistCodecMissing, NistExportError
from sync.gallery.receiver import ConfigError, GalleryReceiver, ReceiverConfig
from sync.gallery.store import DEFAULT_DB, GalleryStore, StoreError, open_store
from sync.topics import TopicError

F = TypeVar("F", bound=Callable[..., Any])


def db_option(default: str | None = DEFAULT_DB) -> Callable[[F], F]:
    return click.option(
        "--db",
        "db_url",
        default=default,
        show_default=default is not None,
        envvar="BOOKING_GALLERY_DB",
        metavar="URL",
        help="Gallery database: a SQLite path or postgresql://user@host/db[?schema=NAME].",
    )


@contextmanager
def _store(db_url: str) -> Iterator[GalleryStore]:
    try:
        store = open_store(db_url)
    except (StoreError, OSError) as exc:
        raise click.ClickException(f"cannot open the gallery database {db_url}: {exc}") from None
    try:
        yield store
    except (StoreError, TopicError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


@click.command("records")
@db_option()
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--station", default=None, help="Only this station's records.")
def records_cmd(db_url: str, as_json: bool, limit: int, station: str | None) -> None:
    """List stored records, newest first."""
    with _store(db_url) as store:
        rows = store.list_records(limit=limit, station=station)
        total = store.count_records()
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "record_id": r.record_id,
                        "station": r.station,
                        "county": r.county,
                        "ori": r.ori,
                        "booking_number": r.booking_number,
                        "operator": r.operator,
                        "captured_at": _iso(r.captured_at),
                        "created_at": _iso(r.created_at),
                        "received_at": _iso(r.received_at),
                        "captures": r.capture_count,
                        "content_sha256": r.content_sha256.hex(),
                    }
                    for r in rows
                ],
                indent=2,
            )
        )
        return
    if not rows:
        click.echo("No records stored.")
        return
    click.echo(f"{'received (UTC)':20}  {'station':16}  {'booking':16}  caps  record id")
    for r in rows:
        click.echo(
            f"{r.received_at:%Y-%m-%d %H:%M:%S}   {r.station:16}  {r.booking_number:16}  {r.capture_count:4}  "
            f"{r.record_id}"
        )
    click.echo(f"{len(rows)} shown of {total} stored.")


@click.group("devices")
def devices_group() -> None:
    """Register, list and revoke the stations allowed to deliver records."""


@devices_group.command("register")
@click.option("--station", required=True, help="Station slug; also the CN of its TLS certificate.")
@click.option("--county", required=True, help="County slug.")
@click.option(
    "--public-key",
    "public_key",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The station's Ed25519 signing public key (PEM, as provisioning writes it).",
)
@db_option()
def devices_register(station: str, county: str, public_key: Path, db_url: str) -> None:
    """Register a station's signing key so the gallery accepts its records."""
    with _store(db_url) as store:
        try:
            device = device_registry.register(store, station, county, public_key)
        except device_registry.KeyFileError as exc:
            raise click.ClickException(f"{public_key}: {exc}") from None
    click.echo(f"Registered {device.station} ({device.county}), key {device_registry.fingerprint(device.public_key)}.")


@devices_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array, for scripts.")
@db_option()
def devices_list(as_json: bool, db_url: str) -> None:
    """List registered stations."""
    with _store(db_url) as store:
        rows = device_registry.list_devices(store)
    if as_json:
        click.echo(
            json.dumps(
                [
                    {
                        "station": d.station,
                        "county": d.county,
                        "status": d.status,
                        "registered_at": _iso(d.registered_at),
                        "revoked_at": _iso(d.revoked_at),
                        "public_key": d.public_key.hex(),
                        "fingerprint": device_registry.fingerprint(d.public_key),
                    }
                    for d in rows
                ],
                indent=2,
            )
        )
        return
    if not rows:
        click.echo("No stations registered.")
        return
    for d in rows:
        click.echo(
            f"{d.station:20} {d.county:16} {d.status:8} {d.registered_at:%Y-%m-%d} "
            f"{device_registry.fingerprint(d.public_key)}"
        )


@devices_group.command("revoke")
@click.option("--station", required=True)
@db_option()
def devices_revoke(station: str, db_url: str) -> None:
    """Refuse a station's records from now on (revoke its certificate on the broker too)."""
    with _store(db_url) as store:
        device = device_registry.revoke(store, station)
    click.echo(f"Revoked {device.station}; its stored records are kept. Also add its certificate to the CRL.")


@click.command("receive")
@click.option(
    "--config",
    "config_path",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Receiver TOML: [broker] host, port, protocol, ca_file, cert_file, key_file; [gallery] county ...",
)
@db_option(default=None)
@click.option(
    "--export-dir",
    "export_dir",
    default=None,
    envvar="BOOKING_GALLERY_EXPORT_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Drop each committed record here as {record_id}.eft (ANSI/NIST-ITL); overrides [export] folder.",
)
def receive_cmd(config_path: Path, db_url: str | None, export_dir: Path | None) -> None:
    """Run a gallery worker until SIGTERM or Ctrl-C: verify, store and ack records."""
    try:
        config = ReceiverConfig.from_toml(config_path)
        export = ExportSettings.from_toml(config_path)
    except (ConfigError, TopicError, ExportConfigError) as exc:
        raise click.ClickException(str(exc)) from None
    export_folder = export_dir or export.folder
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with _store(db_url or config.db) as store:
        if export_folder is None:
            receiver = GalleryReceiver(config, store)
        else:
            try:
                receiver = ExportingReceiver(config, store, export_folder=export_folder, nist=export.nist)
            except (OSError, NistCodecMissing) as exc:
                raise click.ClickException(f"cannot export to {export_folder}: {exc}") from None
            logging.getLogger(__name__).info("exporting each committed record to %s", export_folder)
        try:
            receiver.run_forever(stop)
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"receiver stopped: {exc}") from None


@click.command("broker-config")
@click.option("--county", required=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--cafile", required=True, help="County CA certificate path, as the broker will see it.")
@click.option("--certfile", required=True, help="Broker certificate path.")
@click.option("--keyfile", required=True, help="Broker key path.")
@click.option("--crlfile", default=None, help="CRL of revoked device certificates.")
@click.option("--port", default=8883, show_default=True, type=click.IntRange(1, 65535))
@click.option("--gallery-workers", default=1, show_default=True, type=click.IntRange(1, 64))
def broker_config_cmd(
    county: str,
    out_dir: Path,
    cafile: str,
    certfile: str,
    keyfile: str,
    crlfile: str | None,
    port: int,
    gallery_workers: int,
) -> None:
    """Write mosquitto.conf and acl for a county broker (mutual TLS, per-station ACL)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        cfg = BrokerConfig(
            county=county,
            cafile=cafile,
            certfile=certfile,
            keyfile=keyfile,
            crlfile=crlfile,
            acl_file=str((out_dir / "acl").resolve()),
            port=port,
            gallery_workers=gallery_workers,
        )
    except (TopicError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    conf, acl = write_broker_files(cfg, out_dir / "mosquitto.conf")
    click.echo(f"Wrote {conf} and {acl}. Gallery certificate CN(s): {', '.join(cfg.gallery_identities)}.")


@click.command("export")
@click.argument("record_id")
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, writable=True, path_type=Path),
    help="The file to write, e.g. RECORD_ID.eft.",
)
@db_option()
@click.option(
    "--config",
    "config_path",
    default=None,
    envvar="BOOKING_GALLERY_CONFIG",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="TOML with an [export] table (TOT, DAI, time zone, Type-2 layout); the receiver's file will do.",
)
def export_cmd(record_id: str, output: Path, db_url: str, config_path: Path | None) -> None:
    """Write a stored record as an ANSI/NIST-ITL transaction: Type-1, Type-2, one Type-10 per photo.

    The file is checked before it is written; a record that would not make a valid transaction is
    refused with the reasons, and nothing is written.
    """
    try:
        settings = ExportSettings.from_toml(config_path) if config_path else ExportSettings()
    except ExportConfigError as exc:
        raise click.ClickException(str(exc)) from None
    with _store(db_url) as store:
        try:
            data = export_stored(store, record_id, settings.nist)
        except (ExportError, NistExportError, NistCodecMissing) as exc:
            raise click.ClickException(str(exc)) from None
    try:
        write_atomic(output, data)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc}") from None
    click.echo(f"Wrote {output} ({len(data)} bytes, TOT {settings.nist.tot}, VER {settings.nist.version}).")


COMMANDS: tuple[click.Command, ...] = (records_cmd, devices_group, receive_cmd, export_cmd, broker_config_cmd)


def register_commands(group: click.Group) -> None:
    """Add the county-side commands to ``group`` (the ``booking-gallery`` CLI)."""
    for command in COMMANDS:
        group.add_command(command)
