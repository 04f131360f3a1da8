"""Reading the sync agent's status file: is the process it names still there?

The agent writes ``DATA_DIR/sync/status.json`` with its ``pid``; the station's ``status`` command and the
officer UI's queue screen (:mod:`appliance.ui.health`) both read it, and both must answer "is the agent
running?" the same way. Nothing heavy here, so the UI can import it without the agent.
"""

from __future__ import annotations

import os


def pid_alive(pid: object) -> bool:
    """Whether the process ``pid`` exists on this device (one we may not signal exists too).

    Anything but a positive int, including None (a file that does not name its process) and a bool, is
    not alive: a status file is proof that the agent runs only when the process it names is there.
    """
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
