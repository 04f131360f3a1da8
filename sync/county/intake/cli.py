"""``booking-gallery import`` and ``booking-gallery purge``.

Exit codes: 0 done; 1 done in part (a row refused, a station command not delivered) or refused as a
whole for a reason the message gives; 2 a usage or input error (an unreadable source, a bad option).
"""

from __future__ import annotations

import getpass
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from sync.cli_conventions import renamed_option
from sync.county.config import current_config
from sync.county.gallery.cli import _store, ca_dir_option, db_option
from sync.county.gallery.devices import CommandError, publish_commands
from sync.county.gallery.receiver import ReceiverConfig, ReceiverConfigError
from sync.county.intake.identity import ImportIdentityError, load_signer
from sync.county.intake.legacy import DEFAULT_OPERATOR, ImportAborted, Importer, ImportSummary
from sync.county.intake.purge import PurgeError, PurgeResult, purge_booking
from sync.county.intake.sources import SourceError, read_sources
from sync.county.search.engine import SearchEngineError
from sync.county.search.index import SearchIndex, open_index
from sync.county.search.settings import SearchConfigError
from sync.protocol import record as rules
from sync.protocol.files import write_file_atomic
from sync.protocol.topics import TopicError

EXIT_PARTIAL = 1
EXIT_INPUT = 2


@contextmanager
def _search_index(db_url: str) -> Iterator[SearchIndex | None]:
    """The gallery's search index ([search] of county.toml), or None with a warning when it cannot be
    opened: the purge goes on (no search returns a record the store no longer holds)."""
    try:
        index = open_index(current_config().search, db_url)
    except (SearchEngineError, SearchConfigError, OSError) as exc:
        click.echo(f"warning: the search index cannot be opened ({exc}); it drops the booking when its worker "
                   "next starts", err=True)
        yield None
        return
    try:
        yield index
    finally:
        index.close()


def _print_summary(summary: ImportSummary) -> None:
    click.echo(f"Imported {summary.imported}, already stored {summary.duplicates}, refused {len(summary.refused)} "
               f"({summary.seconds:.1f} s, {summary.workers} worker(s)).")
    for refusal in summary.refused:
        click.echo(f"  refused {refusal.source}: {refusal.reason}")


@click.command("import")
@click.argument("sources", nargs=-1, required=True, type=click.Path(dir_okay=False, path_type=Path))
@db_option()
@ca_dir_option(help="The county CA directory: its county key signs the imported records; default: [ca] dir.")
@renamed_option("--bundle", "--models", "bundle_dir", type=click.Path(file_okay=False),
                help="The model bundle (default: the installed one, as the stations use).")
@click.option("--jobs", default=None, type=click.IntRange(1, 512), help="Worker processes (default: every core).")
@click.option("--operator", default=DEFAULT_OPERATOR, show_default=True, help="Operator id the records carry.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON summary.")
def import_cmd(sources: tuple[Path, ...], db_url: str, ca_dir: Path, bundle_dir: str | None, jobs: int | None,
               operator: str, as_json: bool) -> None:
    """Import legacy mug shots: MANIFEST.csv (image,booking_number,ori,captured_at[,pose]) or ANSI/NIST-ITL files.

    Each photo becomes a gallery record signed by the county key (station county-import) with its template
    from the model bundle. Importing the same photo of the same booking again stores nothing new, and a
    killed import resumes where it stopped when run again. A bad row is named, the rest imported.
    `booking-gallery search` finds the imported photos at once; a running gallery worker adds them to its
    search index with the next record it stores (or when it starts).
    """
    from appliance.vision.bundle import Bundle, BundleError

    if not operator.strip() or len(operator) > rules.OPERATOR_ID.max_len or not operator.isprintable():
        click.echo(f"error: --operator must be 1-{rules.OPERATOR_ID.max_len} printable characters", err=True)
        sys.exit(EXIT_INPUT)
    try:
        items, refused = read_sources(list(sources))
        signer = load_signer(ca_dir)
        Bundle.load(bundle_dir)  # a missing or altered bundle is said once, here, not by every worker
    except (SourceError, ImportIdentityError, BundleError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_INPUT)
    with _store(db_url, create=True) as store:
        show_bar = not as_json and sys.stderr.isatty()
        with click.progressbar(length=len(items), label="Importing", file=sys.stderr,
                               hidden=not show_bar) as bar:
            try:
                importer = Importer(store, signer, bundle_dir=bundle_dir, workers=jobs, operator=operator,
                                    progress=bar.update)
            except ImportIdentityError as exc:
                raise click.ClickException(str(exc)) from None
            try:
                summary = importer.run(items, refused)
            except ImportAborted as exc:
                raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(json.dumps(summary.as_dict()))
    else:
        _print_summary(summary)
    if summary.refused:
        sys.exit(EXIT_PARTIAL)


def _deliver(result: PurgeResult, config_path: Path | None, out_dir: Path | None) -> list[str]:
    """Publish or write the station commands; one note per command ("" when delivered)."""
    if not result.commands:
        return []
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        for s in result.commands:
            write_file_atomic(out_dir / f"{s.command.station}-purge-{s.command.command_id}.cose", s.payload, 0o640)
        return ["" for _ in result.commands]
    assert config_path is not None
    try:
        return publish_commands(ReceiverConfig.from_toml(config_path), result.commands)
    except (ReceiverConfigError, TopicError, CommandError) as exc:
        return [f"not delivered: {exc}" for _ in result.commands]


@click.command("purge")
@click.option("--booking", "booking_number", required=True, help="The agency's booking number.")
@click.option("--ori", required=True, help="The booking agency's ORI.")
@click.option("--reason", required=True, help="Why (the sealing or expungement order); audited, sent to the station.")
@db_option()
@ca_dir_option(help="The county CA directory, whose key signs the station's purge command; default: [ca] dir.")
@click.option("--config", "config_path", default=None, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Publish the station commands now: a receiver-style TOML naming an operator certificate.")
@click.option("--out", "out_dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="Write the signed station commands here instead, to publish later.")
@click.option("--export-dir", default=None, type=click.Path(file_okay=False, path_type=Path),
              help="The export folder to remove {record_id}.eft from (default: [export] folder).")
@click.option("--actor", default=None, help="Who purges, for the audit (default: the login name).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON result.")
def purge_cmd(booking_number: str, ori: str, reason: str, db_url: str, ca_dir: Path, config_path: Path | None,
              out_dir: Path | None, export_dir: Path | None, actor: str | None, as_json: bool) -> None:
    """Purge a sealed or expunged booking: gallery store, search index, export folder, and the station.

    Run it again to re-send the station's command (e.g. the station was offline).
    """
    if config_path is not None and out_dir is not None:
        raise click.UsageError("give --config (publish the station command now) or --out (write it), not both")
    actor = actor or getpass.getuser()
    export_dir = export_dir or current_config().export.folder
    with _store(db_url, create=False) as store, _search_index(db_url) as index:
        try:
            result = purge_booking(store, ori, booking_number, reason, actor=actor, ca_dir=ca_dir,
                                   export_folder=export_dir, index=index,
                                   can_deliver=config_path is not None or out_dir is not None)
        except (PurgeError, CommandError, SearchEngineError) as exc:
            raise click.ClickException(str(exc)) from None
        notes = _deliver(result, config_path, out_dir)
        for signed, note in zip(result.commands, notes, strict=True):
            store.audit(actor, "purge_command", signed.command.station,
                        {"command_id": signed.command.command_id, "record_id": signed.command.args["record_id"],
                         "delivered": not note, "note": note, "written_to": str(out_dir) if out_dir else None})
    commands = [{"station": s.command.station, "command_id": s.command.command_id,
                 "record_id": s.command.args["record_id"], "note": n}
                for s, n in zip(result.commands, notes, strict=True)]
    if as_json:
        click.echo(json.dumps({"ori": result.ori, "booking_number": result.booking_number,
                               "record_ids": result.record_ids, "removed": result.removed,
                               "exports_removed": [str(p) for p in result.exports_removed], "commands": commands}))
    else:
        click.echo(f"Purged booking {result.booking_number} of {result.ori}: {len(result.removed)} record(s) removed "
                   f"now, {len(result.record_ids)} in all; {len(result.exports_removed)} export file(s) removed.")
        for c in commands:
            where = f"written to {out_dir}" if out_dir else "sent"
            click.echo(f"  purge {c['record_id']} -> {c['station']}: {c['note'] or where}")
    if any(notes):
        click.echo("The station command was not delivered everywhere; run the same purge again to re-send it.",
                   err=True)
        sys.exit(EXIT_PARTIAL)
