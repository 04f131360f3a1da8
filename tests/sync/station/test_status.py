"""Whether the agent that wrote a status file still runs: one answer for `status` and the officer UI."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from sync.station.status import pid_alive


def test_this_process_is_alive() -> None:
    assert pid_alive(os.getpid())


def test_a_finished_process_is_not() -> None:
    done = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    assert not pid_alive(int(done.stdout))


@pytest.mark.parametrize("pid", [None, True, False, 0, -1, "123", 12.0])
def test_a_missing_or_malformed_pid_is_not_a_running_agent(pid: object) -> None:
    """None included: a status file that does not name its process proves nothing runs."""
    assert not pid_alive(pid)
