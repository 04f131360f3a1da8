"""Background housekeeping of the store: image retention, audit retention, the disk watch.

Each job is a plain function taking an open `Store` (testable without any scheduler);
`build_scheduler` wires them into an APScheduler `BackgroundScheduler`. Every run opens its own
`Store` (SQLite connections belong to one thread, and the scheduler runs jobs on a worker thread) and
closes it afterwards.

Choices that matter on a device:

* Every job also runs shortly after start-up, not only one interval later: a booking station that is
  switched off every night would otherwise never reach its first daily run.
* ``coalesce`` and ``max_instances=1``: after a long suspend a job runs once, not once per missed
  interval, and never overlaps itself.
* A job's failure is logged and the scheduler keeps going; the next run tries again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger

from appliance.config import DEFAULT_DATA_DIR, StationConfig, StoreConfig
from appliance.store.alarms import DISK_LOW
from appliance.store.audit import MIN_KEEP_DAYS
from appliance.store.db import Store
from appliance.store.space import free_bytes, human_bytes

log = logging.getLogger("booking_station.scheduler")

CLEAR_MARGIN = 1.1
"""The disk alarm clears only once free space is 10 % above the floor, so it does not flap."""

_STORE_DEFAULTS = StoreConfig()


@dataclass(frozen=True)
class HousekeepingSettings:
    """What the housekeeping jobs keep (defaults: the station config's ``[store]``), and how often they run.

    Types and ranges are checked by the config model; only the CJIS minimum is checked here as well,
    because it is a rule of the audit log, not of the file (a test or a tool may build these directly).
    """

    data_dir: Path = DEFAULT_DATA_DIR
    delivered_image_days: float = _STORE_DEFAULTS.delivered_image_days
    audit_keep_days: int = _STORE_DEFAULTS.audit_keep_days  # CJIS asks for at least 365; the margin covers a late sync
    floor_bytes: int = _STORE_DEFAULTS.floor_bytes
    image_purge_every: timedelta = timedelta(hours=6)
    audit_retention_every: timedelta = timedelta(days=1)
    disk_watch_every: timedelta = timedelta(minutes=1)
    first_run_after: timedelta = timedelta(seconds=30)

    def __post_init__(self) -> None:
        if self.audit_keep_days < MIN_KEEP_DAYS:
            raise ValueError(f"audit_keep_days must be at least {MIN_KEEP_DAYS} (CJIS), got {self.audit_keep_days}")


def settings_from_config(config: StationConfig, data_dir: Path | str) -> HousekeepingSettings:
    """Housekeeping settings from the station config's `[store]`, with the county's remote changes over it.

    The county may change `delivered_image_days` and `audit_keep_days` with a signed `config` command;
    the sync agent checks and keeps those in DATA_DIR/sync/remote-settings.json (the services cannot
    write /etc). They are the config's remote layer (`StationConfig.with_remote`) and take effect when
    the service that runs the scheduler next starts.
    """
    from sync.station.remote import load_remote_settings

    store = config.with_remote(load_remote_settings(data_dir)).store
    return HousekeepingSettings(data_dir=Path(data_dir), floor_bytes=store.floor_bytes,
                                delivered_image_days=float(store.delivered_image_days),
                                audit_keep_days=store.audit_keep_days)


@dataclass(frozen=True)
class DiskStatus:
    """Result of one disk watch: free bytes, the floor, and whether the disk alarm is now active."""

    free_bytes: int
    floor_bytes: int
    alarm_active: bool


def purge_delivered_images_job(store: Store, older_than_days: float, *, now: datetime | None = None) -> int:
    """Drop the images and templates of records the gallery acked more than ``older_than_days`` ago.

    Undelivered (pending or rejected) records are never touched. Returns how many records were purged.
    """
    count = store.purge_delivered_images(older_than_days, now=now)
    if count:
        log.info("purged images of %d delivered record(s) older than %s days", count, older_than_days)
    return count


def audit_retention_job(store: Store, keep_days: int, *, now: datetime | None = None) -> int:
    """Remove audit entries older than ``keep_days`` (at least 365) behind a checkpoint."""
    count = store.audit_retention(keep_days, now=now)
    if count:
        log.info("audit retention removed %d entries older than %d days", count, keep_days)
    return count


def disk_watch_job(store: Store, floor_bytes: int) -> DiskStatus:
    """Compare free disk with the floor; raise the ``disk_low`` alarm below it, clear it well above it.

    The alarm is stored in the database so the UI, the heartbeat and ``booking-station queue`` show it.
    If the disk is so full that even the alarm cannot be written, the log line is the alarm.
    """
    free = free_bytes(store.data_dir)
    active = bool([a for a in store.active_alarms() if a.name == DISK_LOW])
    if free < floor_bytes:
        message = (f"{human_bytes(free)} free on {store.data_dir}, below the floor of {human_bytes(floor_bytes)}: "
                   f"new bookings are refused until space is freed; stored records are kept")
        try:
            if store.raise_alarm(DISK_LOW, message):
                log.warning("disk low: %s", message)
        except Exception:
            log.exception("disk low and the alarm could not be stored: %s", message)
        return DiskStatus(free, floor_bytes, True)
    if active and free >= floor_bytes * CLEAR_MARGIN:
        store.clear_alarm(DISK_LOW)
        log.info("disk space back to %s free (floor %s): disk alarm cleared", human_bytes(free),
                 human_bytes(floor_bytes))
        active = False
    return DiskStatus(free, floor_bytes, active)


def run_job(open_store: Callable[[], Store], job: Callable[..., Any], **kwargs: Any) -> Any:
    """Run ``job`` on a freshly opened store, close it, and log (not raise) any failure."""
    try:
        with open_store() as store:
            return job(store, **kwargs)
    except Exception:
        log.exception("housekeeping job %s failed; it runs again at its next interval", job.__name__)
        return None


def build_scheduler(settings: HousekeepingSettings, *, open_store: Callable[[], Store] | None = None,
                    start_at: datetime | None = None) -> BackgroundScheduler:
    """A (not yet started) scheduler with the three housekeeping jobs; call ``start()`` on it.

    ``open_store`` makes the `Store` each run uses (default: the settings' data directory and floor).
    """
    opener = open_store or (lambda: Store.open_data_dir(settings.data_dir, floor_bytes=settings.floor_bytes))
    first = (start_at or datetime.now(timezone.utc)) + settings.first_run_after
    scheduler = BackgroundScheduler(
        timezone=timezone.utc,
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": 3600})
    jobs: list[tuple[str, Callable[..., Any], timedelta, dict[str, Any]]] = [
        ("disk_watch", disk_watch_job, settings.disk_watch_every, {"floor_bytes": settings.floor_bytes}),
        ("purge_delivered_images", purge_delivered_images_job, settings.image_purge_every,
         {"older_than_days": settings.delivered_image_days}),
        ("audit_retention", audit_retention_job, settings.audit_retention_every,
         {"keep_days": settings.audit_keep_days}),
    ]
    for job_id, job, every, kwargs in jobs:
        scheduler.add_job(run_job, IntervalTrigger(seconds=every.total_seconds(), timezone=timezone.utc),
                          args=[opener, job], kwargs=kwargs, id=job_id, name=job.__doc__.splitlines()[0] if
                          job.__doc__ else job_id, next_run_time=first)
    return scheduler
