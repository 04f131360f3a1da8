"""``booking-gallery status``: the gallery's own health, its work queue (exports, and later indexing).

Register it on the county CLI (``sync/county/cli.py``)::

    from sync.county.gallery.status_cli import status_cmd
    main.add_command(status_cmd)

What it answers: is the work the gallery owes its stored records getting done? Per job kind, how many
jobs wait, how many are being retried after an error, how many failed for good, how many are done, and
how old the oldest waiting one is; then the last error anywhere. Exit status 1 when any job has failed or
is being retried (a monitoring check can run it as is), 2 when the database cannot be read.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

import click

from sync.county.gallery.cli import db_option, iso, open_for_command
from sync.county.gallery.jobs import QueueSummary


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{seconds / size:.1f} {unit}"
    return f"{seconds:.1f} s"


def _status_document(summary: QueueSummary, records: int, now: datetime) -> dict[str, Any]:
    def age(at: datetime | None) -> float | None:
        return None if at is None else round(max(0.0, (now - at).total_seconds()), 3)

    return {
        "records": records,
        "waiting": summary.waiting,
        "retrying": summary.retrying,
        "failed": summary.failed,
        "oldest_waiting_age_s": age(summary.oldest_waiting),
        "kinds": {
            k.kind: {"waiting": k.waiting, "pending": k.pending, "running": k.running, "retrying": k.retrying,
                     "failed": k.failed, "done": k.done, "oldest_waiting_age_s": age(k.oldest_waiting)}
            for k in sorted(summary.kinds.values(), key=lambda k: k.kind)
        },
        "last_error": None if summary.last_error is None else {
            "kind": summary.last_error_kind, "record_id": summary.last_error_record, "error": summary.last_error,
            "at": iso(summary.last_error_at)},
    }


@click.command("status")
@db_option()
@click.option("--json", "as_json", is_flag=True, help="One JSON document, for monitoring.")
def status_cmd(db_url: str, as_json: bool) -> None:
    """The gallery's work queue: jobs waiting per kind (exports, ...), the oldest one's age, failures and
    the last error. Exit status 1 when a job has failed or is being retried after an error."""
    with open_for_command(db_url) as store:
        summary = store.job_summary()
        records = store.count_records()
    doc = _status_document(summary, records, datetime.now(timezone.utc))
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        click.echo(f"{records} record(s) stored; {doc['waiting']} job(s) waiting (oldest "
                   f"{_age(doc['oldest_waiting_age_s'])}), {doc['retrying']} retrying, {doc['failed']} failed.")
        if doc["kinds"]:
            click.echo(f"{'kind':24} {'waiting':>8} {'retrying':>8} {'failed':>7} {'done':>8}  oldest waiting")
        for kind, k in doc["kinds"].items():
            click.echo(f"{kind:24} {k['waiting']:>8} {k['retrying']:>8} {k['failed']:>7} {k['done']:>8}  "
                       f"{_age(k['oldest_waiting_age_s'])}")
        if doc["last_error"]:
            e = doc["last_error"]
            click.echo(f"Last error ({e['at']}): {e['kind']} of record {e['record_id']}: {e['error']}")
    if summary.failed or summary.retrying:
        raise SystemExit(1)
