"""The whole booking loop on one machine, run with the product's own commands: ``make demo``'s second half.

It stays one module (over 500 lines) because it is a script read top to bottom, one step after the other,
in the order the demo prints them.

County IT's side first, as on a county server: the county CA and command key (``booking-gallery ca init``),
TLS certificates for the broker, the enrolment server and the gallery worker, an empty CRL, the broker
configuration (``broker-config``, adapted to a loopback port and the demo folder) and Mosquitto itself,
a one-time token for the station, the enrolment server (registering station keys straight into the gallery
database) and a gallery worker that exports every stored record as an ANSI/NIST-ITL ``.eft`` file.

Then the booking desk: ``booking-station provision`` with that token, ``capture`` of N bookings from a replay
camera showing real face photos (press photos, so a failed gate is kept with an audited override reason),
and ``sync`` in the background until ``status`` shows every record acked by the gallery. Everything is
stopped with SIGTERM, and the counts come from ``booking-station queue --json``,
``booking-gallery records --json`` and the export folder::

    python -m appliance.demo_loop [--dir DIR] [--bookings N] [--keep] [--shared DATA_DIR]

Every command is a subprocess, started the way a person (or systemd) would start it; the long-running ones
get ``$NOTIFY_SOCKET`` so the demo waits for their own READY (and the gallery worker's "subscribed" status)
rather than sleeping. Each runs in its own process group, and every process started here is stopped on the
way out, whatever happened. The demo folder is a new temporary folder, removed at the end unless ``--keep``
(a folder named with ``--dir`` is never removed). Nothing is written into the repository, and the system
broker on port 1883 is never touched: the broker and the enrolment server listen on free loopback ports.

Exit status: 0 when every captured record was delivered, stored and exported; 1 otherwise or when a step
failed (the message names the step, its command, the end of its error output and of the broker log).
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from appliance.config import StationConfig, StationConfigError, load_config

COUNTY = "demo-county"
STATION = "desk-1"
AGENCY = "VA0290000"
OPERATOR = "demo-officer"


@dataclass(frozen=True)
class DemoFace:
    """A sample photo for one demo booking, and how the demo prepares it (None: used as it is).

    A replay camera cannot be moved and a photo's subject cannot be asked to straighten up, so where a real
    photo fails one live gate only because of framing, the demo does once what the officer's guidance would
    have done at the desk, and says so. The quality gates themselves are never relaxed.
    """

    path: str  # under the shared faces folder
    prepare: str | None = None
    note: str = ""


FACES = (
    DemoFace("deepface/img36.jpg"),
    # A real mug shot whose crop leaves too little below the chin (margin_below 1.60): the backdrop is
    # extended below by 15%, as "lower the camera" would have given.
    DemoFace("openmpf_meds/meds-aa-S001-01.jpg", "extend_below", "backdrop extended below the chin"),
    # A portrait with the head tilted (head_pose_roll 9.9 degrees): turned level, as "hold your head level"
    # would have given.
    DemoFace("deepface/img31.jpg", "level", "turned 10 degrees level"),
)
OVERRIDE_REASON = "demo: press photo, no booking backdrop"
LOOPBACK = "127.0.0.1"
ENV_SHARED_DATA = "BOOKING_SHARED_DATA"
MOSQUITTO_CANDIDATES = ("/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto")

COMMAND_TIMEOUT = 120.0  # one foreground command (a capture loads the models: a few seconds)
# --timeout of each capture: how long auto-capture waits for the live gates to pass before the photo is taken
# by hand and kept with the override reason. Every demo face passes them at once (see FACES); on a still image
# one that did not never would, so waiting longer would only slow the demo down.
CAPTURE_SECONDS = 3.0
READY_TIMEOUT = 20.0  # a background service saying READY (the gallery worker: subscribed)
DELIVERY_TIMEOUT = 90.0  # every record acked by the gallery
STOP_TIMEOUT = 10.0  # SIGTERM to exit, before SIGKILL
TAIL_LINES = 15


class StepFailed(Exception):
    """A step of the demo failed; ``detail`` says how (exit status, output tails)."""

    def __init__(self, detail: str, *, broker_log_shown: bool = False) -> None:
        super().__init__(detail)
        self.detail = detail
        self.broker_log_shown = broker_log_shown


@dataclass
class Service:
    """A long-running process of the demo (broker, enrolment server, gallery worker, sync agent)."""

    name: str
    argv: list[str]
    process: subprocess.Popen[bytes]
    log: Path
    notify: socket.socket | None = None
    notes: list[str] = field(default_factory=list)  # what it told us on $NOTIFY_SOCKET
    exit_code: int | None = None

    def alive(self) -> bool:
        return self.process.poll() is None

    def read_notes(self, wait: float) -> list[str]:
        """Datagrams received on its notify socket within ``wait`` seconds (the new lines only)."""
        if self.notify is None:
            time.sleep(wait)
            return []
        self.notify.settimeout(wait)
        fresh: list[str] = []
        with contextlib.suppress(OSError):  # the wait is over (TimeoutError), or nothing more (BlockingIOError)
            while True:
                fresh += self.notify.recv(4096).decode(errors="replace").splitlines()
                self.notify.settimeout(0.0)
        self.notes += fresh
        return fresh


def tail(text: str, lines: int = TAIL_LINES) -> str:
    kept = [line for line in text.strip().splitlines() if line.strip()][-lines:]
    return "\n".join("    " + line for line in kept) if kept else "    (nothing)"


def tail_file(path: Path, lines: int = TAIL_LINES) -> str:
    try:
        return tail(path.read_text(encoding="utf-8", errors="replace"), lines)
    except OSError:
        return "    (no log)"


def free_port() -> int:
    """A TCP port nobody listens on right now on the loopback address (never the system broker's 1883)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def find_command(name: str) -> str:
    """The product's console script beside this interpreter (the venv), else on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which(name)
    if found:
        return found
    raise StepFailed(f"{name} is not installed beside {sys.executable} nor on PATH; run `make install` first")


def find_mosquitto() -> str:
    for candidate in (os.environ.get("MOSQUITTO"), *MOSQUITTO_CANDIDATES, shutil.which("mosquitto")):
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise StepFailed("mosquitto is not installed (apt-get install -y mosquitto), or set $MOSQUITTO to its path")


def default_shared_data() -> Path:
    env = os.environ.get(ENV_SHARED_DATA)
    return Path(env) if env else Path(__file__).resolve().parents[1].parent / "shared" / "data"


def prepare_photo(source: Path, out: Path, how: str) -> None:
    """Write ``source`` prepared as ``how`` says (a `DemoFace.prepare`) to ``out``, as a JPEG."""
    import cv2

    image = cv2.imread(str(source), cv2.IMREAD_COLOR)
    if image is None:
        raise StepFailed(f"cannot read the sample photo {source}")
    h, w = image.shape[:2]
    if how == "extend_below":
        image = cv2.copyMakeBorder(image, 0, int(round(0.15 * h)), 0, 0, cv2.BORDER_REPLICATE)
    elif how == "level":
        turn = cv2.getRotationMatrix2D((w / 2.0, h / 2.0), -10.0, 1.0)
        image = cv2.warpAffine(image, turn, (w, h), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    else:
        raise ValueError(f"unknown preparation {how!r}")
    if not cv2.imwrite(str(out), image, [cv2.IMWRITE_JPEG_QUALITY, 95]):
        raise StepFailed(f"cannot write {out}")


class Demo:
    """Runs the steps, prints one line per step, keeps track of every process it started."""

    def __init__(self, root: Path, faces: Path, bookings: int, out: Callable[[str], None]) -> None:
        self.root = root
        self.faces = faces
        self.bookings = bookings
        self.out = out
        self.step_no = 0
        self.step_title = ""
        self.step_argv: list[str] = []
        self.services: list[Service] = []
        self.stop_problems: list[str] = []
        self.station_bin = find_command("booking-station")
        self.gallery_bin = find_command("booking-gallery")
        self.mosquitto_bin = find_mosquitto()
        # county side
        self.ca_dir = root / "county" / "ca"
        self.tls_dir = root / "county" / "tls"
        self.broker_dir = root / "county" / "broker"
        self.gallery_dir = root / "county" / "gallery"
        self.gallery_db = self.gallery_dir / "gallery.db"
        self.export_dir = self.gallery_dir / "export"
        self.logs = root / "logs"
        # station side
        self.config_dir = root / "station" / "etc"
        self.data_dir = root / "station" / "var"
        self.station_toml = self.config_dir / "station.toml"
        self.mqtt_port = 0
        self.enroll_port = 0
        self.record_ids: list[str] = []
        self.env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC",
                                                                     "WATCHDOG_PID")}
        self.env["PYTHONUNBUFFERED"] = "1"

    # --- output -----------------------------------------------------------------------------------

    def rel(self, text: str) -> str:
        """Paths in ``text`` relative to the demo folder (and the sample faces as faces/NAME)."""
        return text.replace(str(self.root) + os.sep, "").replace(str(self.faces) + os.sep, "faces/")

    def short(self, argv: list[str]) -> str:
        """The command as a person would type it: the program without its folder, demo paths relative."""
        return " ".join(shlex.quote(Path(word).name if i == 0 else self.rel(word)) for i, word in enumerate(argv))

    def begin(self, side: str, title: str, argv: list[str] | None = None) -> float:
        self.step_no += 1
        self.step_title = f"{side}: {title}"
        self.step_argv = list(argv or [])
        line = f"[{self.step_no:2d}] {side:<7} {title}"
        if argv:
            line += f"  $ {self.short(argv)}"
        self.out(line)
        return time.monotonic()

    def done(self, started: float, note: str = "") -> None:
        self.out(f"     {'-> ' + note + ', ' if note else '-> '}{time.monotonic() - started:.1f} s")

    def step(self, side: str, title: str, argv: list[str]) -> str:
        """A step that is one foreground command and has nothing to note: announce, run, time it; its stdout."""
        started = self.begin(side, title, argv)
        stdout = self.run(argv)
        self.done(started)
        return stdout

    # --- commands ---------------------------------------------------------------------------------

    def run(self, argv: list[str], *, timeout: float = COMMAND_TIMEOUT, ok: tuple[int, ...] = (0,)) -> str:
        """Run one foreground command in the demo folder; its stdout, or StepFailed with its stderr tail
        when its exit status is not in ``ok``."""
        try:
            result = subprocess.run(argv, cwd=self.root, env=self.env, capture_output=True, timeout=timeout,
                                    start_new_session=True, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as exc:
            err = (exc.stderr or b"").decode(errors="replace")
            raise StepFailed(f"no answer within {timeout:.0f} s\n  stderr (last lines):\n{tail(err)}") from None
        except OSError as exc:
            raise StepFailed(f"cannot run it: {exc}") from None
        stdout = result.stdout.decode(errors="replace")
        stderr = result.stderr.decode(errors="replace")
        if result.returncode not in ok:
            raise StepFailed(f"exit status {result.returncode}\n  stderr (last lines):\n{tail(stderr or stdout)}")
        return stdout

    def run_json(self, argv: list[str], *, ok: tuple[int, ...] = (0,)) -> Any:
        stdout = self.run(argv, ok=ok)
        try:
            return json.loads(stdout)
        except ValueError:
            raise StepFailed(f"the output is not JSON:\n{tail(stdout)}") from None

    def start(self, name: str, argv: list[str], *, notify: bool = True) -> Service:
        """Start a background service in its own process group, output to logs/NAME.log, with its own
        $NOTIFY_SOCKET (an abstract unix socket, so no path length limit) when ``notify``."""
        self.logs.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        env = dict(self.env)
        sock = None
        if notify:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            address = f"booking-demo-{os.getpid()}-{name}-{time.monotonic_ns()}"
            sock.bind(b"\0" + address.encode())
            env["NOTIFY_SOCKET"] = "@" + address
        with log.open("ab") as out:
            try:
                process = subprocess.Popen(argv, cwd=self.root, env=env, stdout=out, stderr=subprocess.STDOUT,
                                           stdin=subprocess.DEVNULL, start_new_session=True)
            except OSError as exc:
                if sock is not None:
                    sock.close()
                raise StepFailed(f"cannot start it: {exc}") from None
        service = Service(name, argv, process, log, sock)
        self.services.append(service)
        return service

    def wait_for(self, service: Service, ready: Callable[[Service], bool], what: str,
                 timeout: float = READY_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if ready(service):
                return
            if not service.alive():
                raise StepFailed(f"{service.name} exited with status {service.process.returncode} before {what}\n"
                                 f"  its log (last lines):\n{tail_file(service.log)}")
            service.read_notes(0.2)
        raise StepFailed(f"{service.name} did not report {what} within {timeout:.0f} s\n"
                         f"  its log (last lines):\n{tail_file(service.log)}")

    def stop_all(self) -> None:
        """SIGTERM each service (newest first), SIGKILL what does not stop in time; never raises."""
        for service in reversed(self.services):
            if service.exit_code is not None:
                continue
            with contextlib.suppress(Exception):
                self.stop(service)
        for service in self.services:
            if service.notify is not None:
                with contextlib.suppress(OSError):
                    service.notify.close()

    def stop(self, service: Service) -> int | None:
        # Signals go to its process group (its own: start_new_session) only while the process is not yet
        # reaped, so the group id cannot have been reused by anyone else's process.
        process = service.process
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.stop_problems.append(f"{service.name} did not stop within {STOP_TIMEOUT:.0f} s of SIGTERM; "
                                          "killed")
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    process.wait(5)
        service.exit_code = process.returncode
        return service.exit_code

    # --- the loop ---------------------------------------------------------------------------------

    def county(self) -> None:
        g = self.gallery_bin
        for folder in (self.tls_dir, self.broker_dir / "data", self.gallery_dir):
            folder.mkdir(parents=True, exist_ok=True)

        argv = [g, "ca", "init", "--ca-dir", str(self.ca_dir), "--county", COUNTY]
        self.step("county", "create the county CA and command-signing key", argv)

        broker_crt, broker_key = self.tls_dir / "broker.crt", self.tls_dir / "broker.key"
        argv = [g, "ca", "server-cert", "--ca-dir", str(self.ca_dir), "--name", LOOPBACK, "--name", "localhost",
                "--out-cert", str(broker_crt), "--out-key", str(broker_key)]
        self.step("county", "TLS certificate of the MQTT broker", argv)

        enroll_crt, enroll_key = self.tls_dir / "enroll.crt", self.tls_dir / "enroll.key"
        argv = [g, "ca", "server-cert", "--ca-dir", str(self.ca_dir), "--name", LOOPBACK, "--name", "localhost",
                "--out-cert", str(enroll_crt), "--out-key", str(enroll_key)]
        self.step("county", "TLS certificate of the enrolment server", argv)

        gallery_crt, gallery_key = self.tls_dir / "gallery.crt", self.tls_dir / "gallery.key"
        argv = [g, "ca", "client-cert", "--ca-dir", str(self.ca_dir), "--name", f"gallery.{COUNTY}",
                "--out-cert", str(gallery_crt), "--out-key", str(gallery_key)]
        self.step("county", "client certificate of the gallery worker", argv)

        crl = self.broker_dir / "crl.pem"
        argv = [g, "devices", "crl", "--empty", "--ca-dir", str(self.ca_dir), "-o", str(crl)]
        self.step("county", "empty CRL for the broker (revocations go there)", argv)

        self.start_broker(broker_crt, broker_key, crl)

        argv = [g, "tokens", "issue", "--ca-dir", str(self.ca_dir), "--station", STATION, "--expires-in", "1",
                "--json"]
        t = self.begin("county", f"one-time enrolment token for station {STATION}", argv)
        token = self.run_json(argv).get("token")
        if not isinstance(token, str) or not token:
            raise StepFailed("tokens issue --json gave no token")
        # County IT hands the token to the desk; on the device it goes into a file, out of `ps` and history.
        token_file = self.root / "station" / "enroll-token"
        token_file.parent.mkdir(parents=True, exist_ok=True)
        token_file.touch(mode=0o600)
        token_file.write_text(token + "\n", encoding="utf-8")
        self.done(t, f"handed to the desk in {self.rel(str(token_file))}")

        self.enroll_port = free_port()
        argv = [g, "enroll-server", "--ca-dir", str(self.ca_dir), "--host", LOOPBACK, "--port", str(self.enroll_port),
                "--tls-cert", str(enroll_crt), "--tls-key", str(enroll_key), "--mqtt-host", LOOPBACK,
                "--mqtt-port", str(self.mqtt_port), "--db", str(self.gallery_db)]
        t = self.begin("county", "start the enrolment server (keys go into the gallery's device table)", argv)
        service = self.start("enroll-server", argv)
        self.wait_for(service, lambda svc: "READY=1" in svc.notes, "READY")
        self.done(t, f"pid {service.process.pid}, https://{LOOPBACK}:{self.enroll_port}/enroll")

        receiver_toml = self.gallery_dir / "receiver.toml"
        receiver_toml.write_text(
            "# Gallery worker of the demo (see sync/county/gallery/receiver.example.toml)\n"
            "[broker]\n"
            f'host = "{LOOPBACK}"\n'
            f"port = {self.mqtt_port}\n"
            'protocol = "5"\n'
            f'ca_file = "{self.ca_dir / "ca.crt"}"\n'
            f'cert_file = "{gallery_crt}"\n'
            f'key_file = "{gallery_key}"\n\n'
            "[gallery]\n"
            f'county = "{COUNTY}"\n'
            f'db = "{self.gallery_db}"\n',
            encoding="utf-8")
        argv = [g, "receive", "--config", str(receiver_toml), "--db", str(self.gallery_db),
                "--export-dir", str(self.export_dir)]
        t = self.begin("county", "start the gallery worker (verify, store, export .eft, ack)", argv)
        service = self.start("gallery", argv)
        self.wait_for(service, lambda svc: any(n.startswith("STATUS=subscribed") for n in svc.notes),
                      "its subscription to the county's records")
        self.done(t, f"pid {service.process.pid}, subscribed")

    def start_broker(self, cert: Path, key: Path, crl: Path) -> None:
        """broker-config, adapted to the demo, then Mosquitto; a port taken meanwhile is replaced (twice)."""
        conf = self.broker_dir / "mosquitto.conf"
        for attempt in range(3):
            self.mqtt_port = free_port()
            argv = [self.gallery_bin, "broker-config", "--county", COUNTY, "--out", str(self.broker_dir),
                    "--cafile", str(self.ca_dir / "ca.crt"), "--certfile", str(cert), "--keyfile", str(key),
                    "--crlfile", str(crl), "--port", str(self.mqtt_port),
                    "--bind-address", LOOPBACK, "--persistence-dir", str(self.broker_dir / "data"),
                    "--user", getpass.getuser()]
            self.step("county", "mosquitto.conf and ACL for the county broker", argv)

            argv = [self.mosquitto_bin, "-c", str(conf)]
            t = self.begin("county", "start the MQTT broker (mutual TLS, per-station ACL)", argv)
            service = self.start("mosquitto", argv, notify=False)
            deadline = time.monotonic() + READY_TIMEOUT
            while time.monotonic() < deadline and service.alive() and not self.broker_running(service):
                time.sleep(0.05)
            if service.alive() and self.broker_running(service):
                self.done(t, f"pid {service.process.pid}, port {self.mqtt_port}")
                return
            self.stop(service)
            self.services.remove(service)
            log = service.log.read_text(encoding="utf-8", errors="replace") if service.log.exists() else ""
            if "Address already in use" in log and attempt < 2:
                self.out(f"     port {self.mqtt_port} was taken meanwhile; again with another port")
                service.log.unlink()
                continue
            state = "did not listen in time" if service.exit_code is None or service.exit_code < 0 else \
                f"exited with status {service.exit_code}"
            raise StepFailed(f"mosquitto {state}\n  its log (last lines):\n{tail(log)}", broker_log_shown=True)

    def broker_running(self, service: Service) -> bool:
        """Mosquitto says "running" once its listeners are open (a probe connection would only add a failed
        handshake to its log)."""
        try:
            log = service.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
        return f"listen socket on port {self.mqtt_port}." in log and re.search(r"mosquitto version \S+ running",
                                                                                 log) is not None

    def prepare_faces(self) -> list[Path]:
        """The replay camera's photos: each demo face as it is, or prepared once (see `DemoFace`)."""
        used = [FACES[i % len(FACES)] for i in range(min(self.bookings, len(FACES)))]
        prepared = [f for f in used if f.prepare]
        if not prepared:
            return [self.faces / f.path for f in used]
        t = self.begin("station", "prepare the sample photos the replay camera shows: "
                                  + "; ".join(f"{Path(f.path).name}: {f.note}" for f in prepared))
        folder = self.root / "station" / "samples"
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for face in used:
            if face.prepare is None:
                paths.append(self.faces / face.path)
                continue
            out = folder / Path(face.path).name
            prepare_photo(self.faces / face.path, out, face.prepare)
            paths.append(out)
        self.done(t, f"{len(prepared)} in station/samples")
        return paths

    def station(self) -> None:
        s = self.station_bin
        argv = [s, "provision", "--county", COUNTY, "--station", STATION,
                "--enroll-url", f"https://{LOOPBACK}:{self.enroll_port}/enroll",
                "--token-file", str(self.root / "station" / "enroll-token"), "--ca-bundle", str(self.ca_dir / "ca.crt"),
                "--config-dir", str(self.config_dir), "--data-dir", str(self.data_dir), "--user", "", "--json"]
        t = self.begin("station", "provision: keys made here, certificate from the county", argv)
        result = self.run_json(argv)
        if result.get("status") != "enrolled":
            raise StepFailed(f"provision answered {result}")
        mqtt = _station_config(self.station_toml).mqtt
        if (mqtt.host, mqtt.port) != (LOOPBACK, self.mqtt_port):
            raise StepFailed(f"station.toml has [mqtt] {mqtt.host}:{mqtt.port}, not the broker the enrolment "
                             f"server was told ({LOOPBACK}:{self.mqtt_port})")
        self.done(t, f"certificate serial {result.get('serial')}, broker {mqtt.host}:{mqtt.port}")

        samples = self.prepare_faces()
        for n in range(1, self.bookings + 1):
            face = samples[(n - 1) % len(samples)]
            booking = f"DEMO-{n:04d}"
            argv = [s, "--config", str(self.station_toml), "capture", "--booking", booking, "--auto",
                    "--camera", f"replay:{face}", "--agency", AGENCY, "--operator", OPERATOR,
                    "--data-dir", str(self.data_dir), "--timeout", f"{CAPTURE_SECONDS:g}",
                    "--override-reason", OVERRIDE_REASON, "--json"]
            t = self.begin("station", f"capture booking {booking}", argv)
            events = [json.loads(line) for line in self.run(argv).splitlines() if line.strip().startswith("{")]
            saved = next((e for e in events if e.get("record_id")), None)
            if saved is None:
                raise StepFailed("capture printed no saved record")
            self.record_ids.append(str(saved["record_id"]))
            taken = next((e for e in events if e.get("event") == "captured"), {})
            how = "auto-captured" if taken.get("mode") == "auto" else f"taken by hand after {CAPTURE_SECONDS:g} s"
            if saved.get("overrides"):
                how += ", kept with the override reason"
            self.done(t, f"record {saved['record_id']} ({how})")

        argv = [s, "--config", str(self.station_toml), "sync", "--data-dir", str(self.data_dir)]
        t = self.begin("station", "start the sync agent (delivers the queue to the gallery)", argv)
        service = self.start("sync", argv)
        self.wait_for(service, lambda svc: "READY=1" in svc.notes, "READY")
        self.done(t, f"pid {service.process.pid}")

        argv = [s, "--config", str(self.station_toml), "status", "--data-dir", str(self.data_dir), "--json"]
        t = self.begin("station", f"wait until the gallery has acked all {self.bookings} (polling)", argv)
        deadline = time.monotonic() + DELIVERY_TIMEOUT
        status: dict[str, Any] = {}
        while True:
            status = self.run_json(argv, ok=(0, 1))  # 1: not delivering (yet), which is what we wait out
            queue = status.get("queue", {})
            if queue.get("delivered", 0) + queue.get("rejected", 0) >= len(self.record_ids):
                break
            if not service.alive():
                raise StepFailed(f"the sync agent exited with status {service.process.returncode}\n"
                                 f"  its log (last lines):\n{tail_file(service.log)}")
            if time.monotonic() > deadline:
                raise StepFailed(f"not delivered within {DELIVERY_TIMEOUT:.0f} s: queue {queue}, link "
                                 f"{status.get('agent')}\n  sync log (last lines):\n{tail_file(service.log)}\n"
                                 f"  gallery log (last lines):\n{tail_file(self.logs / 'gallery.log')}")
            time.sleep(0.3)
        queue = status["queue"]
        agent = status.get("agent", {})
        self.done(t, f"pending {queue.get('pending')}, delivered {queue.get('delivered')}, rejected "
                     f"{queue.get('rejected')}; link {'connected' if agent.get('connected') else 'not connected'}")

    def stop_services(self) -> None:
        names = ", ".join(s.name for s in reversed(self.services) if s.exit_code is None)
        t = self.begin("both", f"stop {names} (SIGTERM)")
        codes = []
        for service in reversed(self.services):
            if service.exit_code is None:
                code = self.stop(service)
                codes.append(f"{service.name} {code}")
                if code not in (0, None):
                    self.stop_problems.append(f"{service.name} exited with status {code} on SIGTERM "
                                              f"(log: {self.rel(str(service.log))})")
        self.done(t, "exit status " + ", ".join(codes))

    def count(self) -> dict[str, int]:
        argv = [self.station_bin, "queue", "--data-dir", str(self.data_dir), "--json"]
        t = self.begin("station", "the station's queue", argv)
        queue = self.run_json(argv)
        counts = queue.get("counts", {})
        self.done(t, f"pending {counts.get('pending')}, delivered {counts.get('delivered')}, rejected "
                     f"{counts.get('rejected')}")

        argv = [self.gallery_bin, "records", "--db", str(self.gallery_db), "--station", STATION,
                "--limit", str(max(50, 2 * self.bookings)), "--json"]
        t = self.begin("county", "the gallery's stored records", argv)
        document = self.run_json(argv)
        records = document.get("records") if isinstance(document, dict) else None
        if not isinstance(records, list):
            raise StepFailed(f"records --json gave no list of records ({type(records).__name__})")
        stored_ids = {str(r.get("record_id")) for r in records if isinstance(r, dict)}
        stored = len(stored_ids & set(self.record_ids))
        strangers = len(stored_ids - set(self.record_ids))
        self.done(t, f"{stored} of the captured records" + (f", {strangers} others" if strangers else ""))

        exported = len({p.stem for p in self.export_dir.glob("*.eft")} & set(self.record_ids))
        return {"captured": len(self.record_ids), "delivered": int(counts.get("delivered", 0)), "stored": stored,
                "exported": exported}


def _station_config(path: Path) -> StationConfig:
    """The station.toml provision wrote, read as every station command reads it."""
    try:
        return load_config(path)
    except StationConfigError as exc:
        raise StepFailed(str(exc)) from None


@contextlib.contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM (and SIGHUP) to the demo end it like Ctrl-C does, so its clean-up runs."""

    def interrupt(signum: int, frame: object) -> NoReturn:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m appliance.demo_loop",
        description="Run the whole booking loop on this machine with the product's commands: county CA, broker, "
                    "enrolment server and gallery worker; a station provisioned, capturing bookings from a "
                    "replay camera and delivering them; then print what was captured, delivered, stored and "
                    "exported.")
    parser.add_argument("--dir", type=Path, default=None,
                        help="demo folder to use (must not exist or be empty; kept afterwards). Default: a new "
                             "temporary folder, removed at the end unless --keep")
    parser.add_argument("--bookings", type=int, default=3, metavar="N", help="bookings to capture (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary demo folder")
    parser.add_argument("--shared", type=Path, default=None, metavar="DIR",
                        help=f"the shared data folder with faces/ (default: ${ENV_SHARED_DATA}, else "
                             "../shared/data beside the checkout)")
    args = parser.parse_args(argv)
    if not 1 <= args.bookings <= 100:
        parser.error("--bookings must be 1-100")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)

    def out(line: str) -> None:
        print(line, flush=True)

    faces = (args.shared or default_shared_data()).resolve() / "faces"
    missing = [f.path for f in FACES[: args.bookings] if not (faces / f.path).is_file()]
    if missing:
        print(f"demo loop: the sample faces {', '.join(missing)} are not in {faces}; pass --shared DIR or set "
              f"${ENV_SHARED_DATA} to the shared data folder", file=sys.stderr)
        return 1

    if args.dir is not None:
        root = args.dir.resolve()
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            print(f"demo loop: {root} is not an empty folder; name a new one with --dir", file=sys.stderr)
            return 1
        root.mkdir(parents=True, exist_ok=True)
        remove = False
    else:
        root = Path(tempfile.mkdtemp(prefix="booking-demo-")).resolve()
        remove = not args.keep

    started = time.monotonic()
    out(f"booking demo loop: county {COUNTY}, station {STATION}, {args.bookings} booking(s), in {root}")
    demo: Demo | None = None
    code = 1
    try:
        with terminate_as_interrupt():
            try:
                demo = Demo(root, faces, args.bookings, out)
                demo.county()
                demo.station()
                demo.stop_services()
                counts = demo.count()
            except StepFailed as exc:
                where = f"step {demo.step_no} ({demo.step_title})" if demo and demo.step_no else "start-up"
                print(f"\nFAILED at {where}", file=sys.stderr)
                if demo and demo.step_argv:
                    print(f"  command: {demo.short(demo.step_argv)}", file=sys.stderr)
                print(f"  {exc.detail}", file=sys.stderr)
                if demo and (demo.logs / "mosquitto.log").exists() and not exc.broker_log_shown:
                    print(f"  mosquitto log (last lines):\n{tail_file(demo.logs / 'mosquitto.log')}", file=sys.stderr)
                return 1
            except Exception as exc:  # a bug here, or output the demo did not expect: still name the step
                where = f"step {demo.step_no} ({demo.step_title})" if demo and demo.step_no else "start-up"
                print(f"\nFAILED at {where}: unexpected {type(exc).__name__}: {exc}\n{tail(traceback.format_exc())}",
                      file=sys.stderr)
                return 1
            finally:
                if demo is not None:
                    demo.stop_all()
        n = args.bookings
        out("")
        out(f"summary: captured {counts['captured']}, delivered {counts['delivered']}, stored {counts['stored']}, "
            f"exported {counts['exported']} (of {n} bookings)")
        out(f"  captured: records saved by `booking-station capture`; delivered: acked by the gallery "
            f"(`booking-station queue`); stored: in the gallery database (`booking-gallery records`); exported: "
            f".eft files in {demo.rel(str(demo.export_dir)) if demo else '-'}")
        for problem in demo.stop_problems if demo else []:
            out(f"  warning: {problem}")
        where = "kept" if not remove else "removed at exit; --keep keeps it"
        out(f"  demo folder: {root} ({where}); took {time.monotonic() - started:.1f} s")
        code = 0 if all(v == n for v in counts.values()) else 1
        if code:
            out("  NOT every booking made it through the loop: see the logs in the demo folder (--keep)")
        return code
    except KeyboardInterrupt:
        print("\ninterrupted: every process the demo started has been stopped", file=sys.stderr)
        return 130
    finally:
        if remove:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
