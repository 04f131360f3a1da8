"""Store commands for the ``booking-station`` command line: ``queue``, ``audit verify``, ``purge``.

Register them on the main group with `register`. Each takes ``--data-dir DIR`` (default
``/var/lib/booking-station``, or ``$BOOKING_STATION_DATA_DIR``): the database is ``DIR/station.db`` and
the key ``DIR/keys/store.key`` (made on first use, directory 0700, file 0600).

As elsewhere in the command line: plain text for people, ``--json`` for one JSON object on one line for
machines; errors are one ``error: ...`` line on stderr and a non-zero exit, never a traceback. Exit
status 1: the command ran and found a problem (broken audit chain); 2: an input is wrong (a booking field,
purge without --yes when not interactive) or the station itself is not usable (no data directory, key
refused, damaged database).
"""

from __future__ import annotations

import functools
import getpass
import json
import os
import pwd
import sqlite3
import sys
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any, NoReturn, TypeVar

import click

from appliance.cli_support import data_dir_option as _shared_data_dir_option
from appliance.config import ENV_DATA_DIR
from appliance.store.db import Store, data_paths, is_corruption
from appliance.store.errors import StationStoreError, ValidationError
from appliance.store.outbox import STATES
from appliance.store.records import is_record_id

EXIT_PROBLEM = 1  # a check failed (audit verify)
EXIT_INPUT = 2  # the caller's input is wrong
EXIT_SETUP = 2

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = EXIT_SETUP) -> NoReturn:
    """Print one clear error line and exit; the command line never shows a traceback."""
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def data_dir_option(func: F) -> F:
    """The shared ``--data-dir`` option (flag > $BOOKING_STATION_DATA_DIR > [station] data_dir > default)."""
    return _shared_data_dir_option("station.db, keys/store.key")(func)  # type: ignore[no-any-return]


def clear_errors(func: F) -> F:
    """Turn the store's errors (and any stray SQLite or OS error) into one line and an exit status."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ValidationError as exc:
            fail(str(exc), EXIT_INPUT)
        except StationStoreError as exc:
            fail(str(exc))
        except sqlite3.Error as exc:
            if is_corruption(exc):
                fail(f"the station database is damaged ({exc}). Keep the file as it is (it may still hold "
                     f"undelivered records) and call county IT to recover it or restore it from backup")
            fail(f"database error: {exc}")
        except OSError as exc:
            fail(f"{exc.filename or 'file'}: {exc.strerror or exc}")

    return wrapper  # type: ignore[return-value]


def open_store(data_dir: Path, *, create: bool = True) -> Store:
    """Open the store of ``data_dir``, checking the directory first so the error names what is wrong.

    ``create=False`` (commands that only read: queue, audit verify, status): a folder without a station's
    database is one error line naming the missing file, and nothing is created in it.
    """
    if not data_dir.exists():
        fail(f"data directory {data_dir} does not exist; pass --data-dir (or set {ENV_DATA_DIR}) to the "
             f"station's data directory, or provision the station first")
    if not data_dir.is_dir():
        fail(f"data directory {data_dir} is not a directory")
    db_path, key_path = data_paths(data_dir)
    if db_path.exists() and not db_path.is_file():
        fail(f"database {db_path} is not a file")
    if not create and not db_path.exists():  # a missing or unusable key of a database is the store's error
        fail(f"no station database at {db_path}: {data_dir} is not a station's data directory (pass --data-dir, "
             f"set {ENV_DATA_DIR} or [station] data_dir), or the station has not run yet")
    owner = data_dir.stat().st_uid
    if owner != os.geteuid() and not (db_path.exists() and key_path.exists()):
        # Files made now would belong to this user (often root), and the station service, running as
        # the directory's owner, could then not open its own database or key.
        fail(f"the station database or key in {data_dir} does not exist yet and would be created as "
             f"{_user_name(os.geteuid())}, not as the directory's owner {_user_name(owner)}; run this as "
             f"{_user_name(owner)} (e.g. sudo -u {_user_name(owner)} ...) or start the station service first")
    return Store.open_data_dir(data_dir)


def _user_name(uid: int) -> str:
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return f"uid {uid}"


def _age(delta: timedelta | None) -> str:
    if delta is None:
        return "none"
    seconds = max(int(delta.total_seconds()), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {seconds:02d}s"


@click.command("queue")
@data_dir_option
@click.option("--state", type=click.Choice(STATES), default=None, help="only records in this state")
@click.option("--json", "as_json", is_flag=True, help="one JSON object: counts, alarms and every record")
@clear_errors
def queue_command(data_dir: Path, state: str | None, as_json: bool) -> None:
    """Show the delivery queue: every record with its state, attempts, next attempt and last error.

    Records stay ``pending`` until the county gallery acks them; ``rejected`` ones show the gallery's
    reason. Active alarms (disk low, queue full) are listed first.
    """
    with open_store(data_dir, create=False) as store:
        entries = store.queue(state)
        counts = store.queue_counts()
        age = store.oldest_pending_age()
        alarms = store.active_alarms()
    if as_json:
        click.echo(json.dumps({
            "counts": counts,
            "oldest_pending_age_seconds": round(age.total_seconds(), 3) if age is not None else None,
            "alarms": [{"name": a.name, "message": a.message, "raised_at": a.raised_at} for a in alarms],
            "records": [e.to_json() for e in entries],
        }))
        return
    for alarm in alarms:
        click.echo(f"ALARM {alarm.name} since {alarm.raised_at}: {alarm.message}")
    click.echo(f"pending {counts['pending']}, delivered {counts['delivered']}, rejected {counts['rejected']}; "
               f"oldest pending waiting {_age(age)}")
    if not entries:
        click.echo("no records" + (f" in state {state}" if state else ""))
        return
    click.echo(f"{'RECORD ID':<36}  {'BOOKING':<20} {'ORI':<9}  {'STATE':<9} {'TRIES':>5}  "
               f"{'NEXT ATTEMPT (UTC)':<19}  LAST ERROR / REASON")
    for e in entries:
        next_at = e.next_attempt_at.strftime("%Y-%m-%d %H:%M:%S") if e.state == "pending" else "-"
        note = e.reject_reason if e.state == "rejected" else (e.ack_status if e.state == "delivered" else e.last_error)
        click.echo(f"{e.record_id:<36}  {e.booking_number:<20} {e.agency_ori:<9}  {e.state:<9} {e.attempts:>5}  "
                   f"{next_at:<19}  {note or ''}")


@click.group("audit")
def audit_group() -> None:
    """The station's audit log (append-only, hash-chained)."""


@audit_group.command("verify")
@data_dir_option
@click.option("--json", "as_json", is_flag=True, help="one JSON object: ok, first_broken_seq, counts")
@clear_errors
def audit_verify_command(data_dir: Path, as_json: bool) -> None:
    """Check the audit log's hash chain; exit status 1 and the first broken entry if it does not hold.

    An entry that was edited, removed or moved breaks the chain at that entry. Entries removed by
    retention (older than the kept period) are accounted for by the retention checkpoint. A chain rewritten
    with recomputed hashes, or cut short, still passes here: that is what the county's copy catches
    (``booking-gallery audit verify``), so the output says how far the county holds it.
    """
    from appliance.store import audit as audit_log

    with open_store(data_dir, create=False) as store:
        report = store.audit_report()
        county = audit_log.delivered_seq(store.conn)
    checkpoint = report.checkpoint
    if as_json:
        click.echo(json.dumps({
            "ok": report.ok, "first_broken_seq": report.first_broken_seq, "entries": report.entries,
            "first_seq": report.first_seq, "last_seq": report.last_seq,
            "checkpoint_seq": checkpoint.seq if checkpoint else None,
            "removed_by_retention": checkpoint.removed_total if checkpoint else 0,
            "county_holds_through_seq": county,
        }))
    elif report.ok:
        span = f", seq {report.first_seq}-{report.last_seq}" if report.entries else ""
        kept = (f"; {checkpoint.removed_total} older entries removed by retention, chain continues from "
                f"checkpoint seq {checkpoint.seq}") if checkpoint else ""
        click.echo(f"audit log OK: {report.entries} entries{span}{kept}; the county holds it through seq {county}")
    else:
        click.echo(f"audit log BROKEN at seq {report.first_broken_seq}: that entry was changed, removed or moved "
                   f"({report.entries} entries present). Keep the database as it is and compare it with the "
                   f"county's copy of the log")
    if not report.ok:
        sys.exit(EXIT_PROBLEM)


def _default_actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except Exception:  # no user name in this environment (containers): still audit something useful
        return "cli"


@click.command("purge")
@data_dir_option
@click.option("--booking", "target", required=True, metavar="NUMBER",
              help="booking number to purge (a record id is accepted too)")
@click.option("--ori", default=None, help="agency ORI, needed if several agencies used this booking number")
@click.option("--reason", default=None, help="why (court order, sealing, expungement); kept in the audit log")
@click.option("--actor", default=None, help="who orders the purge (default: cli:<user name>)")
@click.option("--yes", is_flag=True, help="do not ask for confirmation")
@click.option("--json", "as_json", is_flag=True, help="one JSON object: what was purged")
@clear_errors
def purge_command(data_dir: Path, target: str, ori: str | None, reason: str | None, actor: str | None,
                  yes: bool, as_json: bool) -> None:
    """Remove a booking's records, images and templates for good (sealed or expunged bookings).

    Undelivered records are removed too (they must not be sent). The purge is written to the audit
    log, also when nothing was stored. Running it again is harmless.
    """
    actor = actor or _default_actor()
    with open_store(data_dir) as store:
        ids = [target] if is_record_id(target) else store.records_for_booking(target, ori)
        if ids and not yes:
            if not sys.stdin.isatty():
                fail("purge cannot be undone: pass --yes to confirm when not running interactively",
                     EXIT_INPUT)
            pending = sum(1 for e in store.queue("pending") if e.record_id in ids)
            note = f", {pending} of them not yet delivered to the county" if pending else ""
            click.confirm(f"Purge {len(ids)} record(s) of booking {target}{note}? This cannot be undone",
                          abort=True)
        result = store.purge_booking(target, actor=actor, reason=reason, agency_ori=ori)
    if as_json:
        click.echo(json.dumps({"target": target, "purged": result.record_ids, "states": result.states}))
    elif result.record_ids:
        click.echo(f"purged {len(result.record_ids)} record(s) of booking {target}: "
                   f"{', '.join(result.record_ids)}; the purge is in the audit log")
    else:
        click.echo(f"nothing stored for booking {target} (never saved here, or already purged); "
                   f"the request is in the audit log")


def register(group: click.Group) -> None:
    """Add ``queue``, ``audit verify`` and ``purge`` to the ``booking-station`` group."""
    group.add_command(queue_command)
    group.add_command(audit_group)
    group.add_command(purge_command)
