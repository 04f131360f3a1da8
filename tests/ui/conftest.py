"""Fixtures for the officer UI tests: the real server as a subprocess, real Chromium, real images.

* `face_sources`: which shared real portraits pass and fail the station's checks, found by running the
  real quality engine on them (a threshold change in `appliance/quality` then picks other photos instead
  of silently breaking these tests), with the test county profile below.
* The county profile (`county_dir`): the shipped nist-sap30 with the plain-background gate switched off,
  the way a county adjusts a profile (`--profile-dir`). The shared portraits are press photos, not taken
  against a booking backdrop, and without it none would pass.
* `start_server(...)`: `python -m appliance.ui serve` on a free port over a data directory in tmp_path, a
  replay camera over the shared images (read in place, never copied; a "folder" of frames is made of
  symlinks), and a station config written for the test. The server is killed at teardown.
* `browser`: the system Chromium through Playwright, one per test session; `page` a fresh context at
  800x480 per test.
* `shoot(page, name, visible=[...])`: for 800x480 and 1280x720, asserts no horizontal overflow and that the
  key elements are visible and wholly inside the viewport, then writes
  `test-artifacts/screenshots/<name>-<w>x<h>.png`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pyotp
import pytest
from click.testing import CliRunner

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
SIZES = ((800, 480), (1280, 720))
STATION = "desk-1"
AGENCY = "VA0290000"
PIN = "24681357"
PASSING_FIRST = ("img36.jpg",)
FAILING_FIRST = ("img29.jpg", "img33.jpg", "img55.jpg")
COUNTY_PROFILE = """# Test county: the shared portraits are press photos, not shot against a booking backdrop.
[gates.background_uniformity]
enabled = false
"""


# --- images -----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class FaceSources:
    """A portrait that passes every gate (live and full) and one with a face that fails a gate."""

    passing: Path
    failing: Path
    failing_codes: tuple[str, ...]


@pytest.fixture(scope="session")
def county_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("county-profiles")
    (folder / "nist-sap30.toml").write_text(COUNTY_PROFILE, encoding="utf-8")
    return folder


@pytest.fixture(scope="session")
def face_sources(faces_dir: Path, county_dir: Path, bundle: Any,
                 tmp_path_factory: pytest.TempPathFactory) -> FaceSources:
    from appliance.capture.session import CaptureStation
    from appliance.config import StationConfig
    from appliance.imageio import read_image

    station = CaptureStation.from_config(StationConfig(), data_dir=tmp_path_factory.mktemp("probe"),
                                         station_id=STATION, profile="nist-sap30", profile_dir=county_dir,
                                         bundle=bundle)
    proc = station.processor
    folder = faces_dir / "deepface"
    names = sorted(p.name for p in folder.glob("*.jpg"))
    now = datetime.now(timezone.utc)

    def verdict(name: str) -> tuple[bool, bool, tuple[str, ...], bool]:
        image = read_image(folder / name)
        live = proc.live("frontal", image)
        full = proc.process("frontal", image, mode="manual", captured_at=now)
        return live.passed, full.passed, tuple(h.code for h in full.guidance), full.template is not None

    passing = next((n for n in (*PASSING_FIRST, *names) if verdict(n)[:2] == (True, True)), None)
    failing = None
    for name in (*FAILING_FIRST, *names):
        live_ok, full_ok, codes, has_template = verdict(name)
        if not live_ok and not full_ok and has_template and codes:
            failing = (name, codes)
            break
    if passing is None or failing is None:
        pytest.fail(f"no shared portrait under {folder} passes (or fails) nist-sap30 with the test county "
                    f"profile; the quality thresholds changed: pick new test images")
    return FaceSources(folder / passing, folder / failing[0], failing[1])


# --- officers ---------------------------------------------------------------------------------------------

@dataclass
class Officer:
    """A test account; `code()` gives a TOTP code the server has not seen yet (codes are single-use)."""

    officer_id: str
    pin: str
    secret: str
    used: set[int] = field(default_factory=set)

    def code(self) -> str:
        totp = pyotp.TOTP(self.secret)
        while True:
            current = int(time.time()) // 30
            for step in (current, current + 1):  # the server accepts one step of drift
                if step not in self.used and (not self.used or step > max(self.used)):
                    self.used.add(step)
                    return totp.generate_otp(step)
            time.sleep(1.0)


def add_officer(data_dir: Path, officer_id: str, name: str = "Test Officer", pin: str = PIN) -> Officer:
    """Create an account with the real `users add` command, as the station admin would."""
    from appliance.ui.cli import main

    result = CliRunner().invoke(main, ["users", "add", officer_id, "--name", name, "--pin-stdin", "--json",
                                       "--data-dir", str(data_dir)], input=f"{pin}\n")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout.strip().splitlines()[-1])
    assert doc["totp_uri"].startswith("otpauth://totp/")
    return Officer(officer_id, pin, doc["totp_secret"])


# --- the server -------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class StationServer:
    """One `serve` subprocess over a data directory."""

    data_dir: Path
    port: int
    args: list[str]
    log: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> StationServer:
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen([sys.executable, "-m", "appliance.ui", *self.args], cwd=REPO, env=env,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                pytest.fail(f"the server exited with {self.proc.returncode}:\n{self.log.read_text()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/v1/health", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        pytest.fail(f"the server did not answer within {timeout} s:\n{self.log.read_text()}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)

    def crash(self) -> None:
        """SIGKILL: no shutdown code runs (a power cut, as far as the process can tell)."""
        assert self.proc is not None
        self.proc.kill()
        self.proc.wait(10)


ServerFactory = Callable[..., StationServer]


def turning_frames(folder: Path, face_sources: FaceSources, faces_dir: Path, frontal: int = 12,
                   turned: int = 30) -> Path:
    """A replay folder of a subject who faces the camera (`frontal` frames of the passing portrait) and then
    turns away (`turned` frames with no face the frontal detectors can find: plain wall from a shared photo).
    The shared set has no real profile, and a turned-away head is what the profile check accepts unmeasured."""
    import cv2

    folder.mkdir(parents=True, exist_ok=True)
    couple = cv2.imread(str(faces_dir / "deepface" / "couple.jpg"))
    wall = folder.parent / f"{folder.name}-wall.png"  # beside the folder: only the frames are replayed
    cv2.imwrite(str(wall), couple[: couple.shape[0] // 3, : couple.shape[1] // 3])
    for i in range(frontal + turned):
        (folder / f"frame{i:03d}.jpg").symlink_to(face_sources.passing if i < frontal else wall)
    return folder


def confirm_turn(page: Any, pose_label: str) -> None:
    """The officer reads the turn prompt of a profile to the subject and presses "Subject has turned"."""
    from playwright.sync_api import expect

    expect(page.locator("#guidance-title")).to_have_text(pose_label, timeout=20_000)
    expect(page.locator("#guidance-text")).to_contain_text("Ask the subject to turn")
    page.click("#turned-btn")


@pytest.fixture
def start_server(tmp_path: Path, county_dir: Path, face_sources: FaceSources,
                 faces_dir: Path) -> Iterator[ServerFactory]:
    """`start_server(camera=None, camera_options=None, data_dir=None, port=None, extra=[], config="", env={})`
    -> a running server. camera: a path replayed as the camera (default: `turning_frames`, the passing
    portrait and then a subject turned away); config: more station config TOML (e.g. a [store] section);
    env: extra environment for the process."""
    servers: list[StationServer] = []

    def start(camera: Path | None = None, camera_options: dict[str, Any] | None = None,
              data_dir: Path | None = None, port: int | None = None, extra: list[str] | None = None,
              config: str = "", env: dict[str, str] | None = None) -> StationServer:
        data = data_dir or tmp_path / "data"
        data.mkdir(exist_ok=True)
        source = camera or turning_frames(tmp_path / f"camera-{len(servers)}", face_sources, faces_dir)
        options = {"fps": 10, **(camera_options or {})}
        config_file = tmp_path / f"station-{len(servers)}.toml"
        config_file.write_text(_config_toml(f"replay:{source}", options) + config, encoding="utf-8")
        port = port or free_port()
        args = ["--config", str(config_file), "serve", "--port", str(port), "--data-dir", str(data),
                "--station", STATION, "--agency", AGENCY, "--profile-dir", str(county_dir), *(extra or [])]
        server = StationServer(data, port, args, tmp_path / "server.log", dict(env or {}))
        servers.append(server)
        return server.start()

    yield start
    for server in servers:
        server.stop()


def _config_toml(source: str, options: dict[str, Any]) -> str:
    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (list, tuple)):
            return "[" + ", ".join(value(x) for x in v) + "]"
        if isinstance(v, str):
            return json.dumps(v)
        return str(v)

    opts = ", ".join(f"{k} = {value(v)}" for k, v in options.items())
    return f"[camera]\nsource = {json.dumps(source)}\noptions = {{ {opts} }}\n"


# --- the browser ------------------------------------------------------------------------------------------

@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": SIZES[0][0], "height": SIZES[0][1]})
    context.set_default_timeout(15_000)
    pg = context.new_page()
    yield pg
    context.close()


def sign_in(page: Any, server: StationServer, officer: Officer, *, goto: bool = True) -> None:
    """Sign in through the form and wait until the sign-in screen is gone."""
    if goto:
        page.goto(server.url + "/")
    page.wait_for_selector("#screen-signin:not([hidden])")
    page.fill("#signin-officer", officer.officer_id)
    page.fill("#signin-pin", officer.pin)
    page.fill("#signin-code", officer.code())
    page.click("#signin-submit")
    page.wait_for_selector("#screen-signin", state="hidden")


def saved_record_id(page: Any) -> str:
    """The record id behind the page's "Saved: booking ..." confirmation (its "Details" line; the words
    name the booking number only)."""
    box = page.locator("#saved-message")
    assert not re.search(r"[0-9a-f]{8}-[0-9a-f]{4}-", box.locator(".message-text").inner_text()), (
        "a record id in the officer's words")
    found = re.search(r"record ([0-9a-f-]{36})", box.locator(".message-details code").text_content() or "")
    assert found is not None, "no record id behind the saved message's Details line"
    assert box.get_attribute("data-record-id") == found.group(1)
    return found.group(1)


def shoot(page: Any, name: str, visible: list[str], folder: Path | None = None) -> list[Path]:
    """At each screen size: no horizontal overflow, key elements visible and inside the viewport, then a
    screenshot (in `folder`, default test-artifacts/screenshots). Returns the files written."""
    folder = folder or SCREENSHOTS
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for width, height in SIZES:
        page.set_viewport_size({"width": width, "height": height})
        page.wait_for_timeout(400)  # layout, one poll and one preview frame at the new size
        overflow = page.evaluate("() => [document.documentElement.scrollWidth, document.body.scrollWidth,"
                                 " window.innerWidth]")
        assert max(overflow[0], overflow[1]) <= overflow[2], (
            f"{name} at {width}x{height}: horizontal overflow {overflow}")
        for selector in visible:
            loc = page.locator(selector).first
            assert loc.is_visible(), f"{name} at {width}x{height}: {selector} is not visible"
            box = loc.bounding_box()
            assert box is not None
            assert box["x"] >= -0.5 and box["y"] >= -0.5, f"{name} {width}x{height}: {selector} starts off-screen {box}"
            assert box["x"] + box["width"] <= width + 0.5 and box["y"] + box["height"] <= height + 0.5, (
                f"{name} at {width}x{height}: {selector} is cut off {box}")
        path = folder / f"{name}-{width}x{height}.png"
        page.screenshot(path=str(path))
        files.append(path)
    page.set_viewport_size({"width": SIZES[0][0], "height": SIZES[0][1]})
    return files


# --- reading the station's own files ----------------------------------------------------------------------

def audit_actions(data_dir: Path) -> list[tuple[str, str, dict]]:
    """(actor, action, details) of every audit entry, oldest first."""
    from appliance.store import Store

    with Store.open_data_dir(data_dir) as store:
        rows = store.conn.execute("SELECT actor, action, details FROM audit ORDER BY seq").fetchall()
        assert store.verify_audit() is None, "the audit chain is broken"
    return [(a, b, json.loads(c)) for a, b, c in rows]


def api_call(server: StationServer, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             opener: urllib.request.OpenerDirector | None = None) -> tuple[int, Any, Any]:
    """(status, JSON body, response headers) of one API call, without a browser."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(server.url + path, method=method, data=data,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with (opener or urllib.request.build_opener()).open(req, timeout=10) as r:
            return r.status, _body(r.read()), r.headers
    except urllib.error.HTTPError as exc:
        return exc.code, _body(exc.read()), exc.headers


def _body(raw: bytes) -> Any:
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")
