"""One run per stage state: a lock file in the stage's ``state_dir``.

:func:`~ups_kedro.training.launcher.fit` holds :class:`StageLock` while it trains, so two runs
of one stage can never write the same ``last.pt`` or resume each other's live state.

The lock is an exclusive ``flock`` on ``state_dir/.lock``, whose JSON content names the
holder (pid, host, run id, stage, start time) for the message a second run gets.  The
kernel drops an ``flock`` when its process dies, however it dies, so a lock left by a
killed run can never block the next one, and taking the lock needs no pid liveness guess
(pids are recycled) and has no window in which two runs both win.  A lock file that still
names a holder when the lock is free is such a leftover: it is taken over with a warning.
The file itself stays (emptied on release): removing it would let a run that opened it just
before lock a file no other run can see any more.

Beside it, ``status.json`` (:mod:`~ups_kedro.training.stage_status`) records what the last run
of the stage was; a status ``running`` counts only while this lock is held (else: killed).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Any

logger = logging.getLogger(__name__)

LOCK_NAME = ".lock"


class StageLockedError(RuntimeError):
    """Another live run holds the stage's state."""


class StageLock:
    """Context manager holding ``state_dir/.lock`` for ``stage`` (see the module docstring)."""

    def __init__(self, state_dir: Path, stage: str, run_id: str | None = None) -> None:
        self.path = Path(state_dir) / LOCK_NAME
        self.stage = stage
        self.info = {
            "stage": stage,
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "run_id": run_id or f"local-{uuid.uuid4().hex[:12]}",
            "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        }
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the lock or raise :class:`StageLockedError` naming its holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read(fd)
            os.close(fd)
            raise StageLockedError(
                f"{self.stage} is locked by pid {holder.get('pid', '?')}, run "
                f"{holder.get('run_id', '?')} (host {holder.get('host', '?')}, since "
                f"{holder.get('since', '?')}) — wait for it or remove {self.path} if that "
                "process is gone"
            ) from None
        except BaseException:
            os.close(fd)
            raise
        previous = _read(fd)
        if previous:
            logger.warning(
                "stage %r: taking over the stale lock %s of pid %s, run %s (that process "
                "ended without releasing it)",
                self.stage, self.path, previous.get("pid", "?"), previous.get("run_id", "?"),
            )
        _write(fd, json.dumps(self.info).encode())
        self._fd = fd

    def release(self) -> None:
        """Empty the lock file (no holder) and drop the lock."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            _write(fd, b"")
        os.close(fd)  # releases the flock

    def __enter__(self) -> StageLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


def _read(fd: int) -> dict[str, Any]:
    """The holder recorded in the lock file (``{}`` when empty or unreadable)."""
    try:
        os.lseek(fd, 0, os.SEEK_SET)
        data = os.read(fd, 65536)
        holder = json.loads(data) if data.strip() else {}
    except (OSError, ValueError):
        return {}
    return holder if isinstance(holder, dict) else {}


def _write(fd: int, data: bytes) -> None:
    os.ftruncate(fd, 0)
    os.lseek(fd, 0, os.SEEK_SET)
    os.write(fd, data)
    os.fsync(fd)
