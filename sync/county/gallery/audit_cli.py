"""``booking-gallery audit verify --station ID``: does the county's copy of a station's audit log hold?

Exit 0 when the held chain links from its first entry to its last and no alarm was raised for the
station; 1 when the chain is broken or there is an alarm (gap, fork, rewrite, truncation: see
:mod:`sync.county.gallery.audit`); 2 for a missing or unreadable database or a bad station id.
"""

from __future__ import annotations

import json

import click

from sync.county.config import ConfigSetupError
from sync.county.gallery.audit import ChainReport, verify_station
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
    if not is_slug(station):
        raise ConfigSetupError(f"--station {station[:64]!r} is not a station id (a slug such as desk-1)")
    with _store(db_url) as store:
        report = verify_station(store, station)
    if as_json:
        click.echo(json.dumps(report.to_json(), sort_keys=True))
    else:
        _print(report)
    if not report.ok:
        raise SystemExit(1)


def _print(report: ChainReport) -> None:
    if report.entries == 0:
        click.echo(f"{report.station}: the county holds no audit entries of this station.")
    else:
        click.echo(f"{report.station}: the county holds entries {report.first_seq}..{report.last_seq} "
                   f"({report.entries}), last hash {report.last_hash[:16]}.")
    if report.reported_head:
        click.echo(f"Last head the station reported: entry {report.reported_head['seq']} "
                   f"({str(report.reported_head['hash'])[:16]}).")
    if report.broken_at is not None:
        click.echo(f"BROKEN at entry {report.broken_at}: {report.broken_detail}.")
    for alarm in report.alarms:
        times = f"{alarm.count} time{'s' if alarm.count != 1 else ''}, first {alarm.first_at:%Y-%m-%d %H:%M:%SZ}"
        click.echo(f"ALARM {alarm.kind} at entry {alarm.seq}: {alarm.detail} ({times}).")
    click.echo("OK: the county's copy holds and no alarm was raised." if report.ok
               else "FAILED: the station's audit log does not match the county's copy.")
