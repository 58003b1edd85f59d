"""Spawned data-parallel training: worker processes started from the calling process.

With ``<stage>.train.distributed.nproc_per_node`` = N > 1 (one machine) the launcher calls
:func:`run_workers`: the calling process (the Kedro node) starts N worker processes and does
not join their process group itself.  Each worker joins the group
(:func:`~ups_kedro.training.distributed.join_spawned`) and runs the training loop
(:func:`~ups_kedro.training.loop.train`).  Rank 0 sends every epoch's metrics back through a
pipe and the caller's ``on_epoch_end`` runs *in the calling process* (where the MLflow run is
active); rank 0 writes the result to a file before the group is torn down, so gloo's
occasional abort at process exit (see the stack notes) can never turn a finished run into a
failure: once the result has arrived, a worker's exit code is only logged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import socket
import tempfile
import time
import traceback
from collections.abc import Callable
from multiprocessing import connection as mp_connection
from multiprocessing import util as mp_util
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from ups_kedro.training import distributed
from ups_kedro.training.loop import train

logger = logging.getLogger(__name__)


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


def run_workers(
    model: nn.Module,
    task: Any,
    train_data: Any,
    val_data: Any,
    cfg: Any,
    *,
    on_epoch_end: Callable[[int, dict[str, float]], None] | None,
    poll_sec: float = 0.2,
    exit_grace_sec: float = 60.0,
    **train_kwargs: Any,
) -> dict[str, Any]:
    """Run ``train`` in ``cfg.distributed.nproc_per_node`` workers; returns rank 0's result dict.

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
        "train_kwargs": train_kwargs,
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
            _stop(procs, [r for r, _ in pipes])


def _stop(procs: list[Any], readers: list[Any]) -> None:
    """Close the pipes; terminate, then kill, any worker still alive."""
    for reader in readers:
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
    status = 1
    try:
        if _FORK_PAYLOAD is not None:
            payload = _FORK_PAYLOAD
        else:
            payload = torch.load(Path(workdir) / "payload.pt", weights_only=False)
        cfg = payload["cfg"]
        distributed.join_spawned(rank, world, port, cfg, threads)

        def relay(epoch: int, metrics: dict[str, float]) -> None:
            messages.send(("epoch", int(epoch), {k: float(v) for k, v in metrics.items()}))

        result = train(
            payload["model"],
            payload["task"],
            payload["train_data"],
            payload["val_data"],
            cfg,
            on_epoch_end=relay if (rank == 0 and payload["has_callback"]) else None,
            **payload["train_kwargs"],
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
        distributed.flush_all()
        os._exit(status)
