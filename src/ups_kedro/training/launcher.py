"""``fit``: train a stage's model, launched in this process, in spawned workers or by torchrun.

The entry point every stage calls.  It owns what surrounds a training run and how its
processes come to exist; the training itself is :func:`ups_kedro.training.loop.train`:

* the stage's state lock (:mod:`~.lock`, one run per ``state_dir``), the torch thread count
  (:mod:`~.threads`) and the run-level tags (``seed``, ``num_threads``), held in the calling
  process;
* where the loop runs: here (one process), in ``cfg.distributed.nproc_per_node`` spawned
  worker processes (:mod:`~.spawn`, ``on_epoch_end`` still called here with rank 0's
  metrics), or, under ``torchrun``, in this process after joining the launcher's group
  (:func:`~.distributed.join_torchrun`; only rank 0 writes state and calls back, every rank
  returns the same result).

A callback may offer ``set_tags(mapping)`` (run-level facts: ``seed``, ``num_threads``,
``resumed_from``, ``initial_val_loss``) and a ``run_id`` attribute (recorded in the lock file).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from ups_kedro.training import distributed, spawn
from ups_kedro.training.config import TrainConfig
from ups_kedro.training.lock import StageLock
from ups_kedro.training.loop import train
from ups_kedro.training.task import EpochCallback, FitResult, StageTask, set_tags, unwrap_model
from ups_kedro.training.threads import torch_threads


def fit(
    model: nn.Module,
    task: StageTask,
    train_data: Dataset,
    val_data: Dataset | None,
    cfg: TrainConfig,
    *,
    stage: str,
    state_dir: Path | None = None,
    fingerprint: str = "",
    on_epoch_end: EpochCallback | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> FitResult:
    """Train ``model`` on ``task`` and return the best weights.

    Args:
        model: the network to train (moved to ``cfg.device``; on return it holds the best
            epoch's raw weights).  Parameters with ``requires_grad=False`` stay frozen.
        task: computes the stage's loss on a batch.
        train_data, val_data: map-style datasets; the default collate turns items that are
            dicts of tensors into batched dicts.  Without ``val_data`` the training loss selects
            the best epoch and drives early stopping.
        cfg: training parameters (validated here as ``<stage>.train``).
        stage: stage name, used in messages and the progress bar.
        state_dir: folder for the resumable state (``last.pt``, every epoch) and periodic
            weights (``epoch_0005.pt``); ``None`` disables both.
        fingerprint: the caller's identity of the data and upstream artifacts; combined with
            the config and the network's architecture into the run fingerprint that a saved
            state must match to be resumed.
        on_epoch_end: called as ``on_epoch_end(epoch, metrics)`` after each epoch's state is
            written, and first for each epoch replayed from a resumed state.
        collate_fn: passed to the DataLoaders.

    A diverged run (:class:`~ups_kedro.training.config.DivergenceConfig`) raises before it
    returns, so the caller never publishes it.

    Raises:
        StageLockedError: another run holds ``state_dir`` (the message names it).
        NonFiniteLossError: a loss or gradient norm became NaN/inf.
        DivergenceError: the selection loss went far above its best or never beat the
            untrained network.
        DistributedWorkerError: a spawned worker failed (its traceback is in the message).
    """
    cfg.validate(f"{stage}.train")  # fills in a derived seed before anything reads it
    with contextlib.ExitStack() as stack:
        if state_dir is not None and cfg.epochs > 0 and (distributed.launched_rank() or 0) == 0:
            run_id = getattr(on_epoch_end, "run_id", None)
            stack.enter_context(StageLock(Path(state_dir), stage, run_id))
        threads = stack.enter_context(torch_threads(cfg.num_threads, stage))
        set_tags(on_epoch_end, {"seed": cfg.seed, "num_threads": threads},
                 main_process=distributed.is_main_process())
        kwargs = dict(stage=stage, state_dir=state_dir, fingerprint=fingerprint,
                      on_epoch_end=on_epoch_end, collate_fn=collate_fn)
        if distributed.context() is None and distributed.launched_world_size() > 1:
            distributed.join_torchrun(cfg)
        elif (distributed.context() is None and cfg.distributed.nproc_per_node > 1
              and cfg.epochs > 0):
            return _fit_spawned(model, task, train_data, val_data, cfg, **kwargs)
        return train(model, task, train_data, val_data, cfg, **kwargs)


def _fit_spawned(
    model: nn.Module,
    task: StageTask,
    train_data: Dataset,
    val_data: Dataset | None,
    cfg: TrainConfig,
    *,
    on_epoch_end: EpochCallback | None,
    **kwargs: Any,
) -> FitResult:
    """``train`` in ``cfg.distributed.nproc_per_node`` workers; this process relays callbacks."""
    model = unwrap_model(model)
    out = spawn.run_workers(
        model, task, train_data, val_data, cfg, on_epoch_end=on_epoch_end, **kwargs
    )
    result = FitResult(**out)
    set_tags(on_epoch_end, {"resumed_from": result.resumed_from}, main_process=True)
    # As in-process: the caller's model holds the selected weights afterwards.
    model.load_state_dict(result.model_state)
    model.to(torch.device(cfg.device))
    return result
