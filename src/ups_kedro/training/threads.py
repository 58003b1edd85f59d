"""How many torch threads a stage trains with (``<stage>.train.num_threads``).

The models here are small (a few hundred thousand parameters, batches of 16–128 latents), so
extra intra-op threads buy little, while *over-subscribed* threads cost a lot: OpenMP workers
spin-wait at every barrier, and with another busy process on the machine an epoch slowed
by more than an order of magnitude against one thread.  So the automatic choice counts only
cores that are idle right now:

1. ``num_threads`` set: that;
2. ``OMP_NUM_THREADS`` set: torch already follows it, leave it;
3. otherwise the idle cores (usable cores minus the CPU that *other* processes used over a
   short sample), capped at :data:`MAX_AUTO_THREADS`, at least 1.

The cap of 4: beyond that these models gain nothing measurable and a shared machine loses.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import time
from collections.abc import Iterator

import torch

logger = logging.getLogger(__name__)

MAX_AUTO_THREADS = 4
SAMPLE_SEC = 0.25


def usable_cores() -> int:
    """Cores this process may run on (its affinity mask, else the CPU count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _busy_ticks() -> int | None:
    """Busy clock ticks of the whole machine since boot (``/proc/stat``), ``None`` off Linux."""
    try:
        with open("/proc/stat") as handle:
            fields = [int(v) for v in handle.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle


def other_load(sample_sec: float = SAMPLE_SEC) -> float | None:
    """Cores' worth of CPU used by *other* processes over ``sample_sec`` (``None``: unknown)."""
    start = _busy_ticks()
    if start is None:
        return None
    own0, wall0 = time.process_time(), time.monotonic()
    time.sleep(sample_sec)
    end = _busy_ticks()
    own, wall = time.process_time() - own0, time.monotonic() - wall0
    if end is None or wall <= 0:
        return None
    hz = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    machine = (end - start) / hz / wall
    return max(0.0, machine - own / wall)


def choose_threads(requested: int | None) -> tuple[int | None, str]:
    """``(threads to set or None to leave torch alone, why)``."""
    if requested is not None:
        return requested, "train.num_threads"
    if os.environ.get("OMP_NUM_THREADS"):
        return None, f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}"
    cores = usable_cores()
    busy = other_load()
    if busy is None:
        return min(cores, MAX_AUTO_THREADS), f"{cores} usable cores (load unknown)"
    idle = math.floor(cores - busy + 0.25)  # a quarter core of noise still counts as idle
    threads = max(1, min(idle, MAX_AUTO_THREADS))
    return threads, f"{cores} usable cores, {busy:.1f} busy with other processes"


@contextlib.contextmanager
def torch_threads(requested: int | None, stage: str) -> Iterator[int]:
    """Run a block with the chosen torch intra-op thread count, restoring the previous one."""
    previous = torch.get_num_threads()
    threads, why = choose_threads(requested)
    if threads is not None and threads != previous:
        torch.set_num_threads(threads)
    logger.info("stage %r: %d torch thread(s) (%s)", stage, torch.get_num_threads(), why)
    try:
        yield torch.get_num_threads()
    finally:
        if torch.get_num_threads() != previous:
            torch.set_num_threads(previous)
