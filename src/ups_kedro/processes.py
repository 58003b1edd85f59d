"""Is a process still there?  Shared by the MLflow run-status hooks and the stage status file
(no Kedro, MLflow or torch imports)."""

from __future__ import annotations

import os


def process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (field 22 of /proc/<pid>/stat), to tell reused pids."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_alive(pid: int, started: str | None) -> bool:
    """``pid`` runs and, when ``started`` (its :func:`process_start`) is known, is that process
    (not a later one that reused the pid).  For the stage status as well as for orphaned runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return started is None or process_start(pid) in (None, started)
