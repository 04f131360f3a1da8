"""``booking-gallery fleet``: is every station delivering? For county IT, and for monitoring.

Register it on the county CLI (``sync/county/cli.py``)::

    from sync.county.gallery.fleet_cli import fleet
    main.add_command(fleet)

Exit status 0 when no station is flagged, 1 when any is (stale, offline, unhealthy, revoked but still
talking, or unregistered), so a Nagios/Icinga check or a systemd timer can run it as is; a database
that cannot be opened is exit status 2, so "the check itself is broken" is never mistaken for
"a station is stale". See :mod:`sync.county.gallery.fleet` for what each flag means.
"""

from __future__ import annotations

import json
import sqlite3
import sys
from datetime import datetime, timedelta, timezone

import click

from sync.county.gallery.cli import db_option
from sync.county.gallery.fleet import (
    DEFAULT_MAX_PENDING_AGE,
    DEFAULT_STALE_AFTER,
    FleetThresholds,
    fleet_report,
    render_table,
)
from sync.county.gallery.store import (
    GalleryDatabaseMissingError,
    GalleryStoreError,
    NotAGalleryDatabaseError,
    open_store,
)

EXIT_FLAGGED = 1
EXIT_SETUP = 2


@click.command("fleet")
@db_option()
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object {stations: [...], flagged: N}, for scripts and monitoring.")
@click.option("--stale-after", "stale_minutes", type=click.FloatRange(min=0, min_open=True),
              default=DEFAULT_STALE_AFTER.total_seconds() / 60, show_default=True, metavar="MINUTES",
              help="Flag a station whose last status is older than this.")
@click.option("--max-pending-age", "pending_minutes", type=click.FloatRange(min=0, min_open=True),
              default=DEFAULT_MAX_PENDING_AGE.total_seconds() / 60, show_default=True, metavar="MINUTES",
              help="Flag a station whose oldest undelivered record has waited longer than this.")
def fleet(db_url: str, as_json: bool, stale_minutes: float, pending_minutes: float) -> None:
    """Every registered station's health: state, software, queue, last ack, alarms, last seen.

    Stations that never reported, went silent or offline are flagged stale; alarms, rejected records
    or a stuck queue flag them unhealthy. Exit status 1 when any station is flagged.
    """
    thresholds = FleetThresholds(timedelta(minutes=stale_minutes), timedelta(minutes=pending_minutes))
    now = datetime.now(timezone.utc)
    try:
        store = open_store(db_url, create=False)
    except (GalleryDatabaseMissingError, NotAGalleryDatabaseError) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_SETUP)
    except (GalleryStoreError, OSError, sqlite3.Error) as exc:
        click.echo(f"error: cannot open the gallery database {db_url}: {exc}", err=True)
        sys.exit(EXIT_SETUP)
    try:
        rows = fleet_report(store, now=now, thresholds=thresholds)
    except (GalleryStoreError, sqlite3.Error) as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(EXIT_SETUP)
    finally:
        store.close()
    if as_json:
        stations = [h.as_dict() for h in rows]
        click.echo(json.dumps({"stations": stations, "flagged": sum(1 for s in stations if s.get("flagged"))}))
    elif not rows:
        click.echo("No stations registered.")
    else:
        for line in render_table(rows, now):
            click.echo(line)
    sys.exit(EXIT_FLAGGED if any(h.flagged for h in rows) else 0)
