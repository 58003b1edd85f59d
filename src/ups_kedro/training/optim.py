"""Optimizer and per-epoch learning-rate schedule from their configs.

The loop steps the schedule once per epoch through :class:`EpochScheduler`, which hides the
one irregular torch scheduler (``ReduceLROnPlateau`` wants the validation loss) and the
optional linear warm-up, and keeps a single ``state_dict`` for exact resume.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import nn
from torch.optim import lr_scheduler

from ups_kedro.training.config import OptimizerConfig, SchedulerConfig


def build_optimizer(
    params: Iterable[nn.Parameter] | Iterable[dict[str, Any]], cfg: OptimizerConfig
) -> torch.optim.Optimizer:
    """Return the torch optimizer named by ``cfg.name`` over ``params``."""
    if cfg.name == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.name == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, betas=cfg.betas, weight_decay=cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    raise ValueError(f"unknown optimizer {cfg.name!r}")


class EpochScheduler:
    """Linear warm-up for ``warmup_epochs`` epochs, then the main torch scheduler.

    Call :meth:`step` once at the end of every epoch.  ``metric`` (the validation loss, or the
    training loss when there is no validation set) is only read by ``ReduceLROnPlateau``.
    During warm-up the main scheduler is not stepped, so a plateau counter never sees the
    deliberately low-lr warm-up epochs.
    """

    def __init__(
        self,
        main: lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau | None,
        warmup: lr_scheduler.LinearLR | None,
        warmup_epochs: int,
    ) -> None:
        self.main = main
        self.warmup = warmup
        self.warmup_epochs = warmup_epochs
        self.epochs_stepped = 0

    def step(self, metric: float | None = None) -> None:
        """Advance by one epoch."""
        self.epochs_stepped += 1
        if self.warmup is not None and self.epochs_stepped <= self.warmup_epochs:
            self.warmup.step()
        elif isinstance(self.main, lr_scheduler.ReduceLROnPlateau):
            if metric is None:
                raise ValueError("ReduceLROnPlateau needs the epoch's loss to step")
            self.main.step(metric)
        elif self.main is not None:
            self.main.step()

    def state_dict(self) -> dict[str, Any]:
        return {
            "epochs_stepped": self.epochs_stepped,
            "main": None if self.main is None else self.main.state_dict(),
            "warmup": None if self.warmup is None else self.warmup.state_dict(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epochs_stepped = int(state["epochs_stepped"])
        if self.main is not None and state["main"] is not None:
            self.main.load_state_dict(state["main"])
        if self.warmup is not None and state["warmup"] is not None:
            self.warmup.load_state_dict(state["warmup"])


def build_scheduler(
    optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, epochs: int
) -> EpochScheduler:
    """Build the per-epoch schedule for a run of ``epochs`` epochs.

    Cosine annealing defaults ``T_max`` to the epochs after warm-up, so the learning rate
    reaches ``eta_min`` as the last epoch ends (torch's convention).
    """
    main_epochs = max(epochs - cfg.warmup_epochs, 1)
    # The main scheduler is built first so that its base lrs are the configured ones, not the
    # warm-up's reduced starting lr.
    main: lr_scheduler.LRScheduler | lr_scheduler.ReduceLROnPlateau | None
    if cfg.name == "none":
        main = None
    elif cfg.name == "steplr":
        main = lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)
    elif cfg.name == "cosineannealinglr":
        t_max = cfg.t_max if cfg.t_max is not None else main_epochs
        main = lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=cfg.eta_min)
    elif cfg.name == "reducelronplateau":
        main = lr_scheduler.ReduceLROnPlateau(
            optimizer, mode="min", factor=cfg.factor, patience=cfg.patience
        )
    else:
        raise ValueError(f"unknown scheduler {cfg.name!r}")
    warmup = None
    if cfg.warmup_epochs > 0:
        warmup = lr_scheduler.LinearLR(
            optimizer,
            start_factor=1.0 / (cfg.warmup_epochs + 1),
            end_factor=1.0,
            total_iters=cfg.warmup_epochs,
        )
    return EpochScheduler(main, warmup, cfg.warmup_epochs)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    """Learning rate of the first parameter group (the one logged as ``lr``)."""
    return float(optimizer.param_groups[0]["lr"])
