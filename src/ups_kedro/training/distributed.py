"""Data-parallel mechanics for :func:`ups_kedro.training.loop.fit` (no Kedro, no MLflow).

Two ways a training run becomes distributed:

* **Spawned** (``<stage>.train.distributed.nproc_per_node`` = N > 1, one machine): the calling
  process (the Kedro node) starts N worker processes and does not join their process group
  itself.  Rank 0 sends every epoch's metrics back through a queue and the caller's
  ``on_epoch_end`` runs *in the calling process* (where the MLflow run is active); rank 0
  writes the result to a file before the group is torn down, so gloo's occasional abort at
  process exit (see the stack notes) can never turn a finished run into a failure: once the
  result has arrived, a worker's exit code is only logged.
* **torchrun** (``RANK``/``WORLD_SIZE``/``LOCAL_RANK`` in the environment, world size > 1):
  every process already runs the caller; ``fit`` joins the group (``env://``) instead of
  spawning.  Rank 0 alone writes training state and calls ``on_epoch_end``; what happens
  outside ``fit`` (catalog writes, MLflow) is the caller's business (the Kedro hooks).

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
import dataclasses
import datetime
import io
import logging
import math
import os
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from multiprocessing import connection as mp_connection
from multiprocessing import util as mp_util
from torch import Tensor, nn
from torch.utils.data import Sampler
from torch.utils.data._utils.collate import default_collate

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


def launched_rank() -> int | None:
    """``RANK`` set by ``torchrun`` (or any env:// launcher), ``None`` when not launched so."""
    value = os.environ.get("RANK")
    if value is None or "WORLD_SIZE" not in os.environ:
        return None
    try:
        return int(value)
    except ValueError:
        return None


def launched_world_size() -> int:
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) if launched_rank() is not None else 1
    except ValueError:
        return 1


def resolve_backend(backend: str, device: torch.device | str) -> str:
    device = torch.device(device)
    if backend == "auto":
        return "nccl" if device.type == "cuda" else "gloo"
    return backend


# --------------------------------------------------------------------------------------------
# joining a torchrun group


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


def set_exit_status(code: int) -> None:
    """Tell the exit handler how this process ended (set by the Kedro hooks under torchrun).

    With a status set, the handler destroys the process group, flushes output and leaves with
    ``os._exit(code)``: this skips gloo's static destructors, whose occasional abort at exit
    ("terminate called without an active exception") would otherwise fail a finished run.
    """
    global _EXIT_STATUS  # noqa: PLW0603
    _EXIT_STATUS = int(code)


def _flush_all() -> None:
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
        _flush_all()
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


# --------------------------------------------------------------------------------------------
# spawning workers from the calling process


class DistributedWorkerError(RuntimeError):
    """A worker process failed; the message holds its traceback."""


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_FORK_PAYLOAD: dict[str, Any] | None = None


def _threads_per_proc(cfg: Any) -> int:
    if cfg.distributed.threads_per_proc is not None:
        return cfg.distributed.threads_per_proc
    return max(1, (os.cpu_count() or 1) // cfg.distributed.nproc_per_node)


def spawn_fit(
    model: nn.Module,
    task: Any,
    train_data: Any,
    val_data: Any,
    cfg: Any,
    *,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None,
    poll_sec: float = 0.2,
    exit_grace_sec: float = 60.0,
    **fit_kwargs: Any,
) -> dict[str, Any]:
    """Run ``fit`` in ``cfg.distributed.nproc_per_node`` workers; returns rank 0's result dict.

    ``on_epoch_end`` is called here, in the calling process, with rank 0's metrics.
    """
    global _FORK_PAYLOAD  # noqa: PLW0603
    dcfg = cfg.distributed
    world = dcfg.nproc_per_node
    device = torch.device(cfg.device)
    if device.type == "cuda" and torch.cuda.device_count() < world:
        raise ValueError(
            f"distributed.nproc_per_node={world} needs {world} CUDA devices, "
            f"{torch.cuda.device_count()} visible"
        )
    ctx = mp.get_context(dcfg.start_method)
    port = dcfg.master_port or _free_port()
    payload = {
        "model": model,
        "task": task,
        "train_data": train_data,
        "val_data": val_data,
        "cfg": cfg,
        "fit_kwargs": fit_kwargs,
        "has_callback": on_epoch_end is not None,
    }
    with tempfile.TemporaryDirectory(prefix="ups_ddp_") as tmp:
        workdir = Path(tmp)
        if dcfg.start_method == "spawn":
            # Serialised by value once: tensors must not travel as shared memory, or every rank
            # would train the very same parameter storage.
            buffer = io.BytesIO()
            torch.save(payload, buffer)
            (workdir / "payload.pt").write_bytes(buffer.getvalue())
            _FORK_PAYLOAD = None
        else:
            _FORK_PAYLOAD = payload  # inherited copy-on-write by the forked workers
        # One one-way pipe per worker (no queue feeder threads, no semaphores to leak when a
        # worker leaves with os._exit).
        pipes = [ctx.Pipe(duplex=False) for _ in range(world)]
        procs = [
            ctx.Process(
                target=_worker_main,
                args=(rank, world, port, str(workdir), pipes[rank][1], _threads_per_proc(cfg)),
                name=f"ups-ddp-rank{rank}",
                daemon=False,
            )
            for rank in range(world)
        ]
        try:
            for proc in procs:
                proc.start()
            for _, writer in pipes:
                writer.close()  # the workers hold their own copies
            result_path = _serve(procs, [r for r, _ in pipes], on_epoch_end, poll_sec)
            _wait_exit(procs, exit_grace_sec)
            return torch.load(result_path, map_location="cpu", weights_only=True)
        finally:
            _FORK_PAYLOAD = None
            for reader, _ in pipes:
                reader.close()
            for proc in procs:
                if proc.is_alive():
                    proc.terminate()
            for proc in procs:
                proc.join(timeout=10)
                if proc.is_alive():
                    proc.kill()
                    proc.join(timeout=5)


def _serve(
    procs: list[Any],
    readers: list[Any],
    on_epoch_end: Callable[[int, dict[str, float]], None] | None,
    poll_sec: float,
) -> str:
    """Relay rank 0's epoch metrics to ``on_epoch_end`` until the result (or a failure) comes.

    A worker that dies without a word (killed, or a crash in native code) fails the run once
    its pipe is closed and no result has arrived.
    """
    open_readers = list(readers)
    while True:
        ready = mp_connection.wait(open_readers, timeout=poll_sec)
        for reader in ready:
            try:
                kind, *body = reader.recv()
            except (EOFError, OSError):
                open_readers.remove(reader)
                rank = readers.index(reader)
                procs[rank].join(timeout=5)
                raise DistributedWorkerError(
                    f"training worker rank {rank} died without reporting "
                    f"(exit code {procs[rank].exitcode})"
                ) from None
            if kind == "epoch":
                if on_epoch_end is not None:
                    epoch, metrics = body
                    on_epoch_end(int(epoch), dict(metrics))
            elif kind == "error":
                _raise_worker_error(body)
            elif kind == "done":
                return str(body[0])


def _raise_worker_error(body: list[Any]) -> None:
    rank, name, text = body
    raise DistributedWorkerError(f"training worker rank {rank} failed with {name}:\n{text}")


def _wait_exit(procs: list[Any], grace: float) -> None:
    """Workers have delivered the result; any exit code now (gloo's abort) is only logged."""
    deadline = time.monotonic() + grace
    for proc in procs:
        proc.join(timeout=max(0.1, deadline - time.monotonic()))
    for rank, proc in enumerate(procs):
        if proc.exitcode not in (0, None):
            logger.warning(
                "distributed worker rank %d exited with code %s after delivering its result "
                "(gloo's abort at exit); the run is complete",
                rank,
                proc.exitcode,
            )


def _worker_main(
    rank: int, world: int, port: int, workdir: str, messages: Any, threads: int
) -> None:
    """Entry point of one spawned/forked worker."""
    global _CONTEXT  # noqa: PLW0603
    status = 1
    try:
        if _FORK_PAYLOAD is not None:
            payload = _FORK_PAYLOAD
        else:
            payload = torch.load(Path(workdir) / "payload.pt", weights_only=False)
        cfg = payload["cfg"]
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

        def relay(epoch: int, metrics: dict[str, float]) -> None:
            messages.send(("epoch", int(epoch), {k: float(v) for k, v in metrics.items()}))

        from ups_kedro.training.loop import fit  # noqa: PLC0415 - loop imports this module

        result = fit(
            payload["model"],
            payload["task"],
            payload["train_data"],
            payload["val_data"],
            cfg,
            on_epoch_end=relay if (rank == 0 and payload["has_callback"]) else None,
            **payload["fit_kwargs"],
        )
        if rank == 0:
            path = Path(workdir) / "result.pt"
            fields = {f.name: getattr(result, f.name) for f in dataclasses.fields(result)}
            torch.save(fields, path)
            messages.send(("done", str(path)))
        dist.barrier()
        status = 0
    except BaseException as err:  # noqa: BLE001 - report everything to the parent
        with contextlib.suppress(Exception):
            messages.send(("error", rank, type(err).__name__, traceback.format_exc()))
    finally:
        with contextlib.suppress(Exception):
            if dist.is_initialized():
                dist.destroy_process_group()
        with contextlib.suppress(Exception):
            messages.close()
        with contextlib.suppress(Exception):
            # What a normal exit would do for multiprocessing objects (e.g. tqdm's lock), so
            # the resource tracker does not report leaked semaphores after os._exit.
            mp_util._run_finalizers()
        _flush_all()
        os._exit(status)
