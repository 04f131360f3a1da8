"""The generated Mosquitto configuration says what county IT needs, with reasons."""

from __future__ import annotations

from pathlib import Path

import pytest

from sync.county.broker_config import (
    BrokerConfig,
    gallery_identity,
    render_acl,
    render_mosquitto_conf,
    write_broker_files,
)


def _cfg(**kw: object) -> BrokerConfig:
    base: dict[str, object] = {
        "county": "king",
        "cafile": "/etc/mosquitto/ca.crt",
        "certfile": "/etc/mosquitto/broker.crt",
        "keyfile": "/etc/mosquitto/broker.key",
        "acl_file": "/etc/mosquitto/acl",
    }
    return BrokerConfig(**{**base, **kw})  # type: ignore[arg-type]


def _settings(text: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ")
            out.setdefault(key, value)
    return out


def test_conf_sets_security_and_limits_deliberately() -> None:
    text = render_mosquitto_conf(_cfg(crlfile="/etc/mosquitto/crl.pem"))
    s = _settings(text)
    assert s["allow_anonymous"] == "false"
    assert s["require_certificate"] == "true"
    assert s["use_identity_as_username"] == "true"
    assert s["use_username_as_clientid"] == "true"
    assert s["tls_version"] == "tlsv1.2"
    assert s["persistence"] == "true"
    assert s["acl_file"] == "/etc/mosquitto/acl"
    assert s["crlfile"] == "/etc/mosquitto/crl.pem"
    assert int(s["autosave_interval"]) < 1800
    assert int(s["max_queued_messages"]) > 1000
    assert int(s["max_queued_bytes"]) > 0
    assert int(s["max_inflight_messages"]) > 0
    assert int(s["message_size_limit"]) == 16 * 1024 * 1024
    assert s["listener"] == "8883"
    # every limit carries its reason right above it
    lines = text.splitlines()
    for key in ("max_queued_messages", "autosave_interval", "message_size_limit", "max_inflight_messages"):
        i = next(n for n, line in enumerate(lines) if line.startswith(key + " "))
        assert lines[i - 1].startswith("#"), key
    assert "DROP" in text  # the 1000-message default is called out


def test_acl_confines_stations_to_their_own_topics() -> None:
    acl = render_acl(_cfg(gallery_workers=2))
    assert "pattern write booking/v1/king/%u/records" in acl
    assert "pattern write booking/v1/king/%u/status" in acl
    assert "pattern read booking/v1/king/%u/acks" in acl
    assert "pattern read booking/v1/king/%u/commands" in acl
    assert "pattern readwrite" not in acl and "topic readwrite" not in acl and " #\n" not in acl
    for identity in ("gallery.king", "gallery-2.king"):
        block = acl.split(f"user {identity}\n", 1)[1].split("\n\n", 1)[0]
        assert "topic read booking/v1/king/+/records" in block
        assert "topic read $share/gallery/booking/v1/king/+/records" in block
        assert "topic write booking/v1/king/+/acks" in block
        assert "topic write booking/v1/king/+/commands" in block


def test_gallery_identity_can_never_be_a_station_slug() -> None:
    from sync.protocol.topics import is_slug

    assert gallery_identity("king") == "gallery.king"
    assert not is_slug(gallery_identity("king")) and not is_slug(gallery_identity("king", 3))


def test_write_and_validate(tmp_path: Path) -> None:
    cfg = _cfg()
    cfg.acl_file = str(tmp_path / "acl")
    conf, acl = write_broker_files(cfg, tmp_path / "mosquitto.conf")
    assert conf.read_text().startswith("# Mosquitto 2.0")
    assert acl.read_text() == render_acl(cfg)
    with pytest.raises(ValueError):
        _cfg(county="King County")
    with pytest.raises(ValueError):
        _cfg(gallery_workers=0)


def test_missing_mosquitto_fails_with_the_install_command(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from tests.sync import broker as broker_mod

    monkeypatch.setattr(broker_mod, "mosquitto_binary", lambda: None)
    with pytest.raises(broker_mod.BrokerError, match="apt-get update && apt-get install -y mosquitto"):
        broker_mod.MosquittoBroker(tmp_path, None, "king")  # type: ignore[arg-type]
