"""The sync agent's parts without a broker: config, the stored record on the wire, acks, commands,
status. The network-facing behaviour is proven in test_e2e_agent.py and test_faults_agent.py."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest
from click.testing import CliRunner

from appliance.store import Store, audit, new_record_id
from appliance.store.records import check_record_id
from sync.county.gallery.store import SQLiteStore
from sync.protocol import mqtt, wire
from sync.protocol.enroll import default_command_kid
from sync.station.agent import (
    ALARM_ACK_CONFLICT,
    ALARM_GALLERY_REFUSING,
    ALARM_RECORD_REJECTED,
    SyncAgent,
    SyncSetupError,
    Unsendable,
    encode_stored,
    load_signing_key,
    to_wire_record,
)
from sync.station.cli import main as sync_cli
from sync.station.config import SyncConfig, SyncConfigError, from_document, load_agent_settings, load_sync_config
from sync.station.remote import ALLOWED_SETTINGS, CommandHandler, load_command_keys, load_remote_settings
from tests.sync import factory
from tests.sync.broker import PKI, free_port

COUNTY, STATION = "king", "st-01"
KID = default_command_kid(COUNTY)
NOW = dt.datetime.now(dt.timezone.utc)


@pytest.fixture
def station(tmp_path: Path, pki: PKI) -> factory.Station:
    # Nothing listens on this port: the agent's network thread keeps backing off, harmlessly.
    return factory.make_station(tmp_path / "st", pki, "127.0.0.1", free_port(), **factory.FAST)


@pytest.fixture
def store(station: factory.Station) -> Iterator[Store]:
    s = station.open_store()
    yield s
    s.close()


@pytest.fixture
def agent(station: factory.Station) -> Iterator[SyncAgent]:
    """An agent set up in this thread (store, keys), with no broker to talk to: its internals are
    driven directly, the way the agent thread drives them."""
    a = SyncAgent(station.config(), station.data_dir)
    a.setup()
    yield a
    a.shutdown()


# ------------------------------------------------------------------------------------ config
def test_config_comes_from_the_provisioned_sections(station: factory.Station) -> None:
    cfg = station.config()
    keys = station.data_dir / "keys"
    assert (cfg.county, cfg.station, cfg.host, cfg.protocol) == (COUNTY, STATION, "127.0.0.1", "5")
    assert (cfg.ca_file, cfg.cert_file, cfg.key_file) == (str(keys / "ca.crt"), str(keys / "tls.crt"),
                                                           str(keys / "tls.key"))
    assert cfg.signing_key == str(keys / "signing.key")
    assert cfg.command_keys == {KID: str(keys / "county-command.pub")}
    assert cfg.ack_timeout == factory.FAST["ack_timeout"]


def test_sync_section_overrides_and_defaults_to_the_data_dir_layout(tmp_path: Path) -> None:
    doc = {"sync": {"county": "pierce", "station": "desk-2", "host": "mqtt.example", "port": 8884,
                    "protocol": "3.1.1", "max_in_flight": 3, "command_keys": {"county:pierce:2026": "/k.pub"}}}
    cfg = from_document(doc, tmp_path)
    assert (cfg.county, cfg.station, cfg.host, cfg.port, cfg.protocol, cfg.max_in_flight) == (
        "pierce", "desk-2", "mqtt.example", 8884, "3.1.1", 3)
    assert cfg.signing_key == str(tmp_path / "keys" / "signing.key")
    assert cfg.command_keys == {"county:pierce:2026": "/k.pub"}
    assert not cfg.v5


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"hots": "x"}, "unknown key(s) in [sync]: hots"),
        ({"protocol": "4"}, "[sync] protocol = '4': must be '5' or '3.1.1'"),
        ({"station": "St 1"}, "not a slug"),
        ({"max_in_flight": 0}, "[sync] max_in_flight = 0: must be at least 1"),
        ({"ack_timeout": -1}, "[sync] ack_timeout = -1: must be above 0"),
        ({"ack_timeout": "2"}, "[sync] ack_timeout = '2': must be a number"),
        ({"retry_base": 10, "retry_cap": 5}, "[sync] retry_cap must not be below retry_base"),
        ({"port": 70000}, "[sync] port = 70000: must be at most 65535"),
        ({"command_keys": {"k": 3}}, "[sync] command_keys.k = 3: must be text"),
    ],
)
def test_bad_sync_settings_are_refused_with_the_key_named(tmp_path: Path, table: dict[str, Any], message: str) -> None:
    doc = {"station": {"county": "king", "station": "st-01"}, "mqtt": {"host": "h"}, "sync": table}
    with pytest.raises(SyncConfigError, match=re.escape(message)):
        from_document(doc, tmp_path)


def test_an_unprovisioned_station_does_not_start(tmp_path: Path) -> None:
    (tmp_path / "station.toml").write_text('[station]\ncounty = "king"\nstation = "st-01"\n')
    with pytest.raises(SyncConfigError, match="no host"):
        load_sync_config(tmp_path / "station.toml", tmp_path)
    with pytest.raises(SyncConfigError, match="not found"):
        load_sync_config(tmp_path / "missing.toml", tmp_path)


def test_sync_config_is_a_section_of_the_station_model() -> None:
    """appliance.config validates [sync] with the same SyncConfig model the agent uses."""
    from appliance.config import StationConfig

    cfg = SyncConfig(**{"protocol": "3.1.1", "max_in_flight": 5})
    assert cfg.county == "" and cfg.max_in_flight == 5
    assert StationConfig.model_validate({"sync": {"max_in_flight": 5}}).sync == SyncConfig(max_in_flight=5)


def test_signing_key_must_be_private_and_ed25519(station: factory.Station) -> None:
    path = station.data_dir / "keys" / "signing.key"
    assert isinstance(load_signing_key(path), type(station.signing_key))
    path.chmod(0o644)
    with pytest.raises(SyncSetupError, match="readable by others"):
        load_signing_key(path)
    with pytest.raises(SyncSetupError, match="does not exist"):
        load_signing_key(path.with_name("nope.key"))


def test_missing_tls_files_stop_the_agent_at_start(station: factory.Station) -> None:
    crt = station.data_dir / "keys" / "tls.crt"
    crt.write_text("not a certificate", encoding="utf-8")
    with pytest.raises(SyncSetupError, match="TLS files unusable"):
        SyncAgent(station.config(), station.data_dir).setup()
    crt.unlink()  # a missing file is named with its [keys] key
    with pytest.raises(SyncSetupError, match=r"\[keys\] tls_cert .*tls\.crt does not exist"):
        SyncAgent(station.config(), station.data_dir).setup()


# ---------------------------------------------------------------------------- the wire record
def test_record_ids_of_store_and_wire_are_both_uuid7_and_interchangeable(store: Store) -> None:
    for _ in range(50):
        assert wire.check_uuid7(new_record_id())
        assert check_record_id(wire.uuid7())
    rid = factory.store_booking(store, 1, record_id=wire.uuid7())
    assert store.load_record(rid).record_id == rid


def test_stored_record_maps_field_by_field(store: Store) -> None:
    from appliance.store import Booking, Capture

    jpeg, w, h = factory.small_face("img12.jpg", 80)
    captures = [
        Capture.from_jpeg("frontal", jpeg, w, h, "ofc-9", quality={"yaw": -1.25, "passed": False, "failed": ["yaw"]},
                          template=[0.1, -0.2, 0.3], template_model="dlib-resnet-v1@1",
                          override_reason="subject would not face the camera"),
        Capture.from_jpeg("smt", jpeg, w, h, "ofc-9", smt_description="tattoo, left forearm"),
    ]
    booking = Booking("WA0170000", "2026-000777", "ofc-9", factory.T0, STATION)
    rid = store.save_booking(booking, captures)
    rec = to_wire_record(store.load_record(rid), county=COUNTY, station=STATION)
    assert (rec.record_id, rec.county, rec.station) == (rid, COUNTY, STATION)
    assert (rec.booking.ori, rec.booking.booking_number, rec.booking.operator, rec.booking.captured_at) == (
        "WA0170000", "2026-000777", "ofc-9", factory.T0)
    frontal, smt = rec.captures
    assert (frontal.pose, frontal.jpeg, frontal.width, frontal.height) == ("frontal", jpeg, w, h)
    assert frontal.sha256 == bytes.fromhex(captures[0].sha256)
    assert frontal.override_reason == "subject would not face the camera"
    assert frontal.quality == {"yaw": -1.25, "passed": False, "failed": ["yaw"]}
    assert frontal.template is not None and frontal.template.model == "dlib-resnet-v1@1"
    assert frontal.template.floats() == pytest.approx([0.1, -0.2, 0.3], rel=1e-6)
    assert (smt.pose, smt.description, smt.template) == ("smt", "tattoo, left forearm", None)


def test_every_encoding_of_a_stored_record_is_the_same_bytes(station: factory.Station, tmp_path: Path) -> None:
    """A resend after a restart must be a true repeat (gallery: duplicate), never a replay."""
    s1 = station.open_store()
    rid = factory.store_booking(s1, 3, profiles=True)
    args: dict[str, Any] = {"county": COUNTY, "station": STATION, "key": station.signing_key,
                            "max_bytes": wire.DEFAULT_MAX_RECORD_BYTES}
    first = encode_stored(s1, rid, **args)
    s1.close()
    s2 = station.open_store()
    second = encode_stored(s2, rid, **args)
    s2.close()
    assert first == second
    gallery = SQLiteStore(tmp_path / "g.db")
    gallery.register_device(STATION, COUNTY, station.signing_key.public_key().public_bytes_raw())
    lookup = lambda kid: station.signing_key.public_key()  # noqa: E731
    assert gallery.insert_record(wire.verify_record(first, lookup), first) == "stored"
    assert gallery.insert_record(wire.verify_record(second, lookup), second) == "duplicate"
    gallery.close()


def test_records_that_cannot_be_sent_as_stored_are_named(store: Store) -> None:
    args = {"county": COUNTY, "station": STATION, "key": factory.key(1)}
    deep = factory.too_deep_quality()
    from appliance.store import Booking, Capture

    jpeg, w, h = factory.small_face()
    rid = store.save_booking(Booking("WA0170000", "B-1", "o", factory.T0, STATION),
                             [Capture.from_jpeg("frontal", jpeg, w, h, "o", quality=deep)])
    with pytest.raises(Unsendable, match="nested deeper") as err:
        encode_stored(store, rid, max_bytes=wire.DEFAULT_MAX_RECORD_BYTES, **args)
    assert err.value.code == "bad_value"
    ok = factory.store_booking(store, 2)
    with pytest.raises(Unsendable) as err:
        encode_stored(store, ok, max_bytes=2000, **args)
    assert err.value.code == "oversize"
    other = factory.store_booking(store, 3, station="st-02")
    with pytest.raises(Unsendable) as err:
        encode_stored(store, other, max_bytes=wire.DEFAULT_MAX_RECORD_BYTES, **args)
    assert err.value.code == "station_mismatch"


def test_a_record_made_by_the_capture_session_can_be_sent(station: factory.Station) -> None:
    from appliance.capture.session import CaptureStation
    from appliance.config import StationConfig

    capture_station = CaptureStation.from_config(StationConfig(), data_dir=station.data_dir, station_id=STATION,
                                                 store_options={"floor_bytes": 0})
    session = capture_station.start_booking("WA0170000", "2026-000901", "ofc-1187")
    session.open_camera(f"replay:{factory.FACES / 'img1.jpg'}")
    session.select_pose("frontal")
    review = session.capture()
    session.accept(override_reason=None if review.passed else "test image")
    rid = session.save()
    session.close()
    store = station.open_store()
    try:
        payload = encode_stored(store, rid, county=COUNTY, station=STATION, key=station.signing_key,
                                max_bytes=wire.DEFAULT_MAX_RECORD_BYTES)
    finally:
        store.close()
    public = station.signing_key.public_key()
    record = wire.decode_record(payload, lambda kid: public if kid == STATION else None)
    assert record.record_id == rid
    frontal = next(c for c in record.captures if c.pose == "frontal")
    assert frontal.template is not None and frontal.template.dim == 128
    assert "measures" in frontal.quality["report"]


# --------------------------------------------------------------------------------------- acks
def _ack(record_id: str | None, status: str, reason: str | None = None) -> bytes:
    return wire.encode_ack(wire.Ack(record_id, status, reason, "detail text" if reason else None))


def test_stored_then_duplicate_ack_marks_delivered_once(agent: SyncAgent, store: Store) -> None:
    rid = factory.store_booking(store, 1)
    agent._on_ack(_ack(rid, "stored"), None)
    first = store.queue("delivered")
    agent._on_ack(_ack(rid, "duplicate"), None)
    assert store.queue("delivered") == first
    assert (first[0].record_id, first[0].ack_status) == (rid, "stored")
    assert agent.stats["acks_stored"] == 1 and agent.stats["acks_duplicate"] == 1


def test_a_window_of_acks_is_recorded_in_one_transaction_then_acknowledged_to_the_broker(
        agent: SyncAgent, store: Store) -> None:
    """Acks that arrive together cost one commit (one disk flush), not one each; the broker hears of each
    ack message only after that commit, so a crash before it leaves the records pending (sent again, answered
    duplicate), never delivered without the gallery's word."""
    rids = [factory.store_booking(store, n) for n in range(1, 6)]
    broker_acks: list[int] = []

    class Connection:
        def ack(self, mid: int, qos: int) -> None:
            broker_acks.append(mid)

    connection = Connection()
    agent._conn_gen, agent._conn_client = 7, connection
    statements: list[str] = []
    agent._require_store().conn.set_trace_callback(statements.append)
    for mid, rid in enumerate(rids, 1):
        agent._on_message(7, mqtt.Message(agent.acks_topic, _ack(rid, "stored"), mid=mid, client=connection))
    assert broker_acks == [] and store.queue_counts()["delivered"] == 0  # held for the one transaction
    assert agent.stats["acks_stored"] == 0
    agent._flush_acks()
    assert [s for s in statements if s.strip().upper() == "COMMIT"] == ["COMMIT"]
    assert {e.record_id for e in store.queue("delivered")} == set(rids)
    assert broker_acks == [1, 2, 3, 4, 5] and agent.stats["acks_stored"] == 5
    agent._flush_acks()  # nothing held: no transaction at all
    assert sum(s.strip().upper() == "COMMIT" for s in statements) == 1
    agent._conn_client = None  # not a real connection: shutdown has nothing to say offline on


def test_a_rejection_naming_the_record_marks_it_rejected_keeps_it_and_alarms(agent: SyncAgent, store: Store) -> None:
    rid = factory.store_booking(store, 1)
    agent._on_ack(_ack(rid, "rejected", "replay"), None)
    [entry] = store.queue("rejected")
    assert (entry.record_id, entry.reject_reason) == (rid, "replay: detail text")
    assert store.load_record(rid).record_id == rid  # never deleted
    alarms = {a.name: a.message for a in store.active_alarms()}
    assert rid in alarms[ALARM_RECORD_REJECTED] and "replay" in alarms[ALARM_RECORD_REJECTED]
    [entry_audit] = [e for e in audit.entries(store.conn) if e.action == "delivery_rejected"]
    assert entry_audit.details_dict["record_id"] == rid
    # a later "stored" for it contradicts the gallery's verdict: not applied, a person is alarmed
    agent._on_ack(_ack(rid, "stored"), None)
    assert store.queue("rejected")[0].record_id == rid
    assert ALARM_ACK_CONFLICT in {a.name for a in store.active_alarms()}


def test_a_rejection_without_a_record_id_keeps_everything_pending_and_alarms(agent: SyncAgent, store: Store) -> None:
    rid = factory.store_booking(store, 1)
    agent._on_ack(_ack(None, "rejected", "revoked_device"), None)
    assert store.queue_counts() == {"pending": 1, "delivered": 0, "rejected": 0}
    assert "revoked_device" in {a.name: a.message for a in store.active_alarms()}[ALARM_GALLERY_REFUSING]
    agent._on_ack(_ack(rid, "stored"), None)  # the gallery takes records again: alarm cleared
    assert ALARM_GALLERY_REFUSING not in {a.name for a in store.active_alarms()}


def test_acks_for_unknown_records_and_malformed_acks_change_nothing(agent: SyncAgent, store: Store) -> None:
    rid = factory.store_booking(store, 1)
    agent._on_ack(_ack(wire.uuid7(), "stored"), None)
    agent._on_ack(b'{"v":1,"record_id":"' + rid.encode() + b'","status":"stored"}', None)  # no reason key
    agent._on_ack(b"\xff not json", None)
    assert store.queue_counts()["pending"] == 1
    assert agent.stats["acks_unknown"] == 1 and agent.stats["bad_acks"] == 2


def test_a_failed_attempt_backs_off_within_the_cap(agent: SyncAgent, store: Store) -> None:
    rid = factory.store_booking(store, 1)
    before = dt.datetime.now(dt.timezone.utc)
    for attempts in (0, 5, 30):
        agent._mark_failed(rid, "no ack", attempts)
        entry = store.queue("pending")[0]
        delay = (entry.next_attempt_at - before).total_seconds()
        ceiling = min(agent.config.retry_cap, agent.config.retry_base * 2**attempts)
        assert ceiling / 2 - 0.01 <= delay <= ceiling + 1.0, (attempts, delay)
    assert store.queue("pending")[0].attempts == 3


# ----------------------------------------------------------------------------------- commands
def _command(action: str = "purge", **changes: Any) -> wire.WireCommand:
    base = {"command_id": wire.uuid7(), "county": COUNTY, "station": STATION, "action": action,
            "issued_at": NOW - dt.timedelta(minutes=1), "expires_at": NOW + dt.timedelta(hours=1), "args": {}}
    base.update(changes)
    return wire.WireCommand(**base)  # type: ignore[arg-type]


@pytest.fixture
def handler(station: factory.Station, store: Store) -> CommandHandler:
    keys = load_command_keys(station.config().command_keys)  # type: ignore[attr-defined]
    return CommandHandler(store, county=COUNTY, station=STATION, data_dir=station.data_dir, keys=keys)


def _audited(store: Store, action: str) -> list[dict[str, Any]]:
    return [e.details_dict for e in audit.entries(store.conn) if e.action == action]


def test_a_valid_purge_runs_once_and_is_audited(station: factory.Station, store: Store,
                                                handler: CommandHandler) -> None:
    keep = factory.store_booking(store, 1)
    gone = factory.store_booking(store, 2)
    payload = wire.encode_command(_command(args={"record_id": gone, "reason": "sealed by court order 26-11"}),
                                  station.county_key, kid=KID)
    out = handler.handle(payload)
    assert (out.status, out.result) == ("applied", {"record_ids": [gone], "states": {gone: "pending"}})
    assert [e.record_id for e in store.queue()] == [keep]
    [applied] = _audited(store, "command_applied")
    assert (applied["action"], applied["kid"], applied["args"]["record_id"]) == ("purge", KID, gone)
    assert _audited(store, "purge")[0]["record_ids"] == [gone]
    # QoS 1 may deliver it again; a new handler (a restart) still remembers it
    again = CommandHandler(store, county=COUNTY, station=STATION, data_dir=station.data_dir,
                           keys=handler.keys).handle(payload)
    assert (again.status, again.code) == ("refused", "duplicate")
    assert len(_audited(store, "purge")) == 1


@pytest.mark.parametrize(
    ("changes", "signer", "code"),
    [
        ({}, "forged", "bad_signature"),
        ({}, "old-kid", "unknown_kid"),
        ({"issued_at": NOW - dt.timedelta(days=2), "expires_at": NOW - dt.timedelta(days=1)}, "county", "expired"),
        ({"issued_at": NOW + dt.timedelta(hours=1), "expires_at": NOW + dt.timedelta(hours=2)}, "county",
         "not_yet_valid"),
        ({"station": "st-02"}, "county", "wrong_target"),
        ({"county": "pierce"}, "county", "wrong_target"),
    ],
)
def test_bad_commands_are_refused_audited_and_change_nothing(station: factory.Station, store: Store,
                                                             handler: CommandHandler, changes: dict[str, Any],
                                                             signer: str, code: str) -> None:
    rid = factory.store_booking(store, 1)
    key, kid = {"forged": (factory.key(99), KID), "old-kid": (station.county_key, "county:king:2019"),
                "county": (station.county_key, KID)}[signer]
    payload = wire.encode_command(_command(args={"record_id": rid, "reason": "expunged"}, **changes), key, kid=kid)
    _assert_refused(store, handler, payload, code, rid)


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (lambda k: wire.sign1(b"\xa0", content_type=wire.COMMAND_CONTENT_TYPE, kid=KID, key=k), "missing_field"),
        # a record's COSE_Sign1 (schema 2 frames it with the photos; the envelope alone is the one to replay)
        (lambda k: cbor2.dumps(cbor2.loads(wire.encode_record(factory.record(), k))[0]), "wrong_content_type"),
        (lambda k: wire.encode_record(factory.record(), k), "not_cose_sign1"),
        (lambda k: b"\xff not cbor", "not_cbor"),
    ],
)
def test_malformed_command_payloads_are_refused_and_audited(station: factory.Station, store: Store,
                                                            handler: CommandHandler, payload: Any, code: str) -> None:
    rid = factory.store_booking(store, 1)
    _assert_refused(store, handler, payload(station.county_key), code, rid)


def _assert_refused(store: Store, handler: CommandHandler, payload: bytes, code: str, rid: str) -> None:
    out = handler.handle(payload)
    assert (out.status, out.code) == ("refused", code)
    assert [e.record_id for e in store.queue()] == [rid]
    [refused] = _audited(store, "command_refused")
    assert refused["code"] == code and len(refused["payload_sha256"]) == 64
    assert _audited(store, "command_applied") == [] and _audited(store, "purge") == []


def test_config_commands_change_only_allowed_settings_atomically(station: factory.Station, store: Store,
                                                                 handler: CommandHandler) -> None:
    ok = wire.encode_command(_command("config", args={"settings": {"delivered_image_days": 14, "status_interval": 30}}),
                             station.county_key, kid=KID)
    out = handler.handle(ok)
    assert out.status == "applied"
    assert load_remote_settings(station.data_dir) == {"delivered_image_days": 14.0, "status_interval": 30.0}
    assert out.result == {"changes": {"delivered_image_days": {"old": None, "new": 14.0},
                                      "status_interval": {"old": None, "new": 30.0}}}
    for settings, code in (({"delivered_image_days": 7, "host": "evil.example"}, "setting_not_allowed"),
                           ({"audit_keep_days": 30}, "bad_setting"),
                           ({"delivered_image_days": "7"}, "bad_setting")):
        out = handler.handle(wire.encode_command(_command("config", args={"settings": settings}),
                                                 station.county_key, kid=KID))
        assert (out.status, out.code) == ("refused", code)
    assert load_remote_settings(station.data_dir)["delivered_image_days"] == 14.0  # nothing half-applied
    rotate = handler.handle(wire.encode_command(_command("rotate", args={"target": "signing-key"}),
                                                station.county_key, kid=KID))
    assert (rotate.status, rotate.code) == ("refused", "not_supported")
    assert [d["code"] for d in _audited(store, "command_refused")] == [
        "setting_not_allowed", "bad_setting", "bad_setting", "not_supported"]
    assert set(ALLOWED_SETTINGS) >= {"delivered_image_days", "audit_keep_days", "status_interval"}
    mode = os.stat(station.data_dir / "sync" / "remote-settings.json").st_mode & 0o777
    assert mode == 0o600


# ------------------------------------------------------------------------------------- status
def test_status_command_without_a_running_agent(station: factory.Station, store: Store) -> None:
    factory.store_booking(store, 1)
    runner = CliRunner()
    args = ["status", "--config", str(station.config_path), "--data-dir", str(station.data_dir)]
    r = runner.invoke(sync_cli, [*args, "--json"])
    assert r.exit_code == 1, r.output  # not delivering: monitoring must see a failure
    status = json.loads(r.output)
    assert status["delivering"] is False
    assert status["queue"] == {"pending": 1, "delivered": 0, "rejected": 0}
    assert (status["station"], status["county"], status["agent"]["running"]) == (STATION, COUNTY, False)
    assert status["oldest_pending_age_s"] >= 0 and status["last_ack_at"] is None
    text = runner.invoke(sync_cli, args)
    assert text.exit_code == 1 and "sync agent NOT running" in text.output and "pending 1" in text.output


def test_the_published_status_carries_free_disk_and_the_configured_floor(station: factory.Station) -> None:
    """County IT sees a filling disk on the fleet view: the status has free bytes and the [store] floor the
    agent read from station.toml (not the built-in default), and the gallery's parser accepts it."""
    from appliance.store.space import free_bytes
    from sync.county.gallery.receiver import parse_status

    with station.config_path.open("a", encoding="utf-8") as f:
        f.write("\n[store]\nfloor_bytes = 123456789\n")
    config, options = load_agent_settings(station.config_path, station.data_dir)
    assert options == {"floor_bytes": 123456789}
    a = SyncAgent(config, station.data_dir, store_options=options)
    a.setup()
    try:
        before = free_bytes(station.data_dir)
        body = a._status_body("online")
        after = free_bytes(station.data_dir)
    finally:
        a.shutdown()
    disk = body["disk"]
    assert disk["floor_bytes"] == 123456789
    assert isinstance(disk["free_bytes"], int) and min(before, after) - 2**20 <= disk["free_bytes"] <= max(
        before, after) + 2**20  # the same filesystem's figure, give or take what other tests write meanwhile
    assert body["queue"] == {"pending": 0, "delivered": 0, "rejected": 0}  # queue depth beside it
    parsed = parse_status(json.dumps(body).encode(), county=COUNTY, station=STATION)
    assert parsed["disk"] == disk


def test_commands_take_the_main_groups_config_when_not_given_their_own(station: factory.Station,
                                                                        store: Store) -> None:
    """The systemd unit runs `booking-station --config FILE sync`: the group's --config must be used."""
    from types import SimpleNamespace

    import click

    from sync.station.cli import register

    @click.group()
    @click.option("--config", "config_path")
    @click.pass_context
    def cli(ctx: click.Context, config_path: str) -> None:
        ctx.obj = {"config": SimpleNamespace(source=config_path)}

    register(cli)
    r = CliRunner().invoke(cli, ["--config", str(station.config_path), "status", "--json",
                                 "--data-dir", str(station.data_dir)])
    assert r.exit_code == 1, r.output  # no agent runs here
    assert json.loads(r.output)["station"] == STATION and "config_error" not in json.loads(r.output)


def test_sync_command_that_cannot_start_says_why_in_one_line(station: factory.Station) -> None:
    (station.data_dir / "keys" / "signing.key").unlink()
    r = CliRunner().invoke(sync_cli, ["sync", "--config", str(station.config_path),
                                      "--data-dir", str(station.data_dir)])
    assert r.exit_code == 2 and "Traceback" not in r.output
    assert r.output.strip().splitlines()[-1].startswith("error: record-signing key")


def test_status_command_reports_a_setup_problem_in_one_line(tmp_path: Path) -> None:
    r = CliRunner().invoke(sync_cli, ["status", "--config", str(tmp_path / "none.toml"),
                                      "--data-dir", str(tmp_path / "nowhere")])
    assert r.exit_code == 2 and r.output.startswith("error: data directory") and "Traceback" not in r.output


def test_template_values_that_float32_cannot_hold_are_unsendable(store: Store) -> None:
    from appliance.store import Booking, Capture

    jpeg, w, h = factory.small_face()
    rid = store.save_booking(Booking("WA0170000", "B-9", "o", factory.T0, STATION),
                             [Capture.from_jpeg("frontal", jpeg, w, h, "o", template=[1e300], template_model="m")])
    with pytest.raises(Unsendable):
        encode_stored(store, rid, county=COUNTY, station=STATION, key=factory.key(1),
                      max_bytes=wire.DEFAULT_MAX_RECORD_BYTES)
