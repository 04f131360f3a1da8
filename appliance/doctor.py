"""``booking-station doctor``: is this device ready to take bookings and deliver them?

It stays one module (over 500 lines) because each check is one short function and the command reads best
as one list of them, in the order it runs them.

County IT runs it after provisioning and whenever a desk reports trouble. Each check answers one
question with one sentence that names the file, the number or the command that fixes it, because
the person reading it is at a booking desk with a phone to county IT, not at a debugger:

* ``config``   the station config can be read (the sections this command needs);
* ``profile``  the device profile ([station] device_profile or ``--device-profile``) exists and is valid;
* ``camera``   the profile's camera opens and delivers frames (through ``open_camera``, like a booking);
* ``models``   the model bundle's files match their manifest hashes, the profile's embedding variant
               is in it, and a TFLite runtime is installed;
* ``clock``    the clock is plausible: year 2025 or later, not before the model bundle was built and not
               before the station certificate's notBefore (a Pi 4 has no RTC; a clock in 1970 makes
               every TLS handshake fail with an error that never mentions the clock);
* ``identity`` the provisioned certificate is for this station and this key, from the county CA, valid;
* ``broker``   the county broker answers a TLS handshake and an MQTT CONNECT with the device's own
               certificate, within a short timeout;
* ``disk``     free space on the data directory is above the store's floor ([store] floor_bytes);
* ``database`` SQLite's integrity check and the audit hash chain both pass;
* ``keys``     private key files are readable by their owner only (0600), the key folder is 0700.

Nothing here changes the station: no key, database or config is created (a missing database on a
freshly provisioned station is reported, not made), no MQTT message is published, and the broker
CONNECT resumes the station's own session instead of wiping it (see :func:`mqtt_connect`).
"""

from __future__ import annotations

import datetime as dt
import os
import pwd
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from appliance.config import DEFAULT_CONFIG, StationConfig, StationConfigError, build_config, read_document
from sync.protocol import mqtt

MIN_YEAR = 2025
BROKER_TIMEOUT = 5.0
CAMERA_TIMEOUT = 15.0
CAMERA_FRAMES = 3
CERT_RENEW_WARNING = dt.timedelta(days=30)
SERVICE_USER = "booking-station"

CONNACK_CODES = {
    1: "the broker does not speak MQTT 3.1.1",
    2: "the broker rejected the client id",
    3: "the broker says it is unavailable",
    4: "the broker expected a user name and password (is this the county broker config?)",
    5: "the broker does not authorize this certificate",
}


@dataclass(frozen=True)
class Check:
    """One line of the report: ``{check, ok, detail}`` in ``--json``."""

    check: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, Any]:
        return {"check": self.check, "ok": self.ok, "detail": self.detail}


class CheckFailed(Exception):
    """Raised inside a check with the sentence to show."""


@dataclass
class Station:
    """What the checks read: the config (as far as it could be read), where it came from, the data
    directory and the device profile name, plus what earlier checks learnt for later ones."""

    config: StationConfig
    document: dict[str, Any]
    config_path: Path | None
    data_dir: Path
    profile_name: str | None
    camera_source: str | None
    now: dt.datetime
    profile: Any = None  # firmware.profiles.DeviceProfile once the profile check passed
    bundle_created: dt.datetime | None = None
    cert_not_before: dt.datetime | None = None


# --- reading the config --------------------------------------------------------------------------------


def read_station_config(path: Path | None) -> tuple[StationConfig, dict[str, Any], Path | None, str | None]:
    """(config, raw document, path used, problem). Never raises: a broken config is the first FAIL.

    Built by ``appliance.config.build_config`` like ``load_config`` (device profile layer, unknown keys are
    errors), so doctor accepts exactly the files every other command accepts.
    """
    if path is None:
        if not DEFAULT_CONFIG.is_file():
            return StationConfig(), {}, None, (f"no station config: {DEFAULT_CONFIG} does not exist "
                                               "(booking-station provision writes it)")
        path = DEFAULT_CONFIG
    try:
        document = read_document(path)
    except StationConfigError as exc:
        return StationConfig(), {}, path, str(exc)
    try:
        config = build_config(document, path)
    except StationConfigError as exc:
        return StationConfig(source=path), document, path, str(exc)
    return config, document, path, None


# --- the checks ------------------------------------------------------------------------------------------


def check_profile(st: Station) -> str:
    from firmware.profiles import DeviceProfileError, load_profile

    if not st.profile_name:
        raise CheckFailed("no device profile: set [station] device_profile in station.toml (booking-station "
                          "provision --device-profile NAME) or give --device-profile NAME")
    try:
        st.profile = load_profile(st.profile_name)
    except DeviceProfileError as exc:
        raise CheckFailed(str(exc)) from None
    return f"{st.profile.name}: {st.profile.description} ({st.profile.path})"


def camera_source(st: Station) -> str | None:
    """The source for the profile's camera: ``--camera``, else the argument of ``[camera] source``
    when it names the profile's backend (``replay:/srv/demo``), else the profile's own."""
    if st.camera_source:
        return st.camera_source
    backend, sep, argument = str(st.config.camera.source).partition(":")
    if sep and argument.strip() and st.profile is not None and backend.strip().lower() == st.profile.camera.backend:
        return argument.strip()
    return None


def check_camera(st: Station, timeout: float = CAMERA_TIMEOUT) -> str:
    from firmware.profiles import DeviceProfileError

    if st.profile is None:
        raise CheckFailed("not checked: no usable device profile says which camera this station has")
    try:
        spec = st.profile.camera_spec(camera_source(st))
    except DeviceProfileError as exc:
        raise CheckFailed(f"{exc} with --camera, or as [camera] source = "
                          f"\"{st.profile.camera.backend}:...\" in station.toml") from None
    result: dict[str, Any] = {}

    def grab() -> None:
        from appliance.camera import CameraError, FrameUnreadable, open_camera

        started = time.monotonic()
        try:
            camera = open_camera(spec)
        except CameraError as exc:
            result["error"] = str(exc)
            return
        except Exception as exc:  # a driver's own exception type: still one line for the person
            result["error"] = f"{type(exc).__name__}: {exc}"
            return
        try:
            frames, unreadable = [], 0
            while len(frames) < CAMERA_FRAMES and unreadable < 2 * CAMERA_FRAMES:
                try:
                    frames.append(camera.read())
                except FrameUnreadable:
                    unreadable += 1
            if not frames:
                result["error"] = f"{camera.description} opened but delivered no readable frame"
                return
            result["ok"] = (f"{camera.description}: {len(frames)} frames of {frames[-1].size[0]}x{frames[-1].size[1]} "
                            f"in {time.monotonic() - started:.1f} s")
        except CameraError as exc:
            result["error"] = str(exc)
        except Exception as exc:
            result["error"] = f"{type(exc).__name__}: {exc}"
        finally:
            camera.close()

    # A camera that hangs (a wedged V4L2 driver, a busy libcamera pipeline) must not hang the doctor.
    worker = threading.Thread(target=grab, name="doctor-camera", daemon=True)
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        raise CheckFailed(f"the {st.profile.camera.backend} camera delivered no frame within {timeout:g} s "
                          "(is booking-station.service using it? stop it first)")
    if "error" in result:
        raise CheckFailed(f"{result['error']} (is booking-station.service using the camera? stop it first)")
    return str(result["ok"])


def check_models(st: Station) -> str:
    from appliance.vision.bundle import Bundle, BundleError
    from appliance.vision.runtime import RuntimeMissing, runtime_name

    try:
        bundle = Bundle.load(st.config.vision.bundle)
    except BundleError as exc:
        # The clock check still compares with the build time the (unverified) manifest states.
        st.bundle_created = _bundle_created_unverified(st.config.vision.bundle)
        raise CheckFailed(str(exc)) from None
    st.bundle_created = _parse_time(bundle.created)
    problems = []
    if st.profile is not None:
        role = f"embedding_{st.profile.vision.embedding}"
        if role not in {m.role for m in bundle.models.values()}:
            problems.append(f"the profile wants the {st.profile.vision.embedding} embedding, which the bundle lacks")
    try:
        runtime = runtime_name()
    except RuntimeMissing as exc:
        problems.append(str(exc))
        runtime = "none"
    if problems:
        raise CheckFailed("; ".join(problems))
    return (f"{len(bundle.models)} model files match {bundle.root}/manifest.toml (built {bundle.created or '?'}, "
            f"embedding {bundle.embedding}); runtime {runtime}")


def _bundle_created_unverified(root: str | None) -> dt.datetime | None:
    from appliance.vision.bundle import Bundle, BundleError

    try:
        return _parse_time(Bundle.load(root, verify=False).created)
    except (BundleError, OSError, ValueError):
        return None


def _keys(st: Station) -> dict[str, Path]:
    """Where the station's key files are: [keys] as provisioning wrote it, else the DATA_DIR/keys layout."""
    keys_dir = st.data_dir / "keys"
    k = st.config.keys
    return {
        "tls_key": Path(k.tls_key) if k.tls_key else keys_dir / "tls.key",
        "tls_cert": Path(k.tls_cert) if k.tls_cert else keys_dir / "tls.crt",
        "ca_cert": Path(k.ca_cert) if k.ca_cert else keys_dir / "ca.crt",
        "signing_key": Path(k.signing_key) if k.signing_key else keys_dir / "signing.key",
    }


def check_identity(st: Station) -> str:
    from cryptography import x509
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import serialization
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    county, station = st.config.station.county, st.config.station.station
    if not (county and station):
        raise CheckFailed("not provisioned: no [station] county and station in the config "
                          "(booking-station provision --county ... --station ...)")
    paths = _keys(st)
    try:
        cert = x509.load_pem_x509_certificate(paths["tls_cert"].read_bytes())
        ca = x509.load_pem_x509_certificate(paths["ca_cert"].read_bytes())
        key = serialization.load_pem_private_key(paths["tls_key"].read_bytes(), password=None)
    except (OSError, ValueError, TypeError) as exc:
        raise CheckFailed(f"the provisioned certificate, CA or key cannot be read ({exc}); re-run "
                          "booking-station provision") from None
    st.cert_not_before = cert.not_valid_before_utc
    spki = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    if cert.public_key().public_bytes(*spki) != key.public_key().public_bytes(*spki):
        raise CheckFailed(f"{paths['tls_cert']} is not the certificate of {paths['tls_key']}")
    names = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    cn = names[0].value if len(names) == 1 else None
    if cn != station:
        raise CheckFailed(f"the certificate is for {cn!r}, this station is {station!r} (the broker would treat it "
                          "as that station)")
    try:
        cert.verify_directly_issued_by(ca)
    except (ValueError, TypeError, InvalidSignature):
        raise CheckFailed(f"{paths['tls_cert']} is not signed by the county CA in {paths['ca_cert']}") from None
    try:
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        eku = None
    if eku is None or ExtendedKeyUsageOID.CLIENT_AUTH not in eku:
        raise CheckFailed("the certificate is not valid for TLS client authentication")
    if st.now >= cert.not_valid_after_utc:
        raise CheckFailed(f"the certificate expired {cert.not_valid_after_utc:%Y-%m-%d}; re-provision with a new "
                          "token (booking-station provision --force)")
    left = cert.not_valid_after_utc - st.now
    note = " - renew soon (booking-station provision --force)" if left < CERT_RENEW_WARNING else ""
    return (f"station {station} of county {county}, certificate serial {cert.serial_number:x} valid until "
            f"{cert.not_valid_after_utc:%Y-%m-%d}{note}")


def check_clock(st: Station) -> str:
    now = st.now
    problems = []
    if now.year < MIN_YEAR:
        problems.append(f"the clock says {now:%Y-%m-%d %H:%M}Z, before {MIN_YEAR}")
    if st.bundle_created is not None and now < st.bundle_created:
        problems.append(f"the clock ({now:%Y-%m-%d %H:%M}Z) is before the model bundle was built "
                        f"({st.bundle_created:%Y-%m-%d %H:%M}Z)")
    if st.cert_not_before is not None and now < st.cert_not_before:
        problems.append(f"the clock ({now:%Y-%m-%d %H:%M}Z) is before the station certificate is valid "
                        f"({st.cert_not_before:%Y-%m-%d %H:%M}Z)")
    if problems:
        raise CheckFailed("; ".join(problems) + ": set the time or fix NTP (timedatectl; TLS fails with a wrong "
                                                 "clock, and every booking is stamped with it)")
    compared = [f"year >= {MIN_YEAR}"]
    if st.bundle_created is not None:
        compared.append("after the bundle was built")
    if st.cert_not_before is not None:
        compared.append("after the certificate's notBefore")
    return f"{now:%Y-%m-%d %H:%M:%S}Z: " + ", ".join(compared)


def _broker_settings(st: Station) -> dict[str, Any]:
    """Host, port and TLS files the sync agent itself would use ([sync] over [mqtt]/[keys])."""
    paths = _keys(st)
    settings: dict[str, Any] = {"host": st.config.mqtt.host, "port": st.config.mqtt.port or 8883,
                                "ca": paths["ca_cert"], "cert": paths["tls_cert"], "key": paths["tls_key"],
                                "client_id": st.config.station.station or "booking-doctor"}
    sync = st.document.get("sync")
    if isinstance(sync, dict) and sync:
        from sync.station.config import SyncConfigError

        try:
            cfg = st.config.sync.complete(st.data_dir, st.document)
        except SyncConfigError as exc:
            raise CheckFailed(f"{st.config_path}: {exc}") from None
        settings.update(host=cfg.host, port=cfg.port, ca=Path(cfg.ca_file), cert=Path(cfg.cert_file),
                        key=Path(cfg.key_file), client_id=cfg.station)
    return settings


def _agent_connected(st: Station) -> str | None:
    """The sync agent's own word that it is connected right now, or None."""
    from appliance.ui.health import read_sync_status

    status = read_sync_status(st.data_dir, st.now)
    if status and status.get("running") and status.get("connected"):
        return str(status.get("broker") or "the broker")
    return None


def mqtt_connect(host: str, port: int, ca: Path, cert: Path, key: Path, client_id: str, *,
                 timeout: float = BROKER_TIMEOUT, connect: bool = True) -> str:
    """TLS (1.2+, broker verified against the county CA with its host name) with the device certificate,
    then, if ``connect``, an MQTT CONNECT and its CONNACK. Returns what happened; raises CheckFailed.

    :func:`sync.protocol.mqtt.probe` does it: the CONNECT resumes the station's own session (the county
    broker makes the certificate CN the client id) instead of wiping it, reads nothing past the CONNACK
    and acknowledges nothing, so every ack and county command the broker holds stays for the agent.
    Nothing is published or subscribed.
    """
    settings = mqtt.Settings(host=host, port=port, client_id=client_id, ca_file=str(ca), cert_file=str(cert),
                             key_file=str(key), protocol="3.1.1")
    try:
        result = mqtt.probe(settings, timeout=timeout, connect=connect)
    except mqtt.ProbeError as exc:
        raise CheckFailed(_probe_failure(exc, f"{host}:{port}", host, ca, cert, key, timeout)) from None
    where = f"{host}:{port}"
    if result.connected is None:
        return f"TLS ({result.tls_version}) with {where} works"
    return f"MQTT CONNECT accepted by {where} over {result.tls_version} with this device's certificate"


def _probe_failure(exc: mqtt.ProbeError, where: str, host: str, ca: Path, cert: Path, key: Path,
                   timeout: float) -> str:
    """The probe's failure as a sentence for the desk: what failed and what to check."""
    messages = {
        "tls_files": f"cannot load the device's TLS files ({ca}, {cert}, {key}): {exc.detail}",
        "resolve": f"cannot resolve the broker host {host!r}: {exc.detail}",
        "refused": f"connection refused by {where}: nothing listens there (is the county broker running, "
                   "and is [mqtt] host/port right?)",
        "unreachable": f"cannot reach {where}: {exc.detail}",
        "untrusted": f"the broker at {where} is not trusted with {ca}: {exc.detail}",
        "tls": f"TLS with {where} failed: {exc.detail}",
        "certificate": f"{where} refused this device's certificate: {exc.detail} (revoked, or from another CA?)",
        "closed": f"{where} closed the connection without answering the MQTT CONNECT (is the certificate "
                  "revoked, or is it not an MQTT broker?)",
        "not_mqtt": f"{where} did not answer like an MQTT broker",
        "connack": f"{where} refused the MQTT CONNECT: {CONNACK_CODES.get(exc.code or 0, f'code {exc.code}')}",
    }
    if exc.stage == "timeout":
        return f"no answer from {where} within {timeout:g} s (network, firewall or address)"
    if exc.stage == "no_answer":
        return f"{where} did not answer within {timeout:g} s"
    return messages.get(exc.stage, f"broker check at {where} failed: {exc}")


def check_broker(st: Station, timeout: float = BROKER_TIMEOUT) -> str:
    if not st.config.mqtt.host and not isinstance(st.document.get("sync"), dict):
        raise CheckFailed("not provisioned: no [mqtt] host in the config, so there is no broker to check "
                          "(booking-station provision, or --mqtt-host)")
    s = _broker_settings(st)
    if not s["host"]:
        raise CheckFailed("not provisioned: no [mqtt] host in the config (booking-station provision)")
    live = _agent_connected(st)
    if live:
        # A second connection with the same certificate would throw the running agent off the broker.
        detail = mqtt_connect(s["host"], s["port"], s["ca"], s["cert"], s["key"], s["client_id"], timeout=timeout,
                              connect=False)
        return f"{detail}; the sync agent is connected to {live} (no second MQTT session opened)"
    return mqtt_connect(s["host"], s["port"], s["ca"], s["cert"], s["key"], s["client_id"], timeout=timeout)


def check_disk(st: Station) -> str:
    from appliance.store.space import free_bytes, human_bytes

    floor = st.config.store.floor_bytes
    try:
        free = free_bytes(st.data_dir)
    except OSError as exc:
        raise CheckFailed(f"cannot look at {st.data_dir}: {exc.strerror or exc}") from None
    if free < floor:
        raise CheckFailed(f"{human_bytes(free)} free on {st.data_dir}, below the floor of {human_bytes(floor)} "
                          "([store] floor_bytes): new bookings would be refused. Free disk space")
    return f"{human_bytes(free)} free on {st.data_dir} (floor {human_bytes(floor)})"


def check_database(st: Station) -> str:
    from appliance.store import StationStoreError, Store
    from appliance.store.db import data_paths

    db_path, key_path = data_paths(st.data_dir)
    if not db_path.exists():
        if key_path.exists():
            raise CheckFailed(f"{db_path} is missing but its key {key_path} exists: the database was lost or moved "
                              "(undelivered bookings may be gone); call county IT before starting the services")
        return f"{db_path} not created yet (the station services create it on first start)"
    try:
        store = Store.open(db_path, key_path, create_key=False, floor_bytes=0)
    except StationStoreError as exc:
        raise CheckFailed(str(exc)) from None
    try:
        integrity = store.integrity_check()
        report = store.audit_report()
        counts = store.queue_counts()
    except Exception as exc:
        raise CheckFailed(f"cannot check {db_path}: {exc}") from None
    finally:
        store.close()
    if integrity != ["ok"]:
        raise CheckFailed(f"SQLite integrity check of {db_path} failed: {'; '.join(integrity[:3])}. Keep the file "
                          "and call county IT")
    if not report.ok:
        raise CheckFailed(f"the audit log's hash chain breaks at entry {report.first_broken_seq}: an entry was "
                          "changed or deleted (booking-station audit verify); call county IT")
    return (f"integrity ok, audit chain intact ({report.entries} entr{'y' if report.entries == 1 else 'ies'}); "
            f"{counts.get('pending', 0)} pending, {counts.get('delivered', 0)} delivered, "
            f"{counts.get('rejected', 0)} rejected")


def check_keys(st: Station) -> str:
    keys_dir = st.data_dir / "keys"
    paths = _keys(st)
    private = [paths["tls_key"], paths["signing_key"], keys_dir / "store.key"]
    private += sorted(keys_dir.glob("*.pending")) if keys_dir.is_dir() else []
    problems, checked = [], 0
    try:
        user = pwd.getpwnam(SERVICE_USER)
    except KeyError:
        user = None
    for path in dict.fromkeys(private):
        try:
            info = path.stat()
        except FileNotFoundError:
            if path.name != "store.key":  # made by the store on first start
                problems.append(f"{path} is missing")
            continue
        except OSError as exc:
            problems.append(f"{path}: {exc.strerror or exc}")
            continue
        checked += 1
        if info.st_mode & 0o077:
            problems.append(f"{path} is mode {info.st_mode & 0o777:04o} (run: chmod 600 {path})")
        if user is not None and os.geteuid() == 0 and info.st_uid not in (user.pw_uid,):
            problems.append(f"{path} is not owned by {SERVICE_USER}, so the station services cannot read it "
                            f"(run: chown {SERVICE_USER}: {path})")
    if keys_dir.is_dir() and keys_dir.stat().st_mode & 0o077:
        problems.append(f"{keys_dir} is mode {keys_dir.stat().st_mode & 0o777:04o} (run: chmod 700 {keys_dir})")
    if problems:
        raise CheckFailed("; ".join(problems))
    return f"{checked} private key file{'s' if checked != 1 else ''} readable by their owner only; {keys_dir} 0700"


# --- running them ----------------------------------------------------------------------------------------


def run_doctor(config_path: Path | None, data_dir: Path, *, profile: str | None = None,
               camera_source: str | None = None, now: dt.datetime | None = None,
               broker_timeout: float = BROKER_TIMEOUT, camera_timeout: float = CAMERA_TIMEOUT) -> list[Check]:
    """Every check, in an order where later ones can use what earlier ones learnt (the bundle's build
    time and the certificate's notBefore for the clock). A check that fails never stops the others."""
    config, document, used, problem = read_station_config(config_path)
    st = Station(config, document, used, Path(data_dir), profile or config.station.device_profile or None,
                 camera_source, now or dt.datetime.now(dt.timezone.utc))
    results = [Check("config", problem is None, problem or f"{used} read")]
    steps: list[tuple[str, Callable[[Station], str]]] = [
        ("profile", check_profile),
        ("camera", lambda s: check_camera(s, camera_timeout)),
        ("models", check_models),
        ("identity", check_identity),
        ("clock", check_clock),
        ("broker", lambda s: check_broker(s, broker_timeout)),
        ("disk", check_disk),
        ("database", check_database),
        ("keys", check_keys),
    ]
    for name, step in steps:
        try:
            results.append(Check(name, True, step(st)))
        except CheckFailed as exc:
            results.append(Check(name, False, str(exc)))
        except Exception as exc:  # a bug in one check must not hide the others' answers
            results.append(Check(name, False, f"the check itself failed: {type(exc).__name__}: {exc}"))
    return results


def _parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=dt.timezone.utc)


def render(results: list[Check]) -> list[str]:
    """The table people read: check, PASS/FAIL, detail; then one summary line."""
    width = max(len(r.check) for r in results)
    lines = [f"{'check':<{width}}  result  detail"]
    lines += [f"{r.check:<{width}}  {'PASS' if r.ok else 'FAIL':<6}  {r.detail}" for r in results]
    failed = [r.check for r in results if not r.ok]
    lines.append("")
    lines.append(f"all {len(results)} checks passed" if not failed else
                 f"{len(failed)} of {len(results)} checks failed: {', '.join(failed)}")
    return lines
