"""Fleet health: the gallery keeps each station's latest status and `booking-gallery fleet` judges it.

Without a broker: the ``station_status`` table (SQLite, and PostgreSQL when reachable), the receiver's
status decision (the topic's station must be the body's, the last will keeps the last known figures, a
retained copy does not make a silent station look fresh) and the flags. With a real Mosquitto: two
stations running the real sync agent publish their retained status, the real gallery receiver keeps
it, and ``fleet`` shows both (and a registered station never heard from) and exits 1 when one is flagged.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from sync.county.gallery.fleet import FleetThresholds, fleet_report, render_table
from sync.county.gallery.fleet_cli import fleet
from sync.county.gallery.receiver import GalleryReceiver, ReceiverConfig, status_subscription
from sync.county.gallery.store import GalleryStore, SQLiteStore
from tests.sync import factory
from tests.sync.broker import MosquittoBroker, start_gallery, stop_gallery
from tests.sync.conftest import COUNTY

NOW = dt.datetime(2026, 3, 1, 15, 0, tzinfo=dt.timezone.utc)


def _raw(n: int) -> bytes:
    return factory.key(n).public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def status(station: str = "st-01", state: str = "online", *, at: dt.datetime = NOW, **changes: Any) -> dict[str, Any]:
    """A status body as the sync agent publishes it."""
    body: dict[str, Any] = {
        "v": 1, "state": state, "county": COUNTY, "station": station, "software": "booking-station 0.1.0",
        "at": at.isoformat(), "queue": {"pending": 0, "delivered": 12, "rejected": 0}, "in_flight": 0,
        "oldest_pending_age_s": None, "last_ack_at": (at - dt.timedelta(minutes=1)).isoformat(), "alarms": [],
    }
    body.update(changes)
    return body


def will(station: str = "st-01") -> dict[str, Any]:
    """The agent's last will: no figures, only who and that the connection is gone."""
    return {"v": 1, "state": "offline", "county": COUNTY, "station": station, "software": "booking-station 0.1.0",
            "reason": "connection lost"}


@pytest.fixture
def store(gallery_store: GalleryStore) -> GalleryStore:
    return gallery_store


# ------------------------------------------------------------------------------------ the table
def test_station_status_keeps_the_latest_body_per_station(store: GalleryStore) -> None:
    store.put_station_status("st-01", COUNTY, status(at=NOW - dt.timedelta(minutes=5)), received_at=NOW)
    store.put_station_status("st-02", COUNTY, status("st-02"), received_at=NOW)
    later = status(queue={"pending": 3, "delivered": 12, "rejected": 1}, alarms=["record_rejected"])
    store.put_station_status("st-01", COUNTY, later, received_at=NOW + dt.timedelta(seconds=30))
    got = store.get_station_status("st-01")
    assert got is not None and got.body == later and got.state == "online"
    assert got.reported_at == NOW and got.received_at == NOW + dt.timedelta(seconds=30)
    assert [s.station for s in store.list_station_status()] == ["st-01", "st-02"]
    assert store.get_station_status("st-99") is None


def test_an_existing_gallery_database_gains_the_table_when_opened(tmp_path: Path) -> None:
    """Schema 1 shipped without station_status: opening an old file adds it and keeps everything."""
    import sqlite3

    path = tmp_path / "old.db"
    SQLiteStore(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("DROP TABLE station_status")
        conn.execute("INSERT INTO devices VALUES ('st-01', 'king', ?, 'active', '2026-01-01T00:00:00+00:00', NULL)",
                     (_raw(1),))
    store = SQLiteStore(path)
    try:
        store.put_station_status("st-01", COUNTY, status(), received_at=NOW)
        assert store.get_station_status("st-01") is not None and store.get_device("st-01") is not None
    finally:
        store.close()


# ------------------------------------------------------------------------------ the receiver
@pytest.fixture
def receiver(tmp_path: Path) -> Iterator[GalleryReceiver]:
    store = SQLiteStore(tmp_path / "g.db")
    store.register_device("st-01", COUNTY, _raw(1))
    clock = {"now": NOW}
    config = ReceiverConfig(county=COUNTY, ca_file="ca", cert_file="c", key_file="k")
    r = GalleryReceiver(config, store, clock=lambda: clock["now"])
    r.clock_value = clock  # type: ignore[attr-defined]
    yield r
    store.close()


def _send(r: GalleryReceiver, body: dict[str, Any] | bytes, station: str = "st-01", *, retained: bool = False,
          county: str = COUNTY) -> Any:
    payload = body if isinstance(body, bytes) else json.dumps(body).encode()
    return r.handle_status(f"booking/v1/{county}/{station}/status", payload, retained=retained)


def test_the_receiver_keeps_a_valid_status_as_the_stations_latest(receiver: GalleryReceiver) -> None:
    assert _send(receiver, status()).result == "stored"
    kept = receiver.store.get_station_status("st-01")
    assert kept is not None and kept.body == status() and kept.received_at == NOW
    assert status_subscription(COUNTY) == "booking/v1/king/+/status"


@pytest.mark.parametrize(
    ("payload", "station", "reason"),
    [
        (json.dumps(status("st-02")).encode(), "st-01", "status_mismatch"),  # a body speaking for another station
        (json.dumps(status(county="pierce")).encode(), "st-01", "status_mismatch"),
        (b"{not json", "st-01", "bad_status"),
        (json.dumps(status(v=2)).encode(), "st-01", "bad_status"),
        (json.dumps(status(state="asleep")).encode(), "st-01", "bad_status"),
        (json.dumps(status(queue={"pending": "many"})).encode(), "st-01", "bad_status"),
        (json.dumps(status(disk={"free_bytes": "lots", "floor_bytes": 0})).encode(), "st-01", "bad_status"),
        (json.dumps(status(disk={"free_bytes": -1, "floor_bytes": 0})).encode(), "st-01", "bad_status"),
        (json.dumps(status(disk=512)).encode(), "st-01", "bad_status"),
        (json.dumps([1, 2]).encode(), "st-01", "bad_status"),
        (b"{" + b" " * 70_000 + b"}", "st-01", "oversize"),
    ],
)
def test_a_bad_or_mismatched_status_is_refused_logged_and_not_kept(receiver: GalleryReceiver, payload: bytes,
                                                                    station: str, reason: str) -> None:
    out = _send(receiver, payload, station)
    assert (out.result, out.reason) == ("rejected", reason)
    assert receiver.store.get_station_status("st-01") is None
    [rejection] = receiver.store.list_rejections()
    assert rejection.reason == reason and rejection.topic == f"booking/v1/{COUNTY}/{station}/status"
    assert rejection.station == station


def test_a_status_for_another_county_is_refused(receiver: GalleryReceiver) -> None:
    out = _send(receiver, status(county="pierce"), county="pierce")
    assert (out.result, out.reason) == ("rejected", "bad_topic")


def test_the_last_will_marks_offline_and_keeps_the_last_known_figures(receiver: GalleryReceiver) -> None:
    _send(receiver, status(queue={"pending": 4, "delivered": 9, "rejected": 0}))
    receiver.clock_value["now"] = NOW + dt.timedelta(minutes=3)  # type: ignore[attr-defined]
    assert _send(receiver, will()).result == "stored"
    kept = receiver.store.get_station_status("st-01")
    assert kept is not None and kept.state == "offline" and kept.body["reason"] == "connection lost"
    assert kept.body["queue"] == {"pending": 4, "delivered": 9, "rejected": 0}
    assert kept.reported_at == NOW  # the figures are as of the last report, not of the will
    assert kept.received_at == NOW + dt.timedelta(minutes=3)


def test_a_retained_copy_never_makes_a_silent_station_look_fresh(receiver: GalleryReceiver) -> None:
    _send(receiver, status())
    receiver.clock_value["now"] = NOW + dt.timedelta(hours=2)  # type: ignore[attr-defined]
    # the gallery restarts and the broker hands it the same retained status again
    assert _send(receiver, status(), retained=True).result == "unchanged"
    assert receiver.store.get_station_status("st-01").received_at == NOW  # type: ignore[union-attr]
    # a retained status the gallery missed while it was down counts from the station's own time
    missed = status(at=NOW + dt.timedelta(minutes=10), queue={"pending": 1, "delivered": 12, "rejected": 0})
    assert _send(receiver, missed, retained=True).result == "stored"
    kept = receiver.store.get_station_status("st-01")
    assert kept is not None and kept.received_at == NOW + dt.timedelta(minutes=10)


def test_an_empty_retained_message_clears_nothing_we_know(receiver: GalleryReceiver) -> None:
    _send(receiver, status())
    assert _send(receiver, b"", retained=True).result == "cleared"
    assert receiver.store.get_station_status("st-01") is not None


# -------------------------------------------------------------------------------- the flags
def test_fleet_flags_stale_offline_unhealthy_revoked_and_unregistered(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "g.db")
    for n, name in enumerate(["ok", "never", "silent", "down", "sick", "gone", "stolen"], start=1):
        store.register_device(name, COUNTY, _raw(n), now=NOW - dt.timedelta(days=30))
    put = store.put_station_status
    put("ok", COUNTY, status("ok"), received_at=NOW - dt.timedelta(seconds=40))
    put("silent", COUNTY, status("silent", at=NOW - dt.timedelta(minutes=37)),
        received_at=NOW - dt.timedelta(minutes=37))
    put("down", COUNTY, {**status("down"), **will("down")}, received_at=NOW - dt.timedelta(minutes=2))
    put("sick", COUNTY, status("sick", alarms=["disk_low", "record_rejected"], oldest_pending_age_s=7200.0,
                               queue={"pending": 5, "delivered": 40, "rejected": 2}), received_at=NOW)
    put("gone", COUNTY, {**status("gone"), **will("gone")}, received_at=NOW - dt.timedelta(days=2))
    store.revoke_device("gone", now=NOW - dt.timedelta(days=1))
    store.revoke_device("stolen", now=NOW - dt.timedelta(hours=1))
    put("stolen", COUNTY, status("stolen"), received_at=NOW - dt.timedelta(minutes=1))  # still talking
    put("stranger", COUNTY, status("stranger"), received_at=NOW)  # a certificate the registry never saw
    rows = {h.station: h for h in fleet_report(store, now=NOW, thresholds=FleetThresholds())}
    store.close()

    assert set(rows) == {"ok", "never", "silent", "down", "sick", "gone", "stolen", "stranger"}
    assert not rows["ok"].flagged and rows["ok"].state == "online" and rows["ok"].queue["delivered"] == 12
    assert rows["never"].state == "never" and rows["never"].stale == [
        "never reported a status (not provisioned, never started, or cannot reach the broker)"]
    assert rows["silent"].stale == ["no status for 37 min (more than 10 min)"]
    assert rows["down"].stale == ["offline (connection lost), last heard 2 min ago"]
    assert rows["down"].queue == {"pending": 0, "delivered": 12, "rejected": 0}  # last known, kept
    sick = rows["sick"]
    assert not sick.stale and sick.unhealthy == [
        "alarms: disk_low, record_rejected",
        "2 records rejected by the gallery, kept on the station for review",
        "oldest pending record has waited 2.0 h (more than 60 min)"]
    assert rows["gone"].registry == "revoked" and not rows["gone"].flagged  # revoked and quiet: the end state
    assert rows["stolen"].registry == "revoked" and rows["stolen"].flagged
    assert "still reporting online" in rows["stolen"].unhealthy[0] and "reload mosquitto" in rows["stolen"].unhealthy[0]
    assert rows["stranger"].registry == "unregistered" and "not in the device registry" in rows["stranger"].unhealthy[0]

    text = "\n".join(render_table(sorted(rows.values(), key=lambda h: h.station), NOW))
    assert "8 stations: 2 ok, 6 flagged" in text
    assert "silent: STALE: no status for 37 min" in text and "sick: UNHEALTHY: alarms: disk_low" in text


def test_tighter_thresholds_flag_sooner(tmp_path: Path) -> None:
    store = SQLiteStore(tmp_path / "g.db")
    store.register_device("st-01", COUNTY, _raw(1))
    store.put_station_status("st-01", COUNTY, status(oldest_pending_age_s=400.0), received_at=NOW - dt.timedelta(
        minutes=3))
    relaxed = fleet_report(store, now=NOW)
    strict = fleet_report(store, now=NOW, thresholds=FleetThresholds(dt.timedelta(minutes=2), dt.timedelta(minutes=5)))
    store.close()
    assert not relaxed[0].flagged
    assert strict[0].stale and strict[0].unhealthy


def test_fleet_command_exit_status_and_json(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    store = SQLiteStore(db)
    store.register_device("st-01", COUNTY, _raw(1))
    now = dt.datetime.now(dt.timezone.utc)
    store.put_station_status("st-01", COUNTY, status(at=now), received_at=now - dt.timedelta(minutes=1))
    store.close()
    ok = CliRunner().invoke(fleet, ["--db", str(db), "--json"])
    assert ok.exit_code == 0, ok.output
    doc = json.loads(ok.output)
    [row] = doc["stations"]
    assert doc["flagged"] == 0
    assert row["station"] == "st-01" and row["flagged"] is False and row["queue"]["delivered"] == 12
    assert set(row) >= {"state", "software", "queue", "oldest_pending_age_s", "last_ack_at", "alarms", "last_seen",
                        "stale", "unhealthy", "registry"}
    stale = CliRunner().invoke(fleet, ["--db", str(db), "--stale-after", "0.5"])
    assert stale.exit_code == 1 and "st-01: STALE: no status for" in stale.output
    SQLiteStore(tmp_path / "empty.db").close()
    empty = CliRunner().invoke(fleet, ["--db", str(tmp_path / "empty.db")])
    assert empty.exit_code == 0 and "No stations registered." in empty.output
    missing = CliRunner().invoke(fleet, ["--db", str(tmp_path / "none.db")])
    assert missing.exit_code == 2 and f"the gallery database {tmp_path / 'none.db'} does not exist" in missing.output
    assert not (tmp_path / "none.db").exists()
    broken = tmp_path / "broken.db"
    broken.write_bytes(b"this is not a database" * 100)
    bad = CliRunner().invoke(fleet, ["--db", str(broken)])
    assert bad.exit_code == 2 and "is not a gallery database" in bad.output


# ----------------------------------------------------------------------- with a real broker
def _fleet(db: Path) -> tuple[int, dict[str, dict[str, Any]]]:
    result = CliRunner().invoke(fleet, ["--db", str(db), "--json"])
    assert result.exit_code in (0, 1), result.output
    return result.exit_code, {row["station"]: row for row in json.loads(result.output)["stations"]}


def test_two_stations_report_through_the_broker_and_fleet_shows_them(tmp_path: Path, pki: Any,
                                                                     broker: MosquittoBroker) -> None:
    """Real agents, real receiver: statuses arrive retained, are kept per station and judged."""
    stations = [factory.make_station(tmp_path / name, pki, broker.host, broker.port, name=name,
                                     signing_key=factory.key(n), **factory.FAST)
                for n, name in ((1, "st-01"), (2, "st-02"))]
    db = tmp_path / "gallery.db"
    gallery = start_gallery(broker, db, {s.name: s.signing_key for s in stations})
    gallery.store.register_device("st-03", COUNTY, _raw(3))  # provisioned, never switched on
    stores = [s.open_store() for s in stations]
    for n, (station, store) in enumerate(zip(stations, stores, strict=True)):
        for i in range(n + 1):
            factory.store_booking(store, 10 * n + i, station=station.name)
    agents = [factory.AgentThread(s).start() for s in stations]
    try:
        def reported(name: str, delivered: int) -> bool:
            kept = gallery.store.get_station_status(name)
            return kept is not None and kept.state == "online" and kept.body["queue"]["delivered"] == delivered

        factory.wait_for(lambda: reported("st-01", 1) and reported("st-02", 2), timeout=30,
                         message="both stations' statuses with their deliveries")
        code, rows = _fleet(db)
        assert code == 1  # st-03 has never been heard from
        assert set(rows) == {"st-01", "st-02", "st-03"}
        for name, delivered in (("st-01", 1), ("st-02", 2)):
            row = rows[name]
            assert row["state"] == "online" and not row["flagged"], row
            assert row["software"].startswith("booking-station ") and row["last_ack_at"] is not None
            assert row["queue"] == {"pending": 0, "delivered": delivered, "rejected": 0}
        assert rows["st-03"]["state"] == "never" and rows["st-03"]["flagged"]

        agents[1].close()  # a clean stop: the agent says offline ("stopped") before it goes
        factory.wait_for(lambda: getattr(gallery.store.get_station_status("st-02"), "state", "") == "offline",
                         message="st-02 offline")
        code, rows = _fleet(db)
        assert code == 1 and rows["st-02"]["flagged"]
        [why] = rows["st-02"]["stale"]
        assert why.startswith("offline (stopped)")
        assert not rows["st-01"]["flagged"]

        # A restarted gallery gets every retained status again; it must not refresh "last seen".
        seen = gallery.store.get_station_status("st-02").received_at  # type: ignore[union-attr]
        stop_gallery(gallery)
        gallery = start_gallery(broker, db, {})
        time.sleep(1.0)  # the retained statuses arrive right after the subscription
        assert gallery.store.get_station_status("st-02").received_at == seen  # type: ignore[union-attr]
    finally:
        for agent in agents:
            if agent.thread.is_alive():
                agent.close()
        for store in stores:
            store.close()
        stop_gallery(gallery)


# ------------------------------------------------------------------------------------ disk figures
def test_disk_figures_are_kept_shown_and_flag_a_disk_under_its_floor(receiver: GalleryReceiver) -> None:
    """A station of this release sends ``disk``; one under its floor is flagged; an older station without the
    figures still parses and shows "unknown"; the last will keeps the last known figures."""
    store = receiver.store
    store.register_device("st-02", COUNTY, _raw(2))
    store.register_device("st-03", COUNTY, _raw(3))
    roomy = {"free_bytes": 40 * 2**30, "floor_bytes": 512 * 2**20}
    assert _send(receiver, status(disk=roomy)).result == "stored"
    assert _send(receiver, status("st-02", disk={"free_bytes": 100 * 2**20, "floor_bytes": 512 * 2**20}),
                 "st-02").result == "stored"
    assert _send(receiver, status("st-03"), "st-03").result == "stored"  # an older station: no disk key
    assert _send(receiver, will()).result == "stored"
    rows = {h.station: h for h in fleet_report(store, now=NOW)}

    ok, low, old = rows["st-01"], rows["st-02"], rows["st-03"]
    assert (ok.disk_free_bytes, ok.disk_floor_bytes, ok.disk_low) == (40 * 2**30, 512 * 2**20, False)
    assert ok.disk_text() == "40.0 GiB free (floor 512.0 MiB)" and ok.state == "offline"  # kept under the will
    assert low.disk_low is True and low.disk_text() == "100.0 MiB free (floor 512.0 MiB), LOW"
    assert low.unhealthy == ["disk: 100.0 MiB free (floor 512.0 MiB), LOW: the station refuses new bookings until "
                             "space is freed (let its queue deliver, or clear the disk)"]
    assert (old.disk_free_bytes, old.disk_floor_bytes, old.disk_low) == (None, None, None)
    assert old.disk_text() == "unknown" and not old.flagged
    assert old.as_dict()["disk"] == {"free_bytes": None, "floor_bytes": None, "low": None}
    assert low.as_dict()["disk"] == {"free_bytes": 100 * 2**20, "floor_bytes": 512 * 2**20, "low": True}
    table = render_table(sorted(rows.values(), key=lambda h: h.station), NOW)
    assert "disk free" in table[0]
    assert [line.split()[0] for line in table[1:4]] == ["st-01", "st-02", "st-03"]
    assert "40.0 GiB" in table[1] and "100.0 MiB" in table[2] and "unknown" in table[3]


def test_fleet_json_carries_the_disk_figures(tmp_path: Path) -> None:
    db = tmp_path / "g.db"
    store = SQLiteStore(db)
    store.register_device("st-01", COUNTY, _raw(1))
    now = dt.datetime.now(dt.timezone.utc)
    store.put_station_status("st-01", COUNTY, status(at=now, disk={"free_bytes": 2**30, "floor_bytes": 2**29}),
                             received_at=now)
    store.close()
    out = CliRunner().invoke(fleet, ["--db", str(db), "--json"])
    assert out.exit_code == 0, out.output
    [row] = json.loads(out.output)["stations"]
    assert row["disk"] == {"free_bytes": 2**30, "floor_bytes": 2**29, "low": False}
    text = CliRunner().invoke(fleet, ["--db", str(db)])
    assert text.exit_code == 0 and "1.0 GiB" in text.output.splitlines()[1]
