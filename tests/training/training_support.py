"""Tiny models, data and tasks for the training-engine tests.

Run as a script it trains the reference set-up and SIGKILLs itself mid-epoch:
``python training_support.py STATE_DIR KILL_EPOCH KILL_BATCH``.
"""

from __future__ import annotations

import os
import random
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ups_kedro.training.config import OptimizerConfig, SchedulerConfig, TrainConfig
from ups_kedro.training.losses import mse

TIMING_KEYS = ("epoch_time_sec", "samples_per_sec")


class RegressionData(Dataset):
    """``y = x·w + 0.05·noise`` with ``x`` ~ N(0, 1); items are ``{"x": [d], "y": [1]}``."""

    def __init__(self, n: int = 64, d: int = 4, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.x = torch.randn(n, d, generator=g)
        w = torch.linspace(-1.0, 1.0, d).unsqueeze(1)
        self.y = self.x @ w + 0.05 * torch.randn(n, 1, generator=g)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        return {"x": self.x[i], "y": self.y[i]}


def make_model(seed: int = 0, d: int = 4) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, 1))


class RegressionTask:
    """Plain MSE; components ``mse`` and ``mae``."""

    def training_loss(self, model: nn.Module, batch: dict[str, Tensor], epoch: int):
        pred = model(batch["x"])
        loss = mse(pred.float(), batch["y"])
        return loss, {"mse": loss.item(), "mae": (pred.float() - batch["y"]).abs().mean().item()}

    def validation_loss(self, model: nn.Module, batch: dict[str, Tensor]):
        return self.training_loss(model, batch, 0)


class NoisyTask(RegressionTask):
    """Reads torch, numpy and Python RNGs every batch, so an inexact resume would show."""

    def training_loss(self, model: nn.Module, batch: dict[str, Tensor], epoch: int):
        scale = 0.01 * (1.0 + float(np.random.rand()) + random.random())
        x = batch["x"] + scale * torch.randn_like(batch["x"])
        pred = model(x)
        loss = mse(pred, batch["y"])
        return loss, {"mse": loss.item(), "noise": scale}

    def validation_loss(self, model: nn.Module, batch: dict[str, Tensor]):
        # Random, too: validation has its own seeded stream and must not disturb training's.
        x = batch["x"] + 0.01 * torch.randn_like(batch["x"])
        loss = mse(model(x), batch["y"])
        return loss, {"mse": loss.item()}


class FailAt(NoisyTask):
    """Raises (an in-process stand-in for a crash) or SIGKILLs at (epoch, batch), 1-based."""

    def __init__(self, epoch: int, batch: int, action: str = "raise") -> None:
        self.epoch, self.batch, self.action, self.calls = epoch, batch, action, 0

    def training_loss(self, model: nn.Module, batch: dict[str, Tensor], epoch: int):
        if epoch == self.epoch:
            self.calls += 1
            if self.calls == self.batch:
                if self.action == "sigkill":
                    os.kill(os.getpid(), signal.SIGKILL)
                if self.action == "nan":
                    loss, parts = super().training_loss(model, batch, epoch)
                    return loss * float("nan"), parts
                raise KeyboardInterrupt("simulated kill")
        return super().training_loss(model, batch, epoch)


def resume_cfg(**overrides: Any) -> TrainConfig:
    """A config that exercises every stateful part: AdamW, warm-up + cosine, EMA, clipping,
    accumulation with a trailing short group (40 samples / 8 = 5 batches, accum 2)."""
    cfg = TrainConfig(
        epochs=5,
        batch_size=8,
        optimizer=OptimizerConfig(name="adamw", lr=1e-2, weight_decay=0.01),
        scheduler=SchedulerConfig(name="cosineannealinglr", warmup_epochs=1, eta_min=1e-4),
        accum_steps=2,
        grad_clip=0.5,
        ema_decay=0.9,
        checkpoint_interval=2,
        seed=7,
        progress=False,
    )
    return replace(cfg, **overrides)


def resume_data() -> tuple[RegressionData, RegressionData]:
    return RegressionData(n=40, seed=1), RegressionData(n=16, seed=2)


def strip_timing(history: list[dict[str, float]]) -> list[dict[str, float]]:
    return [{k: v for k, v in h.items() if k not in TIMING_KEYS} for h in history]


def main(argv: list[str]) -> None:
    from ups_kedro.training.launcher import fit

    state_dir, kill_epoch, kill_batch = Path(argv[0]), int(argv[1]), int(argv[2])
    train, val = resume_data()
    fit(
        make_model(),
        FailAt(kill_epoch, kill_batch, action="sigkill"),
        train,
        val,
        resume_cfg(),
        stage="resume_test",
        state_dir=state_dir,
        fingerprint="data-v1",
    )
    raise SystemExit("the SIGKILL did not happen")


if __name__ == "__main__":
    main(sys.argv[1:])
