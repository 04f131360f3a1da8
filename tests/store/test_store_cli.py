"""`booking-station queue | audit verify | purge`: output for people and machines, clear errors."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import click
import pytest
from click.testing import CliRunner, Result

from appliance.store import Store, data_paths
from appliance.store.cli import register
from tests.store.conftest import make_booking, make_captures


@click.group()
def cli() -> None:
    """Stand-in for the booking-station group."""


register(cli)


def run(*args: str, input: str | None = None) -> Result:
    result = CliRunner().invoke(cli, list(args), input=input)
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def station(data_dir: Path) -> dict[str, str]:
    with Store.open_data_dir(data_dir, floor_bytes=0) as store:
        ids = {n: store.save_booking(make_booking(n), make_captures(size=2000)) for n in ("A-1", "B-2", "C-3")}
        store.mark_delivered(ids["A-1"])
        store.mark_rejected(ids["B-2"], "signature does not verify")
        store.mark_failed(ids["C-3"], "no ack within 30 s")
    return ids


def test_queue_text_and_json(data_dir: Path, station: dict[str, str]) -> None:
    result = run("queue", "--data-dir", str(data_dir))
    assert result.exit_code == 0
    assert "pending 1, delivered 1, rejected 1" in result.stdout
    lines = {line.split()[0]: line for line in result.stdout.splitlines()[2:]}
    assert "pending" in lines[station["C-3"]] and "no ack within 30 s" in lines[station["C-3"]]
    assert "rejected" in lines[station["B-2"]] and "signature does not verify" in lines[station["B-2"]]
    data = json.loads(run("queue", "--data-dir", str(data_dir), "--json").stdout)
    assert data["counts"] == {"pending": 1, "delivered": 1, "rejected": 1}
    by_id = {r["record_id"]: r for r in data["records"]}
    assert by_id[station["C-3"]]["attempts"] == 1 and by_id[station["A-1"]]["ack_status"] == "stored"
    assert data["oldest_pending_age_seconds"] >= 0
    only = json.loads(run("queue", "--data-dir", str(data_dir), "--json", "--state", "pending").stdout)
    assert [r["record_id"] for r in only["records"]] == [station["C-3"]]


def test_data_dir_from_environment(data_dir: Path, station: dict[str, str]) -> None:
    result = CliRunner(env={"BOOKING_STATION_DATA_DIR": str(data_dir)}).invoke(cli, ["queue", "--json"])
    assert json.loads(result.stdout)["counts"]["pending"] == 1


def test_audit_verify_ok_then_broken(data_dir: Path, station: dict[str, str]) -> None:
    result = run("audit", "verify", "--data-dir", str(data_dir))
    assert result.exit_code == 0 and "audit log OK: 3 entries" in result.stdout
    db_path, _ = data_paths(data_dir)
    conn = sqlite3.connect(db_path)
    conn.execute("DROP TRIGGER audit_no_update")
    conn.execute("UPDATE audit SET actor = 'someone-else' WHERE seq = 2")
    conn.commit()
    conn.close()
    result = run("audit", "verify", "--data-dir", str(data_dir))
    assert result.exit_code == 1 and "BROKEN at seq 2" in result.stdout
    data = json.loads(run("audit", "verify", "--data-dir", str(data_dir), "--json").stdout)
    assert data["ok"] is False and data["first_broken_seq"] == 2 and data["entries"] == 3


def test_purge_by_booking_number(data_dir: Path, station: dict[str, str]) -> None:
    refused = run("purge", "--data-dir", str(data_dir), "--booking", "C-3")
    assert refused.exit_code == 2 and "--yes" in refused.stderr
    result = run("purge", "--data-dir", str(data_dir), "--booking", "C-3", "--yes", "--reason", "sealed",
                 "--actor", "county:clerk-4")
    assert result.exit_code == 0 and station["C-3"] in result.stdout
    again = run("purge", "--data-dir", str(data_dir), "--booking", "C-3", "--yes", "--json")
    assert json.loads(again.stdout)["purged"] == []
    with Store.open_data_dir(data_dir) as store:
        assert store.records_for_booking("C-3") == []
        purges = [r[0] for r in store.conn.execute("SELECT actor FROM audit WHERE action = 'purge'")]
        assert purges[0] == "county:clerk-4" and len(purges) == 2
        assert store.verify_audit() is None
    bad = run("purge", "--data-dir", str(data_dir), "--booking", "C-3\x07", "--yes")
    assert bad.exit_code == 2 and "control character" in bad.stderr


def test_missing_data_dir(tmp_path: Path) -> None:
    result = run("queue", "--data-dir", str(tmp_path / "nowhere"))
    assert result.exit_code == 2
    assert result.stderr.startswith("error: data directory") and "does not exist" in result.stderr
    assert not (tmp_path / "nowhere").exists()


@pytest.mark.parametrize("damage", ["mode", "length", "directory"])
def test_unusable_key(data_dir: Path, station: dict[str, str], damage: str) -> None:
    _, key_path = data_paths(data_dir)
    if damage == "mode":
        os.chmod(key_path, 0o644)
        expected = "chmod 600"
    elif damage == "length":
        key_path.write_bytes(b"short")
        expected = "not 32"
    else:
        key_path.unlink()
        key_path.mkdir()
        expected = "not a regular file"
    for args in (["queue"], ["audit", "verify"], ["purge", "--booking", "A-1", "--yes"]):
        result = run(*args, "--data-dir", str(data_dir))
        assert result.exit_code == 2 and result.stderr.startswith("error: key file") and expected in result.stderr


def test_missing_key_of_an_existing_database(data_dir: Path, station: dict[str, str]) -> None:
    _, key_path = data_paths(data_dir)
    key_path.unlink()
    result = run("queue", "--data-dir", str(data_dir))
    assert result.exit_code == 2 and "Restore the key file" in result.stderr


@pytest.mark.parametrize("content", [b"this is not a database at all" * 100, b"SQLite format 3\x00" + b"\xff" * 4000])
def test_corrupt_database(data_dir: Path, content: bytes) -> None:
    db_path, _ = data_paths(data_dir)
    db_path.write_bytes(content)
    for args in (["queue"], ["audit", "verify"]):
        result = run(*args, "--data-dir", str(data_dir))
        assert result.exit_code == 2, result.output
        assert result.stderr.startswith("error: database") and "damaged" in result.stderr
    assert db_path.read_bytes() == content, "a damaged database is left as it was"


def test_first_use_creates_database_and_private_key(data_dir: Path) -> None:
    result = run("purge", "--data-dir", str(data_dir), "--booking", "A-1", "--yes")
    assert result.exit_code == 0, result.output
    assert json.loads(run("queue", "--data-dir", str(data_dir), "--json").stdout)["counts"] == {
        "pending": 0, "delivered": 0, "rejected": 0}
    db_path, key_path = data_paths(data_dir)
    assert db_path.is_file()
    assert oct(key_path.stat().st_mode & 0o777) == "0o600" and oct(key_path.parent.stat().st_mode & 0o777) == "0o700"


def test_damage_found_while_reading_is_a_clear_error(data_dir: Path, station: dict[str, str]) -> None:
    db_path, _ = data_paths(data_dir)
    conn = sqlite3.connect(db_path)
    page_size = conn.execute("PRAGMA page_size").fetchone()[0]
    root = conn.execute("SELECT rootpage FROM sqlite_master WHERE name = 'outbox'").fetchone()[0]
    conn.close()
    raw = bytearray(db_path.read_bytes())
    raw[(root - 1) * page_size:root * page_size] = b"\x5a" * page_size
    db_path.write_bytes(bytes(raw))
    result = run("queue", "--data-dir", str(data_dir))
    assert result.exit_code == 2 and "database is damaged" in result.stderr and "county IT" in result.stderr


def test_first_use_as_another_user_than_the_directory_owner_is_refused(data_dir: Path) -> None:
    os.chown(data_dir, 65534, 65534)  # the service user owns the directory; the tests run as root
    result = run("purge", "--data-dir", str(data_dir), "--booking", "A-1", "--yes")
    assert result.exit_code == 2 and "would be created as" in result.stderr and "sudo -u" in result.stderr
    assert list(data_dir.iterdir()) == [], "nothing was created"


@pytest.mark.parametrize("args", [["queue"], ["audit", "verify"], ["queue", "--json"]])
def test_reading_commands_on_a_folder_without_a_station_create_nothing(tmp_path: Path, args: list[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run(*args, "--data-dir", str(empty))
    assert result.exit_code == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and str(empty / "station.db") in result.stderr
    assert list(empty.iterdir()) == [], "neither keys/ nor station.db was created"
