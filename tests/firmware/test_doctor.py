"""``booking-station doctor`` on this machine with the replay profile: a data directory with a real store,
an identity issued by a test county CA, and a real Mosquitto (the sync tests' harness, with the county's
generated config) so that every check passes. Then each test breaks one thing, the way it breaks in the
field, and asserts the one clear FAIL line it must produce while the other checks keep answering.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import tomli_w
from click.testing import CliRunner

from appliance.doctor import Check, run_doctor
from appliance.doctor_cli import doctor
from appliance.store import Store
from appliance.vision.bundle import ENV_BUNDLE, Bundle
from tests.sync import factory
from tests.sync.broker import INSTALL_HINT, MosquittoBroker, free_port, make_pki, mosquitto_binary

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

COUNTY = "king"
STATION = "st-01"


@dataclass
class Desk:
    """A provisioned replay station: its data directory, its config (as a dict to vary) and the broker."""

    data_dir: Path
    config: dict[str, Any]
    broker: MosquittoBroker
    directory: Path

    def write(self, name: str, **changes: dict[str, Any]) -> Path:
        """A copy of the config with whole tables replaced or removed (``None``)."""
        doc = {k: dict(v) for k, v in self.config.items()}
        for table, values in changes.items():
            if values is None:
                doc.pop(table, None)
            else:
                doc[table] = {**doc.get(table, {}), **values}
        path = self.directory / f"{name}.toml"
        path.write_text(tomli_w.dumps(doc))
        return path


@pytest.fixture(scope="module")
def desk(tmp_path_factory: pytest.TempPathFactory, faces_dir: Path) -> Iterator[Desk]:
    if mosquitto_binary() is None:
        pytest.fail(f"Mosquitto is needed for the doctor's broker check: {INSTALL_HINT}")
    root = tmp_path_factory.mktemp("doctor")
    pki = make_pki(root / "pki")
    broker = MosquittoBroker(root / "broker", pki, COUNTY)
    broker.start()
    station = factory.make_station(root / "station", pki, broker.host, broker.port, name=STATION, county=COUNTY)
    config = tomllib.loads(station.config_path.read_text())
    config.pop("sync", None)  # as `booking-station provision` writes it: [station], [mqtt], [keys]
    config["station"]["profile"] = "replay"
    config["camera"] = {"source": f"replay:{faces_dir / 'deepface' / 'img1.jpg'}"}
    config["store"] = {"floor_bytes": 1024 * 1024}
    with Store.open_data_dir(station.data_dir, floor_bytes=0) as store:  # a station that has worked a shift
        for n in range(2):
            factory.store_booking(store, n, station=STATION)
        store.append_audit("ofc-1187", "logon", {"desk": 1})
    try:
        yield Desk(station.data_dir, config, broker, root)
    finally:
        broker.stop()


def _by_name(results: list[Check]) -> dict[str, Check]:
    return {r.check: r for r in results}


def _failed(results: list[Check]) -> dict[str, str]:
    return {r.check: r.detail for r in results if not r.ok}


def test_a_provisioned_replay_station_passes_every_check(desk: Desk) -> None:
    result = CliRunner().invoke(doctor, ["--config", str(desk.write("good")), "--data-dir", str(desk.data_dir)])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for check in ("config", "profile", "camera", "models", "identity", "clock", "broker", "disk", "database", "keys"):
        assert any(line.startswith(check) and " PASS " in line for line in lines), (check, result.output)
    assert "all 10 checks passed" in result.output
    # what a person needs to see in the PASS lines, too
    assert "MQTT CONNECT accepted" in result.output and "3 frames" in result.output
    assert "2 pending" in result.output and "audit chain intact" in result.output


def test_json_is_one_object_with_the_checks(desk: Desk) -> None:
    result = CliRunner().invoke(doctor, ["--config", str(desk.write("good")), "--data-dir", str(desk.data_dir),
                                         "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.output)
    rows = document["checks"]
    assert [set(r) for r in rows] == [{"check", "ok", "detail"}] * 10 and all(r["ok"] for r in rows)
    assert document["ok"] is True


def _bundle_copy(tmp_path: Path) -> Path:
    """A copy of the installed bundle made of links (the files are 40 MB) plus its own manifest."""
    source = Bundle.load().root
    copy = tmp_path / "models"
    copy.mkdir()
    for item in source.iterdir():
        if item.name == "manifest.toml":
            shutil.copy(item, copy / item.name)
        else:
            (copy / item.name).symlink_to(item)
    return copy


def test_a_missing_model_file_fails_the_models_check_naming_it(desk: Desk, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    copy = _bundle_copy(tmp_path)
    (copy / "iris_landmark.tflite").unlink()
    monkeypatch.setenv(ENV_BUNDLE, str(copy))
    result = CliRunner().invoke(doctor, ["--config", str(desk.write("good")), "--data-dir", str(desk.data_dir)])
    assert result.exit_code == 1
    [line] = [line for line in result.output.splitlines() if line.startswith("models")]
    assert "FAIL" in line and "model file missing" in line and "iris_landmark.tflite" in line
    assert "1 of 10 checks failed: models" in result.output


def test_a_model_file_with_the_wrong_hash_fails_and_says_tampered(desk: Desk, tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    copy = _bundle_copy(tmp_path)
    target = copy / "face_detection_short_range.tflite"
    data = bytearray(target.read_bytes())
    data[-1] ^= 0xFF
    target.unlink()
    target.write_bytes(bytes(data))
    monkeypatch.setenv(ENV_BUNDLE, str(copy))
    failed = _failed(run_doctor(desk.write("good"), desk.data_dir))
    assert list(failed) == ["models"]
    assert "hash mismatch" in failed["models"] and "face_detection_short_range.tflite" in failed["models"]
    assert "tampered" in failed["models"]


def test_an_unreachable_broker_fails_with_the_address_and_what_to_check(desk: Desk) -> None:
    port = free_port()  # nothing listens here
    failed = _failed(run_doctor(desk.write("nobroker", mqtt={"host": "127.0.0.1", "port": port}), desk.data_dir,
                                broker_timeout=2))
    assert list(failed) == ["broker"]
    assert f"connection refused by 127.0.0.1:{port}" in failed["broker"] and "[mqtt]" in failed["broker"]


def test_a_station_without_a_broker_address_is_not_provisioned(desk: Desk) -> None:
    failed = _failed(run_doctor(desk.write("unprovisioned", mqtt=None), desk.data_dir))
    assert list(failed) == ["broker"]
    assert failed["broker"].startswith("not provisioned: no [mqtt] host")


def test_a_disk_floor_above_the_free_space_fails_the_disk_check(desk: Desk) -> None:
    failed = _failed(run_doctor(desk.write("fulldisk", store={"floor_bytes": 1 << 60}), desk.data_dir))
    assert list(failed) == ["disk"]
    assert "below the floor of" in failed["disk"] and "[store] floor_bytes" in failed["disk"]


def test_a_wrong_clock_fails_before_tls_does(desk: Desk) -> None:
    early = datetime(2024, 6, 1, tzinfo=timezone.utc)
    checks = _by_name(run_doctor(desk.write("good"), desk.data_dir, now=early))
    assert not checks["clock"].ok
    assert "before 2025" in checks["clock"].detail and "before the model bundle was built" in checks["clock"].detail
    assert "before the station certificate is valid" in checks["clock"].detail


def test_a_key_readable_by_others_fails_with_the_chmod_to_run(desk: Desk) -> None:
    key = desk.data_dir / "keys" / "signing.key"
    key.chmod(0o644)
    try:
        failed = _failed(run_doctor(desk.write("good"), desk.data_dir))
    finally:
        key.chmod(0o600)
    assert list(failed) == ["keys"]
    assert f"chmod 600 {key}" in failed["keys"]


def test_an_edited_audit_entry_fails_the_database_check(desk: Desk, tmp_path: Path) -> None:
    import sqlite3

    data = tmp_path / "data"
    shutil.copytree(desk.data_dir, data)
    with sqlite3.connect(data / "station.db") as conn:  # someone with the file and sqlite3 in hand
        conn.execute("DROP TRIGGER audit_no_update")
        conn.execute("UPDATE audit SET details = '{\"desk\":2}' WHERE action = 'logon'")
    failed = _failed(run_doctor(desk.write("good"), data))
    assert list(failed) == ["database"] and "hash chain breaks" in failed["database"]


def test_the_replay_profile_needs_a_source_and_says_where_to_give_it(desk: Desk) -> None:
    failed = _failed(run_doctor(desk.write("nocamera", camera=None), desk.data_dir))
    assert list(failed) == ["camera"]
    assert "with --camera, or" in failed["camera"] and "[camera] source" in failed["camera"]


def test_no_profile_at_all_fails_profile_and_camera_but_not_the_rest(desk: Desk) -> None:
    config = desk.write("noprofile", station={"profile": ""})
    failed = _failed(run_doctor(config, desk.data_dir))
    assert list(failed) == ["profile", "camera"]
    assert "--device-profile" in failed["profile"] and "[station] device_profile" in failed["profile"]
    assert _failed(run_doctor(config, desk.data_dir, profile="replay")) == {}


def test_nothing_on_the_station_is_changed(desk: Desk) -> None:
    before = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in desk.data_dir.rglob("*")
              if p.is_file() and not p.name.endswith(("-wal", "-shm"))}
    run_doctor(desk.write("good"), desk.data_dir)
    after = {p: (p.stat().st_mtime_ns, p.stat().st_size) for p in desk.data_dir.rglob("*")
             if p.is_file() and not p.name.endswith(("-wal", "-shm"))}
    assert after == before
    assert os.stat(desk.data_dir / "keys").st_mode & 0o777 == 0o700


def test_with_the_sync_agent_connected_the_doctor_does_not_take_its_session(desk: Desk, tmp_path: Path) -> None:
    """The broker makes the certificate CN the client id: a second CONNECT would throw the agent off. With
    the agent's own word that it is connected, doctor only proves TLS and leaves the session alone."""
    data = tmp_path / "data"
    shutil.copytree(desk.data_dir, data)
    config = desk.write("live", keys={k: str(v).replace(str(desk.data_dir), str(data))
                                      for k, v in desk.config["keys"].items()})
    station = factory.Station(STATION, data, config, factory.key(1), factory.key(factory.COUNTY_COMMAND_KEY_SEED))
    agent = factory.AgentThread(station).start()
    try:
        factory.wait_for(lambda: (data / "sync" / "status.json").exists()
                         and json.loads((data / "sync" / "status.json").read_text()).get("connected"),
                         message="the agent's status file")
        log_before = len(desk.broker.logs())
        checks = _by_name(run_doctor(config, data))
        time.sleep(0.3)
        assert agent.agent.ready.is_set(), "the agent lost its connection"
    finally:
        agent.close()
    assert checks["broker"].ok, checks["broker"]
    assert "the sync agent is connected" in checks["broker"].detail and "TLS" in checks["broker"].detail
    assert "already connected" not in desk.broker.logs()[log_before:]  # no session takeover
