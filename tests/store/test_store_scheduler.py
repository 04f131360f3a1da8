"""Housekeeping jobs as plain functions, and their wiring into APScheduler."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path

import pytest

from appliance.scheduler import (
    HousekeepingSettings,
    audit_retention_job,
    build_scheduler,
    disk_watch_job,
    purge_delivered_images_job,
    run_job,
)
from appliance.store import RecordPurgedError, Store
from appliance.store import audit as audit_log
from appliance.store.space import free_bytes
from tests.store.conftest import T0, make_booking, make_captures


def test_purge_job_only_touches_old_deliveries(store: Store) -> None:
    old, recent, pending = (store.save_booking(make_booking(f"S-{i}"), make_captures()) for i in range(3))
    store.mark_delivered(old, now=T0)
    store.mark_delivered(recent, now=T0 + timedelta(days=29))
    assert purge_delivered_images_job(store, 30, now=T0 + timedelta(days=31)) == 1
    with pytest.raises(RecordPurgedError):
        store.load_record(old)
    assert len(store.load_record(recent).captures) == 3 and len(store.load_record(pending).captures) == 3


def test_audit_retention_job(store: Store) -> None:
    audit_log.append(store.conn, "ofc-1", "logon", {}, now=T0)
    audit_log.append(store.conn, "ofc-1", "logon", {}, now=T0 + timedelta(days=300))
    assert audit_retention_job(store, 365, now=T0 + timedelta(days=400)) == 1
    assert store.verify_audit() is None
    with pytest.raises(ValueError, match="365"):
        audit_retention_job(store, 90)


def test_disk_watch_raises_and_clears_the_alarm(store: Store) -> None:
    free = free_bytes(store.data_dir)
    low = disk_watch_job(store, floor_bytes=free * 2)
    assert low.alarm_active and [a.name for a in store.active_alarms()] == ["disk_low"]
    assert "below the floor" in store.active_alarms()[0].message
    assert disk_watch_job(store, floor_bytes=free * 2).alarm_active, "stays raised while low"
    hysteresis = disk_watch_job(store, floor_bytes=int(free / 1.05))
    assert hysteresis.alarm_active, "not cleared just above the floor (no flapping)"
    ok = disk_watch_job(store, floor_bytes=free // 2)
    assert not ok.alarm_active and store.active_alarms() == []


def test_failing_job_is_logged_not_raised(data_dir: Path, caplog: pytest.LogCaptureFixture) -> None:
    def broken(store: Store) -> None:
        raise RuntimeError("boom")

    assert run_job(lambda: Store.open_data_dir(data_dir), broken) is None
    assert "broken failed" in caplog.text


def test_settings_refuse_short_audit_retention(data_dir: Path) -> None:
    with pytest.raises(ValueError, match="at least 365"):
        HousekeepingSettings(data_dir=data_dir, audit_keep_days=100)


def test_scheduler_runs_the_jobs(data_dir: Path) -> None:
    Store.open_data_dir(data_dir).close()
    settings = HousekeepingSettings(data_dir=data_dir, floor_bytes=free_bytes(data_dir) * 4,
                                    disk_watch_every=timedelta(seconds=0.2), first_run_after=timedelta(0))
    scheduler = build_scheduler(settings)
    assert {j.id for j in scheduler.get_jobs()} == {"disk_watch", "purge_delivered_images", "audit_retention"}
    scheduler.start()
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with Store.open_data_dir(data_dir) as store:
                if store.active_alarms():
                    break
            time.sleep(0.05)
    finally:
        scheduler.shutdown(wait=True)
    with Store.open_data_dir(data_dir) as store:
        assert [a.name for a in store.active_alarms()] == ["disk_low"]
