"""``booking-gallery audit verify --station ID``: does the county's copy of a station's audit log hold?
``booking-gallery audit clear --station ID --reason TEXT``: a county user has looked into its alarms.

``verify`` exits 0 when the held chain links from its first entry to its last and no open alarm was
raised for the station; 1 when the chain is broken or there is an open alarm (gap, fork, rewrite,
truncation: see :mod:`sync.county.gallery.audit`); 2 for a missing or unreadable database or a bad
station id. Acknowledged alarms are listed with who, when and why, and no longer fail the check.

``clear`` acknowledges every open alarm of the station (nothing is deleted) and writes one entry in the
county audit log (``audit list --action audit_alarm_ack``); exit 1 when there was none to acknowledge.
``--resume`` also lets the county's copy go on from the station's next entry after a break the station
cannot undo (the break stays listed in ``verify``).
"""

from __future__ import annotations

import getpass
import json

import click

from sync.county.config import ConfigSetupError
from sync.county.gallery.audit import AuditAlarm, AuditChains, ChainReport, verify_station
from sync.county.gallery.cli import _store, db_option
from sync.protocol.topics import is_slug


@click.group("audit")
def audit() -> None:
    """The county's copy of each station's audit log."""


@audit.command("verify")
@click.option("--station", required=True, help="The station whose audit log to check.")
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts and monitoring.")
@db_option()
def verify(station: str, as_json: bool, db_url: str) -> None:
    """Walk the held chain again and list the alarms its intake raised; exit 1 if anything is wrong."""
    _check_station(station)
    with _store(db_url) as store:
        report = verify_station(store, station)
    if as_json:
        click.echo(json.dumps(report.to_json(), sort_keys=True))
    else:
        _print(report)
    if not report.ok:
        raise SystemExit(1)


@audit.command("clear")
@click.option("--station", required=True, help="The station whose open audit alarms to acknowledge.")
@click.option("--reason", required=True, help="What was found and done (kept with each alarm and in the audit log).")
@click.option("--actor", default=None, help="Who acknowledges, for the audit log (default: the login name).")
@click.option("--resume", is_flag=True,
              help="Also hold the station's entries again from its next one on (after a fork, lost entries or a "
                   "truncated log the station cannot undo); the break is kept in audit verify.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object: {station, acknowledged: [...], resume}.")
@db_option()
def clear(station: str, reason: str, actor: str | None, resume: bool, as_json: bool, db_url: str) -> None:
    """Acknowledge the station's open audit alarms (they stay listed, marked acknowledged); a later gap,
    fork, rewrite or truncation raises a new alarm. Exit 1 when there was no open alarm."""
    _check_station(station)
    if not reason.strip():
        raise ConfigSetupError("--reason must say what was found and done")
    actor = actor or getpass.getuser()
    with _store(db_url) as store:
        chains = AuditChains(store)
        acked = chains.acknowledge(station, actor, reason.strip(), resume=resume)
        pending = chains.pending_resume(station) if resume and acked else None
    if as_json:
        click.echo(json.dumps({"station": station, "acknowledged": [a.to_json() for a in acked],
                               "resume": None if pending is None else {"after_seq": pending}}, sort_keys=True))
    else:
        for alarm in acked:
            click.echo(f"Acknowledged {alarm.kind} at entry {alarm.seq} ({_times(alarm)}).")
        click.echo(f"{station}: {len(acked)} alarm{'s' if len(acked) != 1 else ''} acknowledged by {actor}."
                   if acked else f"{station}: no open audit alarm.")
        if pending is not None:
            click.echo(f"The county's copy goes on from the station's next entry after {pending}.")
    if not acked:
        raise SystemExit(1)


def _check_station(station: str) -> None:
    if not is_slug(station):
        raise ConfigSetupError(f"--station {station[:64]!r} is not a station id (a slug such as desk-1)")


def _times(alarm: AuditAlarm) -> str:
    return f"{alarm.count} time{'s' if alarm.count != 1 else ''}, first {alarm.first_at:%Y-%m-%d %H:%M:%SZ}"


def _print(report: ChainReport) -> None:
    if report.entries == 0:
        click.echo(f"{report.station}: the county holds no audit entries of this station.")
    else:
        click.echo(f"{report.station}: the county holds entries {report.first_seq}..{report.last_seq} "
                   f"({report.entries}), last hash {report.last_hash[:16]}.")
    if report.reported_head:
        click.echo(f"Last head the station reported: entry {report.reported_head['seq']} "
                   f"({str(report.reported_head['hash'])[:16]}).")
    for r in report.resumes:
        where = "pending" if r["resumed_seq"] is None else f"resumed at entry {r['resumed_seq']}"
        click.echo(f"Resume after entry {r['after_seq']} ({where}), by {r['actor']}: {r['reason']}.")
    if report.broken_at is not None:
        click.echo(f"BROKEN at entry {report.broken_at}: {report.broken_detail}.")
    for alarm in report.alarms:
        label = "acknowledged" if alarm.acknowledged else "ALARM"
        click.echo(f"{label} {alarm.kind} at entry {alarm.seq}: {alarm.detail} ({_times(alarm)}).")
        if alarm.acked_at is not None:
            click.echo(f"  acknowledged by {alarm.acked_by} at {alarm.acked_at:%Y-%m-%d %H:%M:%SZ}: "
                       f"{alarm.ack_reason}")
    click.echo("OK: the county's copy holds and no open alarm." if report.ok
               else "FAILED: the station's audit log does not match the county's copy.")
