"""A gallery worker, enrolment server or station sync agent that cannot work says why in one line, naming the
file and its key,
and a worker whose county matches no registered station warns at start."""

from __future__ import annotations

import logging
from datetime import datetime, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from sync.county.cli import main
from sync.county.gallery.devices import county_mismatch
from sync.county.gallery.store import Device


def _config(tmp_path: Path, *, with_ca: bool) -> Path:
    tls = tmp_path / "tls"
    tls.mkdir()
    for name in ("gallery.crt", "gallery.key") + (("county-ca.crt",) if with_ca else ()):
        (tls / name).write_text("x", encoding="utf-8")
    conf = tmp_path / "county.toml"
    conf.write_text('[broker]\nhost = "127.0.0.1"\nca_file = "tls/county-ca.crt"\ncert_file = "tls/gallery.crt"\n'
                    'key_file = "tls/gallery.key"\n[gallery]\ncounty = "king-county"\n'
                    f'db = "{tmp_path / "g.db"}"\n', encoding="utf-8")
    return conf


def test_receive_names_the_missing_ca_file_and_its_key(tmp_path: Path) -> None:
    conf = _config(tmp_path, with_ca=False)
    result = CliRunner().invoke(main, ["--config", str(conf), "receive", "--config", str(conf)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    assert "[broker] ca_file" in lines[0] and str(tmp_path / "tls" / "county-ca.crt") in lines[0]
    assert "cert_file" not in lines[0]  # only what is wrong
    assert not (tmp_path / "g.db").exists()  # nothing created before the check


def test_enroll_server_names_the_missing_tls_key(tmp_path: Path) -> None:
    (tmp_path / "tls.crt").write_text("x", encoding="utf-8")
    init = CliRunner().invoke(main, ["ca", "init", "--ca-dir", str(tmp_path / "ca"), "--county", "king-county"])
    assert init.exit_code == 0, init.output
    result = CliRunner().invoke(main, ["enroll-server", "--ca-dir", str(tmp_path / "ca"), "--port", "0",
                                       "--tls-cert", str(tmp_path / "tls.crt"), "--tls-key",
                                       str(tmp_path / "tls.key")])
    assert result.exit_code == 2, result.output
    assert str(tmp_path / "tls.key") in result.output and "--tls-key" in result.output


def _device(station: str, county: str, status: str = "active") -> Device:
    return Device(station, county, b"\0" * 32, status, datetime(2026, 1, 1, tzinfo=timezone.utc))  # type: ignore[arg-type]


def test_county_mismatch_names_the_worker_county_and_the_stations_counties() -> None:
    warning = county_mismatch([_device("desk-1", "king-county"), _device("desk-2", "pierce")], "king")
    assert warning is not None
    assert "'king'" in warning and "king-county, pierce" in warning
    assert county_mismatch([_device("desk-1", "king"), _device("desk-2", "pierce")], "king") is None
    assert county_mismatch([], "king") is None  # nothing registered yet: nothing to compare
    assert county_mismatch([_device("desk-1", "king", "revoked")], "king-county") is None


def test_worker_start_logs_a_warning_when_its_county_has_no_station(tmp_path: Path,
                                                                    caplog: pytest.LogCaptureFixture) -> None:
    from sync.county.gallery.cli import _log_station_match
    from sync.county.gallery.store import open_store

    store = open_store(tmp_path / "g.db")
    try:
        store.register_device("desk-1", "king-county", bytes(range(32)))
        with caplog.at_level(logging.INFO):
            _log_station_match(store, "king")
            warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
            assert len(warnings) == 1 and "'king'" in warnings[0] and "king-county" in warnings[0]
            caplog.clear()
            _log_station_match(store, "king-county")
            assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    finally:
        store.close()


def test_station_sync_names_the_missing_tls_file_and_its_key(tmp_path: Path) -> None:
    import subprocess
    import sys

    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    keys = tmp_path / "data" / "keys"
    keys.mkdir(parents=True)
    signing = keys / "signing.key"
    signing.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    signing.chmod(0o600)
    (keys / "tls.crt").write_text("x", encoding="utf-8")
    (keys / "tls.key").write_text("x", encoding="utf-8")
    conf = tmp_path / "station.toml"
    conf.write_text('[station]\ncounty = "king-county"\nstation = "desk-1"\n[mqtt]\nhost = "127.0.0.1"\n',
                    encoding="utf-8")
    done = subprocess.run([str(Path(sys.executable).parent / "booking-station"), "--config", str(conf), "sync",
                           "--data-dir", str(tmp_path / "data")], capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert f"[keys] ca_cert {keys / 'ca.crt'} does not exist" in done.stderr
    assert "tls_cert" not in done.stderr
