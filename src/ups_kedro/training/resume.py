"""Exact resume for :mod:`~ups_kedro.training.loop`: the loop's counters and ``last.pt``.

At the end of every epoch the loop writes its full state (:class:`~.checkpoint.TrainState`:
weights, optimizer, scheduler, EMA, counters, history and every RNG state) to
``<state_dir>/last.pt``; a later run with the same *run fingerprint* (config, caller's data
identity, network architecture, world size) continues from it and ends bit-identical to an
uninterrupted run on CPU.  A state that cannot be read or belongs to another run is renamed
aside (never deleted silently) and the run starts fresh.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel

from ups_kedro.config import to_dict
from ups_kedro.training.checkpoint import (
    TrainState,
    atomic_torch_save,
    capture_rng_state,
    load_train_state,
    run_fingerprint,
    save_train_state,
)
from ups_kedro.training.config import TrainConfig
from ups_kedro.training.ema import ema_state, load_ema_state
from ups_kedro.training.optim import EpochScheduler
from ups_kedro.training.task import StopReason

logger = logging.getLogger(__name__)

LAST_STATE = "last.pt"


@dataclass
class TrainingProgress:
    """Mutable loop counters; exactly what goes into / comes out of a :class:`TrainState`."""

    epoch: int = 0  # completed epochs
    global_step: int = 0  # optimizer steps
    best_val: float = math.inf
    best_epoch: int = 0
    best_model: dict[str, Tensor] = field(default_factory=dict)
    best_ema: dict[str, Tensor] | None = None
    epochs_since_improve: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    initial_val: float | None = None  # the untrained network's validation loss


# --------------------------------------------------------------------------------------------
# the run fingerprint a saved state must match


def fit_fingerprint(cfg: TrainConfig, stage: str, fingerprint: str, model: nn.Module,
                    world: int) -> str:
    """The run fingerprint: config, stage, the caller's ``fingerprint``, architecture, world."""
    return run_fingerprint(
        _fingerprint_config(cfg),
        identity=f"{stage}|{fingerprint}|{_architecture_signature(model)}"
        + (f"|world={world}" if world > 1 else ""),
    )


def _architecture_signature(model: nn.Module) -> str:
    """Names, shapes and dtypes of every weight: a resume must load into the same network."""
    text = ";".join(f"{k}:{tuple(v.shape)}:{v.dtype}" for k, v in model.state_dict().items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _fingerprint_config(cfg: TrainConfig) -> dict[str, Any]:
    """The config part of the run fingerprint.

    The progress bar does not change results; nor does how the processes are launched (the
    world size goes into the identity instead), so a single-process fingerprint is the same
    as before the ``distributed`` block existed.
    """
    plain = to_dict(dataclasses.replace(cfg, progress=True))
    # Nor do the thread count and the health checks (they only warn or fail a run).
    for key in ("distributed", "num_threads", "grad_health", "divergence"):
        plain.pop(key, None)
    return plain


# --------------------------------------------------------------------------------------------
# reading


def _set_aside(path: Path, label: str) -> Path:
    """Rename a state file that will not be resumed, so nothing is deleted silently."""
    target = path.with_name(f"{path.stem}.{label}-{time.strftime('%Y%m%d-%H%M%S')}{path.suffix}")
    os.replace(path, target)
    return target


def load_resumable(path: Path, fingerprint: str, stage: str) -> TrainState | None:
    """The saved state to continue from, or ``None`` to start fresh."""
    if not path.is_file():
        return None
    try:
        state = load_train_state(path)
    except Exception as err:  # unreadable or old format: keep it for inspection, start over
        moved = _set_aside(path, "unreadable")
        warnings.warn(
            f"stage {stage!r}: cannot read training state {path} ({err}); moved to {moved.name}, "
            "starting from scratch",
            RuntimeWarning,
            stacklevel=4,
        )
        return None
    if state.finished:
        # A finished run's result lives in its checkpoint artifact; nothing here to resume or
        # keep, whatever its fingerprint.
        logger.info(
            "stage %r: previous run finished (%s); starting afresh", stage, state.stopped_reason
        )
        return None
    if state.fingerprint != fingerprint:
        moved = _set_aside(path, f"stale-{state.fingerprint}")
        warnings.warn(
            f"stage {stage!r}: training state {path} belongs to another run (fingerprint "
            f"{state.fingerprint}, this run {fingerprint}); moved to {moved.name}, "
            "starting from scratch",
            RuntimeWarning,
            stacklevel=4,
        )
        return None
    return state


def apply_state(
    state: TrainState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: EpochScheduler,
    ema: AveragedModel | None,
    progress: TrainingProgress,
) -> None:
    """Load a saved state into freshly built objects (RNG states are restored separately)."""
    model.load_state_dict(state.model)
    optimizer.load_state_dict(state.optimizer)
    scheduler.load_state_dict(state.scheduler)
    if ema is not None and state.ema is not None:
        load_ema_state(ema, state.ema)
    progress.epoch = state.epoch
    progress.global_step = state.global_step
    progress.best_val = state.best_val
    progress.best_epoch = state.best_epoch
    progress.best_model = state.best_model
    progress.best_ema = state.best_ema
    progress.epochs_since_improve = state.epochs_since_improve
    progress.history = [dict(h) for h in state.history]
    progress.initial_val = state.initial_val


# --------------------------------------------------------------------------------------------
# writing


def write_state(
    state_dir: Path,
    *,
    cfg: TrainConfig,
    stage: str,
    run_fp: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: EpochScheduler,
    ema: AveragedModel | None,
    progress: TrainingProgress,
    loader_generator: torch.Generator,
    stopped: StopReason | None,
    metrics: dict[str, float],
    rank_rngs: list[dict[str, Any]] | None = None,
    task_state: dict[str, Any] | None = None,
) -> None:
    """Write ``last.pt`` (full state) and, every ``checkpoint_interval`` epochs, weights.

    ``stopped`` is why the run ended at this epoch, ``None`` while it goes on.
    """
    epoch = progress.epoch
    if cfg.checkpoint_interval > 0 and epoch % cfg.checkpoint_interval == 0:
        atomic_torch_save(
            {
                "stage": stage,
                "epoch": epoch,
                "fingerprint": run_fp,
                "model": model.state_dict(),
                "ema": ema.module.state_dict() if ema is not None else None,
                "metrics": metrics,
            },
            state_dir / f"epoch_{epoch:04d}.pt",
        )
    state = TrainState(
        fingerprint=run_fp,
        stage=stage,
        epoch=epoch,
        global_step=progress.global_step,
        model=model.state_dict(),
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        rng=capture_rng_state(loader_generator),
        best_val=progress.best_val,
        best_epoch=progress.best_epoch,
        best_model=progress.best_model,
        epochs_since_improve=progress.epochs_since_improve,
        history=progress.history,
        ema=ema_state(ema) if ema is not None else None,
        best_ema=progress.best_ema,
        scaler=None,
        finished=stopped is not None,
        stopped_reason=stopped,
        rank_rngs=rank_rngs,
        initial_val=progress.initial_val,
        task_state=task_state,
    )
    save_train_state(state, state_dir / LAST_STATE)
