"""Commands that only read: on a database they cannot read they print one line and exit 2 (no traceback),
and they never create a file, a folder or a table where there was none."""

from __future__ import annotations

import hashlib
import os
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance.cli import main as station_cli
from sync.county.cli import main as gallery_cli


def _junk(path: Path) -> Path:
    path.write_bytes(os.urandom(8192))
    return path


def _other_sqlite(path: Path) -> Path:
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (x TEXT)")
    conn.execute("INSERT INTO notes VALUES ('someone else''s data')")
    conn.commit()
    conn.close()
    return path


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*"))


def _one_line_error(output: str) -> None:
    lines = [line for line in output.splitlines() if line.strip()]
    assert len(lines) == 1, output
    assert "Traceback" not in output


GALLERY_READS = [["records"], ["fleet"], ["devices", "list"], ["audit", "verify", "--station", "desk-1"]]


@pytest.mark.parametrize("command", GALLERY_READS, ids=lambda c: " ".join(c[:2]))
@pytest.mark.parametrize("make", [_junk, _other_sqlite], ids=["random-bytes", "other-sqlite"])
def test_gallery_reads_refuse_a_file_that_is_no_gallery_database(tmp_path: Path, command: list[str], make) -> None:
    db = make(tmp_path / "g.db")
    before, files = _digest(db), _tree(tmp_path)
    result = CliRunner().invoke(gallery_cli, [*command, "--db", str(db)])
    assert result.exit_code == 2, result.output
    _one_line_error(result.output)
    assert "not a gallery database" in result.output
    assert _digest(db) == before and _tree(tmp_path) == files  # nothing written, not even a table


@pytest.mark.parametrize("command", GALLERY_READS, ids=lambda c: " ".join(c[:2]))
def test_gallery_reads_create_no_folder_and_no_database(tmp_path: Path, command: list[str]) -> None:
    result = CliRunner().invoke(gallery_cli, [*command, "--db", str(tmp_path / "missing" / "g.db")])
    assert result.exit_code == 2, result.output
    _one_line_error(result.output)
    assert "does not exist" in result.output and not (tmp_path / "missing").exists()


def test_a_gallery_database_damaged_past_its_header_is_one_line(tmp_path: Path) -> None:
    from sync.county.gallery.store import SQLiteStore

    db = tmp_path / "g.db"
    store = SQLiteStore(db)
    with store._transaction() as cur:  # enough rows that the table spans many pages
        for _ in range(300):
            cur.execute("INSERT INTO rejections (received_at, topic, station, record_id, reason, detail, "
                        "payload_sha256, payload_size) VALUES ('2026-01-01T00:00:00+00:00', 't', NULL, NULL, 'r', ?, "
                        "?, 1)", ("d" * 2000, b"x" * 32))
    store.close()
    data = bytearray(db.read_bytes())
    data[4096 * 3:4096 * 40] = b"\x13" * (4096 * 37)
    db.write_bytes(bytes(data))
    result = CliRunner().invoke(gallery_cli, ["records", "--db", str(db)])
    assert result.exit_code == 2, result.output
    _one_line_error(result.output)
    assert "cannot be read" in result.output or "not a gallery database" in result.output


STATION_READS = [["queue"], ["audit", "verify"], ["status"], ["users", "list"]]


@pytest.mark.parametrize("command", STATION_READS, ids=lambda c: " ".join(c))
def test_station_reads_refuse_a_station_db_that_is_no_database(tmp_path: Path, command: list[str]) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    db = _junk(data_dir / "station.db")
    (data_dir / "keys").mkdir()
    (data_dir / "keys" / "store.key").write_bytes(os.urandom(32))
    before, files = _digest(db), _tree(tmp_path)
    result = CliRunner().invoke(station_cli, [*command, "--data-dir", str(data_dir)])
    assert result.exit_code == 2, result.output
    _one_line_error(result.output)
    assert "not a database" in result.output
    assert _digest(db) == before and _tree(tmp_path) == files


@pytest.mark.parametrize("command", STATION_READS, ids=lambda c: " ".join(c))
def test_station_reads_create_nothing_in_a_folder_with_no_station(tmp_path: Path, command: list[str]) -> None:
    data_dir = tmp_path / "not-a-station"
    data_dir.mkdir()
    result = CliRunner().invoke(station_cli, [*command, "--data-dir", str(data_dir)])
    assert result.exit_code == 2, result.output
    _one_line_error(result.output)
    assert "no station database" in result.output
    assert _tree(data_dir) == []
