"""Data-parallel mechanics of the training loop: the process group, sharding, collectives.

No Kedro, no MLflow, and nothing of the loop itself: :mod:`~ups_kedro.training.loop` reads
:func:`context` and uses the sampler and collectives here; how the processes come to exist is
:mod:`~ups_kedro.training.launcher`'s business.  Two ways a training run becomes distributed:

* **Spawned** (``<stage>.train.distributed.nproc_per_node`` = N > 1, one machine): the calling
  process (the Kedro node) starts N worker processes (:mod:`~ups_kedro.training.spawn`) and
  does not join their process group itself; each worker joins with :func:`join_spawned`.
* **torchrun** (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment, world size > 1):
  every process already runs the caller; ``fit`` joins the group (:func:`join_torchrun`,
  ``env://``) instead of spawning.  Rank 0 alone writes training state and calls
  ``on_epoch_end``; what happens outside ``fit`` (catalog writes, MLflow) is the caller's
  business (the Kedro hooks).

Semantics shared by both (the engine's contract with ``batch_size``):

* ``batch_size`` / ``eval_batch_size`` stay the *global* micro-batch.  Each epoch every rank
  draws the same permutation from the same seeded generator that a single process would use
  (including the generator draws a ``DataLoader`` makes), cuts it into the same global batches
  and takes a contiguous share of each: ⌈B/N⌉ or ⌊B/N⌋ samples, so a batch size that is not
  divisible by N simply gives some ranks one sample more (a short last batch may leave a rank
  with no sample; it then contributes a zero gradient).
* Each rank scales its mean loss by ``n_rank / n_global`` and the gradients are *summed* across
  ranks (one flat all-reduce per optimizer step): every step applies exactly the mean gradient
  over the global batch, as one process would, up to floating-point summation order.  Model
  weights are broadcast from rank 0 at the start; optimizer, scheduler, clipping and EMA then
  run identically on every rank.
* Per-epoch loss sums and counts are gathered and combined in rank order, so every rank sees
  the same epoch metrics and takes the same early-stopping / best-epoch decisions.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import logging
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import Sampler
from torch.utils.data._utils.collate import default_collate

from ups_kedro.launch_env import launched_rank, launched_world_size  # noqa: F401 - re-exported

logger = logging.getLogger(__name__)

TORCHRUN_ENV = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class DistContext:
    """This process's place in the group."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    launcher: str  # "spawn" | "torchrun"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


_CONTEXT: DistContext | None = None
_EXIT_STATUS: int | None = None
_ATEXIT_REGISTERED = False


def context() -> DistContext | None:
    """The active distributed context (``None``: plain single-process training)."""
    return _CONTEXT


def is_main_process() -> bool:
    return _CONTEXT is None or _CONTEXT.is_main


def resolve_backend(backend: str, device: torch.device | str) -> str:
    device = torch.device(device)
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    return backend


# --------------------------------------------------------------------------------------------
# joining a process group


def join_torchrun(cfg: Any) -> DistContext:
    """Join (or reuse) the ``env://`` process group that torchrun set up; CUDA → cuda:LOCAL_RANK."""
    global _CONTEXT  # noqa: PLW0603 - one process-wide context
    rank, world = launched_rank(), launched_world_size()
    assert rank is not None
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = torch.device(cfg.device)
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(
            backend=resolve_backend(cfg.distributed.backend, device),
            timeout=datetime.timedelta(seconds=cfg.distributed.timeout_sec),
        )
        _register_clean_exit()
    _CONTEXT = DistContext(rank, world, local_rank, device, "torchrun")
    return _CONTEXT


def join_spawned(rank: int, world: int, port: int, cfg: Any, threads: int) -> DistContext:
    """Join the ``tcp://127.0.0.1:port`` group of spawned workers as ``rank``.

    CUDA: this rank's device is ``cuda:rank``; CPU: the worker uses ``threads`` torch threads.
    """
    global _CONTEXT  # noqa: PLW0603 - one process-wide context
    device = torch.device(cfg.device)
    if device.type == "cuda":
        device = torch.device("cuda", rank)
        torch.cuda.set_device(device)
    else:
        torch.set_num_threads(threads)
    dist.init_process_group(
        backend=resolve_backend(cfg.distributed.backend, device),
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
        timeout=datetime.timedelta(seconds=cfg.distributed.timeout_sec),
    )
    _CONTEXT = DistContext(rank, world, rank, device, "spawn")
    return _CONTEXT


def set_exit_status(code: int) -> None:
    """Tell the exit handler how this process ended (set by the Kedro hooks under torchrun).

    With a status set, the handler destroys the process group, flushes output and leaves with
    ``os._exit(code)``: this skips gloo's static destructors, whose occasional abort at exit
    ("terminate called without an active exception") would otherwise fail a finished run.
    """
    global _EXIT_STATUS  # noqa: PLW0603
    _EXIT_STATUS = int(code)


def flush_all() -> None:
    """Flush stdout, stderr and logging (before an ``os._exit``)."""
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    with contextlib.suppress(Exception):
        logging.shutdown()


def _clean_exit() -> None:
    if dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()
    if _EXIT_STATUS is not None:
        flush_all()
        os._exit(_EXIT_STATUS)


def _register_clean_exit() -> None:
    global _ATEXIT_REGISTERED  # noqa: PLW0603
    if not _ATEXIT_REGISTERED:
        atexit.register(_clean_exit)
        _ATEXIT_REGISTERED = True


# --------------------------------------------------------------------------------------------
# data: the same global batches as one process, each rank taking its share


class ShardedBatchSampler(Sampler[list[int]]):
    """Global batches of ``batch_size`` cut from one permutation; yields this rank's share.

    With ``shuffle`` it draws from ``generator`` exactly what ``RandomSampler`` does (two
    ``randperm`` calls per epoch, the second discarded), so the loader generator's state after
    every epoch equals a single process's: resume and seeding are unchanged.
    """

    def __init__(
        self,
        n: int,
        batch_size: int,
        *,
        rank: int,
        world_size: int,
        shuffle: bool,
        generator: torch.Generator | None,
    ) -> None:
        self.n, self.batch_size = n, batch_size
        self.rank, self.world_size = rank, world_size
        self.shuffle, self.generator = shuffle, generator

    def __len__(self) -> int:
        return math.ceil(self.n / self.batch_size)

    def global_size(self, index: int) -> int:
        return min(self.batch_size, self.n - index * self.batch_size)

    def share(self, size: int) -> tuple[int, int]:
        base, extra = divmod(size, self.world_size)
        lo = self.rank * base + min(self.rank, extra)
        return lo, lo + base + (1 if self.rank < extra else 0)

    def __iter__(self):
        if self.shuffle:
            order = torch.randperm(self.n, generator=self.generator).tolist()
            torch.randperm(self.n, generator=self.generator)  # RandomSampler's trailing draw
        else:
            order = list(range(self.n))
        for start in range(0, self.n, self.batch_size):
            chunk = order[start : start + self.batch_size]
            lo, hi = self.share(len(chunk))
            yield chunk[lo:hi]


class ShardCollate:
    """Collate that turns a rank's empty share into ``None`` (that rank skips the batch)."""

    def __init__(self, collate_fn: Callable[[list[Any]], Any] | None) -> None:
        self.collate_fn = collate_fn

    def __call__(self, items: list[Any]) -> Any:
        if not items:
            return None
        return (self.collate_fn or default_collate)(items)


# --------------------------------------------------------------------------------------------
# collectives


def broadcast_module(model: nn.Module) -> None:
    """Rank 0's parameters and buffers everywhere (identical starting point)."""
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            dist.broadcast(tensor.data, src=0)


def all_reduce_gradients(params: Sequence[nn.Parameter]) -> None:
    """Sum gradients over ranks (each rank already weighted its loss by its sample share).

    A parameter keeps ``grad=None`` only when it has no gradient on every rank, as in one
    process (so AdamW's decoupled weight decay skips it there too).
    """
    if not params:
        return
    device = params[0].device
    present = torch.tensor(
        [1.0 if p.grad is not None else 0.0 for p in params], device=device, dtype=torch.float32
    )
    dist.all_reduce(present)
    buckets: dict[torch.dtype, list[int]] = {}
    for i, p in enumerate(params):
        buckets.setdefault(p.dtype, []).append(i)
    for dtype, indices in buckets.items():
        flat = torch.cat(
            [
                (params[i].grad if params[i].grad is not None else torch.zeros_like(params[i]))
                .detach()
                .reshape(-1)
                .to(dtype)
                for i in indices
            ]
        )
        dist.all_reduce(flat)
        offset = 0
        for i in indices:
            p = params[i]
            size = p.numel()
            if present[i] > 0:
                p.grad = flat[offset : offset + size].view_as(p).clone()
            else:
                p.grad = None
            offset += size


def gather_objects(obj: Any) -> list[Any]:
    """``obj`` from every rank, in rank order, on every rank."""
    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any) -> Any:
    box = [obj if dist.get_rank() == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]
