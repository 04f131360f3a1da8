"""Reading the sync agent's status file: a stopped or dead agent is an offline alarm, a stale file is not
trusted, a missing one leaves the decision to the outbox."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

from appliance.store import Store
from appliance.ui.health import HealthSettings, read_sync_status, station_health

NOW = datetime.now(timezone.utc)


def _write(data: Path, **fields: object) -> None:
    (data / "sync").mkdir(exist_ok=True)
    doc = {"v": 1, "at": NOW.isoformat(), "connected": True, "last_ack_at": None, "pid": os.getpid(), **fields}
    (data / "sync" / "status.json").write_text(json.dumps(doc), encoding="utf-8")


def test_agent_states(tmp_path: Path) -> None:
    assert read_sync_status(tmp_path, NOW) is None
    _write(tmp_path)
    status = read_sync_status(tmp_path, NOW)
    assert status is not None and status["connected"] is True
    _write(tmp_path, at=(NOW - timedelta(minutes=6)).isoformat())
    assert read_sync_status(tmp_path, NOW) is None  # stale: the outbox decides
    _write(tmp_path, reason="stopped", connected=False, at=(NOW - timedelta(days=2)).isoformat())
    status = read_sync_status(tmp_path, NOW)
    assert status is not None and status["running"] is False
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    _write(tmp_path, pid=int(dead.stdout))
    status = read_sync_status(tmp_path, NOW)
    assert status is not None and status["running"] is False


def test_a_dead_agent_raises_the_offline_alarm(tmp_path: Path) -> None:
    _write(tmp_path, reason="stopped", connected=False)
    with Store.open_data_dir(tmp_path) as store:
        health = station_health(store, tmp_path, HealthSettings(disk_floor_bytes=0), NOW)
    assert [a["name"] for a in health["alarms"]] == ["offline"]
    assert "not running" in health["alarms"][0]["message"]
    assert health["counts"] == {"pending": 0, "delivered": 0, "rejected": 0}
