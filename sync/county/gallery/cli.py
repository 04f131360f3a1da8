"""Click commands of the county side, for ``booking-gallery`` (``sync/county/cli.py``) to register::

    from sync.county.gallery.cli import register_commands
    register_commands(main)

Commands: ``records``, ``devices register|list|revoke|crl|rotate``, ``receive``, ``export`` and
``broker-config``. ``devices revoke`` also produces the broker-side revocation (ACL deny rules and the
county CRL); ``devices rotate`` signs a ``rotate`` command with the county command key.
Each database command takes ``--db`` (a SQLite path or a ``postgresql://`` URL, also read from
``BOOKING_GALLERY_DB``, else from ``[gallery] db`` of county.toml, see :mod:`sync.county.config`).
Failures print one plain sentence and exit 1, never a traceback; a database that is missing (commands
that only read never create one) or not a database exits 2.

It stays one module (about 640 lines): one short click function per command, each printing its text and
its ``--json`` object side by side, so the county side's command reference is in one place.
"""

from __future__ import annotations

import logging
import signal
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import click

from sync.cli_conventions import echo_json, echo_result, json_option, renamed_option
from sync.county.broker_config import BrokerConfig, write_broker_files
from sync.county.config import ConfigSetupError, current_config, from_config
from sync.county.gallery import devices as device_registry
from sync.county.gallery.export import (
    FILE_MODE,
    ExportConfigError,
    ExportError,
    ExportSettings,
    export_stored,
    prepare_folder,
)
from sync.county.gallery.exporters import UnknownFormatError, export_handlers
from sync.county.gallery.nist import NistCodecMissing, NistExportError
from sync.county.gallery.receiver import GalleryReceiver, ReceiverConfig, ReceiverConfigError
from sync.county.gallery.store import (
    DEFAULT_DB,
    GalleryDatabaseMissingError,
    GalleryStore,
    GalleryStoreError,
    NotAGalleryDatabaseError,
    open_store,
)
from sync.county.gallery.worker import JobWorker
from sync.protocol.files import write_file_atomic
from sync.protocol.topics import TopicError

F = TypeVar("F", bound=Callable[..., Any])


def db_option(default: str | None = DEFAULT_DB) -> Callable[[F], F]:
    """``--db`` (or ``BOOKING_GALLERY_DB``); when neither is given, ``[gallery] db`` of county.toml,
    else ``default``."""
    return click.option(
        "--db",
        "db_url",
        default=default,
        show_default=default is not None,
        envvar="BOOKING_GALLERY_DB",
        metavar="URL",
        callback=from_config("db") if default is not None else None,
        help="Gallery database: a SQLite path or postgresql://user@host/db[?schema=NAME]"
        + ("; default: [gallery] db of county.toml, else" if default is not None else "."),
    )


def toml_option(help_text: str, **kwargs: Any) -> Callable[[F], F]:
    """``--config FILE`` of a command that reads its own TOML (receiver, export, command publishing): a file
    that must exist, passed as ``config_path``; left out, the command falls back as its help says."""
    return click.option("--config", "config_path", default=None,
                        type=click.Path(exists=True, dir_okay=False, path_type=Path), help=help_text, **kwargs)


def ca_dir_option(**kwargs: Any) -> Callable[[F], F]:
    """``--ca-dir`` (or ``BOOKING_CA_DIR``), else ``[ca] dir`` of county.toml; one of them is needed."""

    def required_ca_dir(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
        value = from_config("ca_dir")(ctx, param, value)
        if value is None and not ctx.resilient_parsing:
            raise click.BadParameter("give --ca-dir DIR, BOOKING_CA_DIR or [ca] dir in county.toml")
        return value

    return click.option(
        "--ca-dir",
        default=None,
        type=click.Path(file_okay=False, path_type=Path),
        envvar="BOOKING_CA_DIR",
        callback=required_ca_dir,
        **kwargs,
    )


@contextmanager
def _store(db_url: str, *, create: bool = False) -> Iterator[GalleryStore]:
    """The store; ``create=True`` only for commands that write (a reading command never makes a database)."""
    try:
        store = open_store(db_url, create=create)
    except GalleryDatabaseMissingError as exc:
        raise ConfigSetupError(f"{exc} (give --db URL, BOOKING_GALLERY_DB or [gallery] db in county.toml)") from None
    except NotAGalleryDatabaseError as exc:
        raise ConfigSetupError(str(exc)) from None
    except (GalleryStoreError, OSError) as exc:
        raise click.ClickException(f"cannot open the gallery database {db_url}: {exc}") from None
    try:
        yield store
    except sqlite3.DatabaseError as exc:  # damaged pages past the header: one line, nothing changed
        raise ConfigSetupError(f"the gallery database {db_url} cannot be read: {exc}") from None
    except (GalleryStoreError, TopicError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        store.close()


def _iso(value: Any) -> str | None:
    return None if value is None else value.isoformat()


# For the command modules beside this one (status_cli): the same store opening and time format.
open_for_command = _store
iso = _iso


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


@click.command("records")
@db_option()
@json_option("Print {records: [...], shown, total}, for scripts.")
@click.option("--limit", default=50, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--station", default=None, help="Only this station's records.")
def records_cmd(db_url: str, as_json: bool, limit: int, station: str | None) -> None:
    """List stored records, newest first."""
    with _store(db_url) as store:
        rows = store.list_records(limit=limit, station=station)
        total = store.count_records()
    if as_json:
        echo_json({
            "records": [
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
            "shown": len(rows),
            "total": total,
        })
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
@json_option("Print {station, county, fingerprint}.")
def devices_register(station: str, county: str, public_key: Path, db_url: str, as_json: bool) -> None:
    """Register a station's signing key so the gallery accepts its records."""
    with _store(db_url, create=True) as store:
        try:
            device = device_registry.register(store, station, county, public_key)
        except device_registry.DeviceKeyFileError as exc:
            raise click.ClickException(f"{public_key}: {exc}") from None
    fingerprint = device_registry.fingerprint(device.public_key)
    echo_result(as_json, {"station": device.station, "county": device.county, "fingerprint": fingerprint},
                [f"Registered {device.station} ({device.county}), key {fingerprint}."])


@devices_group.command("list")
@json_option("Print {devices: [...]}, for scripts.")
@db_option()
def devices_list(as_json: bool, db_url: str) -> None:
    """List registered stations."""
    with _store(db_url) as store:
        rows = device_registry.list_devices(store)
    if as_json:
        echo_json({
            "devices": [
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
        })
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
@click.option(
    "--broker-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="The folder `broker-config --out` wrote (mosquitto.conf, acl, broker.json): its ACL is regenerated "
    "to deny every revoked station.",
)
@click.option(
    "--ca-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    envvar="BOOKING_CA_DIR",
    help="The county CA directory: write a CRL listing every certificate issued to a revoked station.",
)
@renamed_option(
    "--crlfile",
    "--crl-file",
    "crl_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Where the CRL goes (default: the broker's crlfile, else BROKER_DIR/crl.pem, else CA_DIR/crl.pem).",
)
@json_option("Print {station, revoked_at, acl, crl, crl_serials, conf, broker_done, restart_needed}.")
def devices_revoke(station: str, db_url: str, broker_dir: Path | None, ca_dir: Path | None,
                   crl_file: Path | None, as_json: bool) -> None:
    """Refuse a station's records from now on, and shut it out of the broker.

    The gallery refuses its records at once. With --broker-dir the broker's ACL denies it everything
    (after a reload, even on a connection it already has); with --ca-dir its certificates go into the
    county CRL (refused at every new TLS handshake). Then reload Mosquitto, as printed.
    """
    with _store(db_url, create=True) as store:
        device = device_registry.revoke(store, station)
        try:
            done = device_registry.apply_broker_revocation(store, broker_dir=broker_dir, ca_dir=ca_dir,
                                                           crl_file=crl_file)
        except device_registry.RevocationError as exc:
            raise click.ClickException(
                f"{device.station} is revoked in the gallery (its records are refused), but the broker side failed: "
                f"{exc}"
            ) from None
    if as_json:
        echo_json({"station": device.station, "revoked_at": _iso(device.revoked_at),
                   "acl": _str_or_none(done.acl), "crl": _str_or_none(done.crl), "crl_serials": list(done.crl_serials),
                   "conf": _str_or_none(done.conf), "broker_done": done.acl is not None or done.crl is not None,
                   "restart_needed": bool(done.restart_needed)})
        if done.acl is None and done.crl is None:
            click.echo(f"warning: the broker still lets {device.station} connect; give --broker-dir and --ca-dir",
                       err=True)
        return
    when = f"{device.revoked_at:%Y-%m-%d %H:%M:%SZ}" if device.revoked_at else "now"
    click.echo(f"Revoked {device.station} in the gallery ({when}): its records are refused; stored ones are kept.")
    if done.acl is not None:
        click.echo(f"Regenerated {done.acl}: denies {', '.join(done.revoked)} everything (topic deny #).")
    if done.crl is not None:
        serials = ", ".join(done.crl_serials) or "none found in the enrolment log"
        until = f"{done.crl_next_update:%Y-%m-%d}" if done.crl_next_update else "?"
        click.echo(f"Wrote CRL {done.crl} (valid until {until}); revoked certificate serials: {serials}.")
    if done.conf is not None:
        click.echo(f"Updated {done.conf}.")
    if done.acl is None and done.crl is None:
        click.echo(
            f"WARNING: the broker still lets {device.station} connect and publish. Finish the revocation: re-run with "
            "--broker-dir DIR (the folder broker-config wrote) and --ca-dir DIR (the county CA), then reload mosquitto."
        )
        return
    if done.restart_needed:
        click.echo(
            "Next: RESTART mosquitto (systemctl restart mosquitto): the crlfile line is new, and Mosquitto reads a "
            "new crlfile line only when it starts. Later revocations need only a reload."
        )
    else:
        click.echo("Next: reload mosquitto so it takes effect: systemctl reload mosquitto (or kill -HUP <its pid>).")
    if done.crl is not None and done.acl is None:
        click.echo(f"Make sure the broker's mosquitto.conf says `crlfile {done.crl.resolve()}` "
                   "(booking-gallery broker-config --crlfile ...).")
    click.echo("A connection the station already has stays open until it drops, but after the reload the ACL lets "
               "nothing through it; a restart closes it at once.")


@devices_group.command("crl")
@ca_dir_option(help="The county CA directory (its key signs the CRL; its enrolment log lists the certificates); "
               "default: [ca] dir of county.toml.")
@renamed_option("--output", "--out", "out", short="-o", required=True,
                type=click.Path(dir_okay=False, path_type=Path),
                help="The CRL file to write (PEM), e.g. /etc/mosquitto/booking/crl.pem.")
@click.option("--empty", is_flag=True, help="List nothing (at installation, before a gallery database exists).")
@db_option()
@json_option("Print {crl, serials, next_update}.")
def devices_crl(ca_dir: Path, out: Path, empty: bool, db_url: str, as_json: bool) -> None:
    """Write the county CRL: every certificate of every revoked station (or none, with --empty).

    Configure it in the broker from the start (broker-config --crlfile): Mosquitto re-reads the file
    on a reload, but reads a new crlfile line only when it starts.
    """
    try:
        if empty:
            path, serials, until = device_registry.write_crl(None, ca_dir, out)
        else:
            with _store(db_url) as store:
                path, serials, until = device_registry.write_crl(store, ca_dir, out)
    except device_registry.RevocationError as exc:
        raise click.ClickException(str(exc)) from None
    echo_result(as_json, {"crl": str(path), "serials": list(serials), "next_update": _iso(until)},
                [f"Wrote {path}: {len(serials)} revoked certificate(s), valid until {until:%Y-%m-%d}."])


@devices_group.command("rotate")
@click.option("--station", required=True, help="The station whose keys to rotate.")
@click.option(
    "--target",
    "targets",
    multiple=True,
    type=click.Choice(["tls-certificate", "signing-key"]),
    help="What to rotate (repeatable; default both): one signed command each.",
)
@ca_dir_option(help="The county CA directory, whose command-signing.key signs the command; default: [ca] dir of "
               "county.toml.")
@click.option("--expires-in", "hours", type=click.FloatRange(0.1, 30 * 24), default=72.0, show_default=True,
              help="Hours the station may act on the command (a station offline longer never runs it late).")
@toml_option("Publish now: a receiver-style TOML ([broker] host, port, ca_file, cert_file, key_file; [gallery] "
             "county) naming an operator certificate that may write commands (not a running worker's).")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Write each signed command to OUT/STATION-TARGET-ID.cose instead, to publish later.")
@db_option()
@json_option("Print {station, commands: [{command_id, target, topic, expires_at, file, sent, note}]}.")
def devices_rotate(station: str, targets: tuple[str, ...], ca_dir: Path, hours: float, config_path: Path | None,
                   out_dir: Path | None, db_url: str, as_json: bool) -> None:
    """Ask a station to rotate its keys: a rotate command signed with the county command key.

    The station verifies it (county key, its own station id, expiry), makes a new TLS key on the device,
    proves it holds its current signing key and asks the enrolment server (POST /rotate) for a new
    certificate, installs it and reconnects; all of it is audited, and a failure raises the station's
    `key_rotation_failed` alarm and is retried until the command expires. `signing-key` rotation is
    refused by stations: the gallery verifies every record against the enrolled key, so that key is
    replaced by re-provisioning.
    """
    from datetime import timedelta

    if (config_path is None) == (out_dir is None):
        raise click.UsageError("give --config (publish now) or --out (write the signed commands), one of them")
    with _store(db_url) as store:
        try:
            signed = device_registry.sign_rotate(ca_dir, store, station, list(targets or ("tls-certificate",
                                                                                         "signing-key")),
                                                 lifetime=timedelta(hours=hours))
        except device_registry.CommandError as exc:
            raise click.ClickException(str(exc)) from None
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        commands, lines = [], []
        for s in signed:
            path = out_dir / f"{station}-{s.command.args['target']}-{s.command.command_id}.cose"
            write_file_atomic(path, s.payload, FILE_MODE)
            commands.append({**_command_document(s), "file": str(path), "sent": False, "note": None})
            lines.append(f"Wrote {path}: rotate {s.command.args['target']} for {station}, valid until "
                         f"{s.command.expires_at:%Y-%m-%d %H:%M}Z.")
            lines.append(f"  publish: mosquitto_pub -h BROKER -p 8883 --cafile ca.crt --cert ops.crt --key ops.key "
                         f"-q 1 -t {s.topic} -f {path}")
        echo_result(as_json, {"station": station, "commands": commands}, lines)
        return
    assert config_path is not None
    try:
        config = ReceiverConfig.from_toml(config_path)
    except (ReceiverConfigError, TopicError) as exc:
        raise click.ClickException(str(exc)) from None
    try:
        notes = device_registry.publish_commands(config, signed)
    except device_registry.CommandError as exc:
        raise click.ClickException(str(exc)) from None
    missed = any(notes)
    if as_json:
        sent = [{**_command_document(s), "file": None, "sent": True, "note": note or None}
                for s, note in zip(signed, notes, strict=True)]
        echo_json({"station": station, "commands": sent})
    for s, note in zip(signed, notes, strict=True):
        if not as_json:
            click.echo(f"Sent rotate {s.command.args['target']} to {station}: command {s.command.command_id}, "
                       f"valid until {s.command.expires_at:%Y-%m-%d %H:%M}Z.")
        if note:
            click.echo(f"  WARNING: {note}", err=True)
    if missed:
        raise SystemExit(1)


def _command_document(signed: Any) -> dict[str, Any]:
    """The ``--json`` fields of one signed rotate command."""
    return {"command_id": signed.command.command_id, "target": signed.command.args["target"], "topic": signed.topic,
            "expires_at": _iso(signed.command.expires_at)}


@click.command("receive")
@toml_option("Receiver TOML: [broker] host, port, protocol, ca_file, cert_file, key_file; [gallery] county ... "
             "(default: county.toml, which holds the same tables).")
@db_option(default=None)
@click.option(
    "--export-dir",
    "export_dir",
    default=None,
    envvar="BOOKING_GALLERY_EXPORT_DIR",
    type=click.Path(file_okay=False, path_type=Path),
    help="Drop each committed record here as {record_id}.eft (ANSI/NIST-ITL); overrides [export] folder.",
)
@click.option("--no-index", "no_index", is_flag=True,
              help="Do not keep the search index ([search] of county.toml) up to date in this worker.")
def receive_cmd(config_path: Path | None, db_url: str | None, export_dir: Path | None, no_index: bool) -> None:
    """Run a gallery worker until SIGTERM or Ctrl-C: verify, store and ack records (and index them)."""
    config_path = config_path or current_config().source
    if config_path is None:
        raise click.UsageError("give --config FILE (the receiver's settings), or write them in county.toml")
    try:
        config = ReceiverConfig.from_toml(config_path)
        export = ExportSettings.from_toml(config_path)
    except (ReceiverConfigError, TopicError, ExportConfigError) as exc:
        raise ConfigSetupError(str(exc)) from None
    missing = config.missing_files()
    if missing:
        raise ConfigSetupError(f"{config_path}: {'; '.join(missing)}")
    export_folder = export_dir or export.folder
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    with _store(db_url or config.db, create=True) as store:
        index = None if no_index else _start_index(store, db_url or config.db)
        handlers: dict[str, Any] = {}
        if export_folder is not None:
            try:
                handlers.update(export_handlers(store, export, export_folder))
            except (NistCodecMissing, UnknownFormatError) as exc:
                raise click.ClickException(f"cannot export to {export_folder}: {exc}") from None
            prepare_folder(export_folder)
            logging.getLogger(__name__).info("exporting each committed record to %s (%s) from the work queue",
                                             export_folder, ", ".join(export.formats))
        if index is not None:
            # Indexing is downstream work like export: a job in the same queue, never on the ack path.
            handlers["index"] = lambda job: receiver.update_index(job)
        jobs = JobWorker(store, handlers, worker_id=config.client_id) if handlers else None
        _log_station_match(store, config.county)
        receiver = GalleryReceiver(config, store, jobs=jobs)
        receiver.index = index
        from sync.county.search.booking_check import responder_from_config

        receiver.checks = responder_from_config(store, index, config.county)
        try:
            receiver.run_forever(stop)
        except (OSError, ValueError) as exc:
            raise click.ClickException(f"receiver stopped: {exc}") from None
        finally:
            if index is not None:
                # A clean stop leaves the index level with the store, whatever index jobs were still queued
                # (they find nothing new at the next start); a crash is what the start's reconcile is for.
                receiver.refresh_index()
                index.close()


def _log_station_match(store: GalleryStore, county: str) -> None:
    """At start: a WARNING when no registered station is in the worker's county (it would hear nothing)."""
    logger = logging.getLogger(__name__)
    try:
        devices = store.list_devices()
    except GalleryStoreError as exc:
        logger.warning("cannot list the registered stations: %s", exc)
        return
    warning = device_registry.county_mismatch(devices, county)
    if warning:
        logger.warning(warning)
    elif not devices:
        logger.info("no station is registered yet; records of county %s will be accepted once one is", county)
    else:
        logger.info("%d registered station(s) in county %s", sum(d.county == county for d in devices), county)


def _start_index(store: GalleryStore, db_url: str) -> Any:
    """The worker's search index, brought level with the store (a crash may have left it behind or holding
    a purged record). A broken index must not stop records flowing: logged, and the worker runs without."""
    from sync.county.search.engine import SearchEngineError
    from sync.county.search.index import open_index
    from sync.county.search.settings import SearchConfigError

    logger = logging.getLogger(__name__)
    try:
        # the worker runs for days: a retrain is built beside it rather than stopping it (see index.py)
        index = open_index(current_config().search, db_url, background_retrain=True)
    except (SearchEngineError, SearchConfigError, OSError) as exc:
        logger.error("search index unavailable, records are stored but not indexed: %s", exc)
        return None
    try:
        added, removed = index.reconcile(store)
    except (SearchEngineError, GalleryStoreError, OSError) as exc:
        logger.error("search index could not catch up on start (%s); it will with the next record", exc)
    else:
        logger.info("search index (%s) caught up: %d added, %d removed", index.engine.name, added, removed)
    return index


@click.command("broker-config")
@click.option("--county", required=True)
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
@click.option("--cafile", required=True, help="County CA certificate path, as the broker will see it.")
@click.option("--certfile", required=True, help="Broker certificate path.")
@click.option("--keyfile", required=True, help="Broker key path.")
@click.option("--crlfile", default=None, help="CRL of revoked device certificates.")
@click.option("--port", default=8883, show_default=True, type=click.IntRange(1, 65535))
@click.option("--bind-address", default="", help="Listen on this address only (default: every interface).")
@click.option("--persistence-dir", default="/var/lib/mosquitto/", show_default=True,
              help="Where the broker keeps its persistence file (give each broker its own).")
@click.option("--user", "run_as_user", default="mosquitto", show_default=True,
              help="User the broker drops to when started as root; it must be able to read the TLS files.")
@click.option("--gallery-workers", default=1, show_default=True, type=click.IntRange(1, 64))
@click.option("--extra-identity", "extra_identities", multiple=True, metavar="CN",
              help="Another county identity with the gallery's rights, e.g. ops.COUNTY for `devices rotate` "
              "(repeatable).")
@click.option("--revoked", "revoked", multiple=True, metavar="STATION",
              help="A revoked station to deny everything (repeatable); see also --db.")
@click.option("--db", "db_url", default=None, envvar="BOOKING_GALLERY_DB", metavar="URL",
              help="Also deny every station the gallery's device registry has revoked.")
@json_option("Print {conf, acl, settings, gallery_identities, revoked, crlfile}.")
def broker_config_cmd(
    county: str,
    out_dir: Path,
    cafile: str,
    certfile: str,
    keyfile: str,
    crlfile: str | None,
    port: int,
    bind_address: str,
    persistence_dir: str,
    run_as_user: str,
    gallery_workers: int,
    extra_identities: tuple[str, ...],
    revoked: tuple[str, ...],
    db_url: str | None,
    as_json: bool,
) -> None:
    """Write mosquitto.conf and acl for a county broker (mutual TLS, per-station ACL).

    The inputs are kept in OUT/broker.json, so `devices revoke --broker-dir OUT` can regenerate the
    same files with a revoked station denied.
    """
    from sync.county.broker_config import save_settings

    revoked_all = set(revoked)
    if db_url:
        with _store(db_url) as store:
            revoked_all |= set(device_registry.revoked_stations(store))
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
            bind_address=bind_address,
            persistence_location=persistence_dir.rstrip("/") + "/",
            run_as_user=run_as_user,
            gallery_workers=gallery_workers,
            extra_gallery_identities=tuple(extra_identities),
            revoked_stations=tuple(sorted(revoked_all)),
        )
    except (TopicError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    conf, acl = write_broker_files(cfg, out_dir / "mosquitto.conf")
    settings = save_settings(cfg, out_dir)
    lines = [f"Wrote {conf} and {acl}. Gallery certificate CN(s): {', '.join(cfg.gallery_identities)}."]
    if cfg.revoked_stations:
        lines.append(f"Denied (revoked): {', '.join(cfg.revoked_stations)}.")
    if not crlfile:
        lines.append("Note: no --crlfile. Revoked certificates are then refused only through the ACL; configure a "
                     "CRL from the start (booking-gallery devices crl --empty --ca-dir DIR -o FILE).")
    echo_result(as_json, {"conf": str(conf), "acl": str(acl), "settings": _str_or_none(settings),
                          "gallery_identities": list(cfg.gallery_identities), "revoked": list(cfg.revoked_stations),
                          "crlfile": crlfile}, lines)


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
@toml_option("TOML with an [export] table (TOT, DAI, time zone, Type-2 layout); the receiver's file will do "
             "(default: county.toml's [export]).", envvar="BOOKING_GALLERY_CONFIG")
@json_option("Print {record_id, file, bytes, tot, version}.")
def export_cmd(record_id: str, output: Path, db_url: str, config_path: Path | None, as_json: bool) -> None:
    """Write a stored record as an ANSI/NIST-ITL transaction: Type-1, Type-2, one Type-10 per photo.

    The file is checked before it is written; a record that would not make a valid transaction is
    refused with the reasons, and nothing is written.
    """
    try:
        settings = ExportSettings.from_toml(config_path) if config_path else current_config().export
    except ExportConfigError as exc:
        raise click.ClickException(str(exc)) from None
    with _store(db_url) as store:
        try:
            data = export_stored(store, record_id, settings.nist)
        except (ExportError, NistExportError, NistCodecMissing) as exc:
            raise click.ClickException(str(exc)) from None
    try:
        write_file_atomic(output, data, FILE_MODE)
    except OSError as exc:
        raise click.ClickException(f"cannot write {output}: {exc}") from None
    echo_result(as_json, {"record_id": record_id, "file": str(output), "bytes": len(data), "tot": settings.nist.tot,
                          "version": settings.nist.version},
                [f"Wrote {output} ({len(data)} bytes, TOT {settings.nist.tot}, VER {settings.nist.version})."])


COMMANDS: tuple[click.Command, ...] = (records_cmd, devices_group, receive_cmd, export_cmd, broker_config_cmd)


def register_commands(group: click.Group) -> None:
    """Add the county-side commands to ``group`` (the ``booking-gallery`` CLI)."""
    for command in COMMANDS:
        group.add_command(command)
