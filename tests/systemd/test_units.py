"""The systemd units, users and directories, checked by systemd's own tools without a running systemd.

`install.sh --root` stages everything into a temporary root, with ExecStart= rewritten to this venv's
real console scripts (`systemd-analyze verify` checks that the binary exists and is executable); the
staged units must then verify with no error and no warning, and `systemd-analyze security --offline`
must rate them well. The staged sysusers.d/tmpfiles.d files are applied to the temporary root by
systemd-sysusers and systemd-tmpfiles themselves. The enrolment server is run the way its unit runs it
(options from the environment, $NOTIFY_SOCKET, WatchdogSec, SIGTERM) and under the kernel's
memory-deny-write-execute, which its unit sets.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from sync.county.enroll.ca import CountyCA, certificate_pem, generate_tls_key, private_key_pem
from sync.county.enroll.tokens import TokenStore

REPO = Path(__file__).resolve().parents[2]
SYSTEMD = REPO / "systemd"
INSTALL = SYSTEMD / "install.sh"
BIN_DIR = Path(sys.executable).parent
UNITS = {
    "booking-station.service": ("booking-station", "/var/lib/booking-station", "booking-station", "serve"),
    "booking-station-sync.service": ("booking-station", "/var/lib/booking-station", "booking-station", "sync"),
    "booking-gallery.service": ("booking-gallery", "/var/lib/booking-gallery", "booking-gallery", "receive"),
    "booking-gallery-enroll.service": ("booking-enroll", "/var/lib/booking-enroll", "booking-gallery",
                                       "enroll-server"),
}
SYSTEMD_HINT = "systemd-analyze, systemd-sysusers and systemd-tmpfiles come with Debian's systemd package"


def _tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.fail(f"{name} is not installed ({SYSTEMD_HINT}: apt-get install -y systemd)")
    return path


def _install(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(INSTALL), "--root", str(root), "--bin-dir", str(BIN_DIR), *args],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(scope="module")
def staged(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two staged roots: everything with the Jetson CSI drop-in, and the plain units."""
    for script in ("booking-station", "booking-gallery"):
        if not os.access(BIN_DIR / script, os.X_OK):
            pytest.fail(f"{BIN_DIR / script} is missing: install the project first (make install)")
    _tool("systemd-sysusers")
    _tool("systemd-tmpfiles")
    roots = {}
    for name, extra in (("plain", []), ("jetson", ["--jetson-csi"])):
        root = tmp_path_factory.mktemp(f"root-{name}")
        done = _install(root, "--side", "all", *extra)
        assert done.returncode == 0, done.stdout + done.stderr
        roots[name] = root
    return roots


def _unit_dir(root: Path) -> Path:
    return root / "etc" / "systemd" / "system"


def _settings(path: Path) -> dict[str, dict[str, list[str]]]:
    """A unit file as {section: {key: [values in order]}} (keys may repeat, as DeviceAllow= does)."""
    sections: dict[str, dict[str, list[str]]] = {}
    current: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            current = sections.setdefault(line.strip("[]"), {})
            continue
        key, _, value = line.partition("=")
        current.setdefault(key.strip(), []).append(value.strip())
    return sections


# --- systemd's verdict ---------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["plain", "jetson"])
def test_every_unit_verifies_without_errors_or_warnings(staged: dict[str, Path], variant: str) -> None:
    analyze = _tool("systemd-analyze")
    unit_dir = _unit_dir(staged[variant])
    for unit in UNITS:
        done = subprocess.run([analyze, "verify", str(unit_dir / unit)], capture_output=True, text=True,
                              cwd=unit_dir, timeout=60, env={**os.environ, "SYSTEMD_LOG_COLOR": "0"})
        output = (done.stdout + done.stderr).strip()
        assert done.returncode == 0 and output == "", f"{unit} ({variant}):\n{output}"


def test_verify_does_catch_mistakes(staged: dict[str, Path], tmp_path: Path) -> None:
    """The check above is only worth something if verify speaks up: a typo and a missing binary."""
    analyze = _tool("systemd-analyze")
    source = (_unit_dir(staged["plain"]) / "booking-gallery-enroll.service").read_text()
    broken = tmp_path / "booking-gallery-enroll.service"
    broken.write_text(source.replace("ProtectHome=yes", "ProtectHome=yes\nProtectHomes=yes")
                      .replace(str(BIN_DIR / "booking-gallery"), "/nonexistent/booking-gallery"))
    done = subprocess.run([analyze, "verify", str(broken)], capture_output=True, text=True, timeout=60)
    output = done.stdout + done.stderr
    assert "Unknown key" in output and "ProtectHomes" in output
    assert "is not executable" in output


def test_hardening_exposure_is_low(staged: dict[str, Path]) -> None:
    analyze = _tool("systemd-analyze")
    unit_dir = _unit_dir(staged["plain"])
    for unit in UNITS:
        done = subprocess.run([analyze, "security", "--offline=true", "--no-pager", str(unit_dir / unit)],
                              capture_output=True, text=True, cwd=unit_dir, timeout=60)
        match = re.search(r"Overall exposure level for \S+: (\d+\.\d)", done.stdout + done.stderr)
        assert match, done.stdout + done.stderr
        assert float(match.group(1)) <= (2.0 if unit == "booking-station.service" else 1.5), (unit, match.group(0))


# --- what the units say --------------------------------------------------------------------------------


@pytest.mark.parametrize("unit", list(UNITS))
def test_unit_runs_its_command_sandboxed_under_its_own_user(unit: str) -> None:
    user, data_dir, command, subcommand = UNITS[unit]
    s = _settings(SYSTEMD / unit)["Service"]
    one = {key: values[-1] for key, values in s.items()}
    assert one["Type"] == "notify" and int(one["WatchdogSec"]) > 0 and one["Restart"] == "on-failure"
    assert one["User"] == user and one["Group"] == user and "DynamicUser" not in one
    assert one["ExecStart"].startswith(f"/usr/bin/{command} ") and subcommand in one["ExecStart"].split()
    assert one["ProtectSystem"] == "strict" and s["ReadWritePaths"] == [data_dir]
    for key in ("ProtectHome", "PrivateTmp", "NoNewPrivileges", "ProtectKernelTunables", "ProtectKernelModules",
                "ProtectKernelLogs", "ProtectControlGroups", "LockPersonality", "RestrictSUIDSGID",
                "RestrictNamespaces", "RestrictRealtime"):
        assert one[key] == "yes", key
    assert one["CapabilityBoundingSet"] == "" and one["AmbientCapabilities"] == ""
    assert "@system-service" in s["SystemCallFilter"]
    assert set(one["RestrictAddressFamilies"].split()) >= {"AF_UNIX", "AF_INET", "AF_INET6"}
    if unit == "booking-station.service":
        assert "MemoryDenyWriteExecute" not in one  # see the comment in the unit: GStreamer ORC, GPU delegates
        assert one["DevicePolicy"] == "closed"
        assert s["DeviceAllow"] == ["char-video4linux rw", "char-media rw", "char-dma_heap rw"]
        assert "AF_NETLINK" in one["RestrictAddressFamilies"]
    else:
        assert one["MemoryDenyWriteExecute"] == "yes" and one["PrivateDevices"] == "yes"
        assert "AF_NETLINK" not in one["RestrictAddressFamilies"]


def test_units_are_installed_with_the_bin_dir_and_nothing_else_changed(staged: dict[str, Path]) -> None:
    for unit in UNITS:
        shipped = (SYSTEMD / unit).read_text()
        installed = (_unit_dir(staged["plain"]) / unit).read_text()
        assert installed == shipped.replace("ExecStart=/usr/bin/", f"ExecStart={BIN_DIR}/")
        assert stat.S_IMODE((_unit_dir(staged["plain"]) / unit).stat().st_mode) == 0o644
    assert not (_unit_dir(staged["plain"]) / "booking-station.service.d").exists()
    dropin = _unit_dir(staged["jetson"]) / "booking-station.service.d" / "jetson-csi.conf"
    assert dropin.read_text() == (SYSTEMD / "dropins" / "jetson-csi.conf").read_text()


# --- users and directories -----------------------------------------------------------------------------


def _passwd(root: Path) -> dict[str, list[str]]:
    return {line.split(":")[0]: line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines()}


def test_sysusers_and_tmpfiles_create_users_and_private_directories(staged: dict[str, Path]) -> None:
    root = staged["plain"]
    users = _passwd(root)
    for user in ("booking-station", "booking-gallery", "booking-enroll"):
        assert user in users and users[user][6] in ("/usr/sbin/nologin", "/sbin/nologin"), users.get(user)
    groups = {line.split(":")[0]: line.split(":") for line in (root / "etc" / "group").read_text().splitlines()}
    assert "booking-station" in groups["video"][3].split(",")
    expected = {
        "var/lib/booking-station": ("booking-station", 0o750),
        "var/lib/booking-station/keys": ("booking-station", 0o700),
        "var/lib/booking-gallery": ("booking-gallery", 0o750),
        "var/lib/booking-enroll": ("booking-enroll", 0o700),
    }
    for rel, (owner, mode) in expected.items():
        info = (root / rel).stat()
        assert stat.S_IMODE(info.st_mode) == mode, rel
        if os.geteuid() == 0:  # only root can chown to the staged users' ids
            assert info.st_uid == int(users[owner][2]), rel
    enroll_etc = (root / "etc" / "booking-enroll").stat()
    assert stat.S_IMODE(enroll_etc.st_mode) == 0o750


def test_device_side_installs_only_device_units_and_users(tmp_path: Path) -> None:
    done = _install(tmp_path, "--side", "device")
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in _unit_dir(tmp_path).glob("*.service")) == [
        "booking-station-sync.service", "booking-station.service"]
    assert "booking-enroll" not in _passwd(tmp_path) and "booking-station" in _passwd(tmp_path)


def test_dry_run_prints_every_step_and_changes_nothing(tmp_path: Path) -> None:
    done = _install(tmp_path, "--side", "county", "--dry-run", "--enable")
    assert done.returncode == 0, done.stderr
    assert list(tmp_path.iterdir()) == []
    steps = [line for line in done.stdout.splitlines() if line.startswith("+ ")]
    assert any("booking-gallery-enroll.service" in s and s.startswith("+ install") for s in steps)
    assert any(s.startswith("+ systemd-sysusers") for s in steps)
    assert any(s.startswith("+ systemd-tmpfiles") and "--create" in s for s in steps)
    assert any(s.startswith("+ systemctl") and "enable" in s for s in steps)


@pytest.mark.parametrize(("args", "message"), [
    ([], "--side device|county|all is required"),
    (["--side", "desk"], "--side must be device, county or all"),
    (["--side", "county", "--jetson-csi"], "--jetson-csi is for the device side"),
    (["--side", "device", "--frobnicate"], "unknown option: --frobnicate"),
])
def test_install_refuses_bad_options(tmp_path: Path, args: list[str], message: str) -> None:
    done = subprocess.run(["bash", str(INSTALL), "--root", str(tmp_path), *args], capture_output=True, text=True,
                          timeout=30)
    assert done.returncode == 2 and message in done.stderr
    assert list(tmp_path.iterdir()) == []


# --- the enrolment server as its unit runs it ----------------------------------------------------------

RUN_UNDER_MDWE = """
import ctypes, mmap, sys
libc = ctypes.CDLL(None, use_errno=True)
if libc.prctl(65, 1, 0, 0, 0) != 0:  # PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN (Linux 6.3+)
    sys.exit(77)
try:
    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)
except OSError:
    pass
else:
    sys.exit(78)  # the restriction is not in force: the test would prove nothing
from sync.county.enroll.cli import enroll_server
enroll_server(prog_name="booking-gallery enroll-server")
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _mdwe_supported() -> bool:
    probe = subprocess.run([sys.executable, "-c", RUN_UNDER_MDWE.split("from sync")[0]], timeout=30)
    return probe.returncode == 0


def test_enroll_server_notifies_systemd_and_works_under_memory_deny_write_execute(tmp_path: Path) -> None:
    if not _mdwe_supported():
        pytest.skip("this kernel has no PR_SET_MDWE (Linux 6.3+); MemoryDenyWriteExecute cannot be imitated")
    ca = CountyCA.init(tmp_path / "ca", "test-county")
    key = generate_tls_key()
    cert = ca.issue_server_certificate(key.public_key(), ["127.0.0.1"])
    (tmp_path / "tls.crt").write_bytes(certificate_pem(cert).encode())
    (tmp_path / "tls.key").write_bytes(private_key_pem(key))
    token = TokenStore.in_ca_dir(tmp_path / "ca").issue("test-county", "desk-1").token

    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    notify.settimeout(20)
    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO), "NOTIFY_SOCKET": str(tmp_path / "notify"),
           "WATCHDOG_USEC": "1000000", "BOOKING_CA_DIR": str(tmp_path / "ca"), "BOOKING_ENROLL_HOST": "127.0.0.1",
           "BOOKING_ENROLL_PORT": str(port), "BOOKING_ENROLL_TLS_CERT": str(tmp_path / "tls.crt"),
           "BOOKING_ENROLL_TLS_KEY": str(tmp_path / "tls.key"), "BOOKING_ENROLL_MQTT_HOST": "mqtt.test"}
    env.pop("WATCHDOG_PID", None)
    server = subprocess.Popen([sys.executable, "-c", RUN_UNDER_MDWE], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        first = notify.recv(1024).decode().split("\n")
        assert first[0] == "READY=1", first
        assert notify.recv(1024) == b"WATCHDOG=1"  # fed from the accept loop
        assert notify.recv(1024) == b"WATCHDOG=1"

        from firmware.provision import provision

        lines: list[str] = []
        result = provision("test-county", "desk-1", f"https://127.0.0.1:{port}/enroll", token, tmp_path / "ca/ca.crt",
                           tmp_path / "etc", tmp_path / "var", echo=lines.append, service_user=None)
        assert result.status == "enrolled"
        assert any("MQTT broker: mqtt.test:8883" in line for line in lines)
        health = requests.get(f"https://127.0.0.1:{port}/healthz", verify=str(tmp_path / "ca/ca.crt"), timeout=10)
        assert health.json()["status"] == "ok"

        server.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        seen: list[bytes] = []
        while b"STOPPING=1" not in seen and time.monotonic() < deadline:
            seen.append(notify.recv(1024))
        assert b"STOPPING=1" in seen
        assert server.wait(10) == 0
    finally:
        if server.poll() is None:
            server.kill()
            server.wait(5)
        notify.close()
    log = server.stdout.read() if server.stdout else ""
    assert "enrolled station desk-1" in log and token not in log  # the secret never reaches the journal

