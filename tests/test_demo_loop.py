"""`make demo`'s whole loop, run exactly as make runs it: `python -m appliance.demo_loop` as a subprocess.

County CA, broker, enrolment server and gallery worker, a station provisioned with a one-time token, two
bookings captured from a replay camera, delivered and acked, stored and exported: the summary line must
count every booking at every stage, the temporary demo folder must be gone afterwards, and so must every
process the demo started (each of them has the demo folder on its command line).
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

from tests.sync.broker import INSTALL_HINT, mosquitto_binary

REPO = Path(__file__).resolve().parents[1]
SUMMARY = re.compile(r"^summary: captured (\d+), delivered (\d+), stored (\d+), exported (\d+)", re.MULTILINE)
FOLDER = re.compile(r"demo folder: (\S+) \(")


def processes_mentioning(text: str) -> list[str]:
    """Command lines of running processes that contain ``text``."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            line = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in line:
            found.append(line)
    return found


def test_demo_loop_delivers_every_booking_to_the_gallery(shared_data: Path) -> None:
    assert mosquitto_binary() is not None, f"the demo needs Mosquitto: {INSTALL_HINT}"
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "appliance.demo_loop", "--bookings", "2", "--shared",
                           str(shared_data)], cwd=REPO, capture_output=True, text=True, timeout=90)
    elapsed = time.monotonic() - started
    report = f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, report

    summary = SUMMARY.search(proc.stdout)
    assert summary is not None, report
    captured, delivered, stored, exported = map(int, summary.groups())
    assert (captured, delivered, stored, exported) == (2, 2, 2, 2), report

    # One progress line per step, each foreground command shown in short form (no absolute demo paths).
    assert "$ booking-gallery ca init --ca-dir county/ca" in proc.stdout, report
    assert "$ booking-station provision " in proc.stdout, report
    assert proc.stdout.count("$ booking-station --config station/etc/station.toml capture ") == 2, report
    # Every demo booking passes the live gates and is taken by auto-capture, none by hand after the timeout.
    assert proc.stdout.count("(auto-captured") == 2 and "taken by hand" not in proc.stdout, report
    assert "exit status sync 0, gallery 0, enroll-server 0, mosquitto 0" in proc.stdout, report

    folder = FOLDER.search(proc.stdout)
    assert folder is not None, report
    assert not Path(folder.group(1)).exists(), "the temporary demo folder was left behind"
    assert not Path(folder.group(1)).is_relative_to(REPO), "the demo must not write into the repository"
    assert processes_mentioning(folder.group(1)) == [], "a process the demo started is still running"
    assert elapsed < 60, f"the demo loop took {elapsed:.0f} s\n{report}"
