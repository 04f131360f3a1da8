"""A full disk: new bookings are refused with a clear message, and nothing stored before is lost.

The main tests use a real, size-capped filesystem (a 2 MiB tmpfs mounted for the test; the tests run as
root, as on the device's CI). If the mount is not possible here, those tests are skipped and the floor
tests below, which run on any disk, still prove the refusal path.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from appliance.store import DiskFullError, Store
from appliance.store.space import ensure_space, free_bytes, human_bytes, is_disk_full
from tests.store.conftest import consistency_problems, make_booking, make_captures


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 2 MiB filesystem."""
    mount_point = tmp_path / "small"
    mount_point.mkdir()
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0755", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a size-capped tmpfs here ({proc.stderr.strip()}); the floor tests cover "
                    f"the refusal path")
    try:
        yield mount_point
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def check_intact(store: Store, saved: dict[str, list[str]]) -> None:
    """Every booking saved before is readable, verified, and still pending; nothing half-written."""
    assert store.integrity_check() == ["ok"]
    assert consistency_problems(store) == []
    assert store.queue_counts() == {"pending": len(saved), "delivered": 0, "rejected": 0}
    for rid, shas in saved.items():
        record = store.load_record(rid)
        assert [c.sha256 for c in record.captures] == shas
        assert record.outbox.state == "pending"
    assert store.verify_audit() is None


def save(store: Store, saved: dict[str, list[str]], number: str, size: int) -> str:
    captures = make_captures(size=size)
    rid = store.save_booking(make_booking(number), captures)
    saved[rid] = [c.sha256 for c in captures]
    return rid


def test_disk_filling_up_during_the_write_is_rolled_back_and_reported(small_fs: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Another program fills the disk between the free-space check and the write (the race no pre-check
    can close): SQLite fails with SQLITE_FULL, the save is rolled back and reported as DiskFullError."""
    store = Store.open_data_dir(small_fs, floor_bytes=0)
    saved: dict[str, list[str]] = {}
    for i in range(3):
        save(store, saved, f"FULL-{i}", 30_000)

    import appliance.store.db as db_module

    real_check = db_module.ensure_space
    filler = small_fs / "someone-elses-log"

    def check_then_fill(path: Path, floor: int, needed: int = 0) -> int:
        free = real_check(path, floor, needed)
        fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)  # the other program
        try:
            while True:
                os.write(fd, b"\0" * 4096)
        except OSError as exc:
            assert exc.errno == errno.ENOSPC
        finally:
            os.close(fd)
        return free

    monkeypatch.setattr(db_module, "ensure_space", check_then_fill)
    with pytest.raises(DiskFullError) as info:
        save(store, {}, "FULL-X", 30_000)
    monkeypatch.undo()
    message = str(info.value)
    assert "NOT saved" in message and "filled up" in message and "rolled back" in message
    assert "Nothing was deleted" in message and "still queued" in message
    assert isinstance(info.value.__cause__, sqlite3.OperationalError) and is_disk_full(info.value.__cause__)
    check_intact(store, saved)
    store.close()

    with Store.open_data_dir(small_fs, floor_bytes=0) as reopened:
        check_intact(reopened, saved)
        filler.unlink()  # space comes back: the station works again
        save(reopened, saved, "FULL-4", 30_000)
        check_intact(reopened, saved)


def test_real_small_disk_refuses_before_writing(small_fs: Path) -> None:
    """Saving until the real filesystem is too small: the pre-check refuses, with the real numbers."""
    saved: dict[str, list[str]] = {}
    with Store.open_data_dir(small_fs, floor_bytes=256 * 1024) as store:
        with pytest.raises(DiskFullError) as info:
            for i in range(100):
                save(store, saved, f"SMALL-{i}", 50_000)
        err = info.value
        assert len(saved) >= 2
        assert err.free_bytes is not None and err.floor_bytes == 256 * 1024
        message = str(err)
        assert human_bytes(err.free_bytes) in message and "256.0 KiB" in message
        assert "NOT saved" in message and "Nothing was deleted" in message
        check_intact(store, saved)
        assert [a.name for a in store.active_alarms()] == ["disk_low"]


def test_configured_floor_refuses_new_bookings_and_keeps_everything(data_dir: Path) -> None:
    saved: dict[str, list[str]] = {}
    with Store.open_data_dir(data_dir, floor_bytes=0) as store:
        for i in range(3):
            save(store, saved, f"FLOOR-{i}", 20_000)
    floor = free_bytes(data_dir) + 10 * 1024 ** 3  # more than this disk will ever have free
    with Store.open_data_dir(data_dir, floor_bytes=floor) as store:
        with pytest.raises(DiskFullError) as info:
            save(store, {}, "FLOOR-X", 20_000)
        message = str(info.value)
        assert "free on" in message and human_bytes(floor) in message and "Nothing was deleted" in message
        assert store.records_for_booking("FLOOR-X") == []
        check_intact(store, saved)
        [alarm] = store.active_alarms()
        assert alarm.name == "disk_low" and "NOT saved" in alarm.message


def test_ensure_space_and_disk_full_detection(tmp_path: Path) -> None:
    assert ensure_space(tmp_path, 0) == free_bytes(tmp_path)
    with pytest.raises(DiskFullError, match="needs about"):
        ensure_space(tmp_path, 0, needed_bytes=free_bytes(tmp_path) + 1)
    assert is_disk_full(sqlite3.OperationalError("database or disk is full"))
    assert is_disk_full(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)))
    assert is_disk_full(OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)))
    assert not is_disk_full(sqlite3.OperationalError("database is locked"))
    assert not is_disk_full(OSError(errno.EACCES, "denied"))
