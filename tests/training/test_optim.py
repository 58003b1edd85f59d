"""Optimizers and per-epoch schedules."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ups_kedro.training.config import OptimizerConfig, SchedulerConfig
from ups_kedro.training.optim import build_optimizer, build_scheduler, current_lr


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_each_optimizer_builds_and_steps(name: str) -> None:
    layer = nn.Linear(3, 1)
    before = layer.weight.detach().clone()
    cfg = OptimizerConfig(name=name, lr=0.1)  # type: ignore[arg-type]
    opt = build_optimizer(layer.parameters(), cfg)
    layer(torch.ones(2, 3)).pow(2).sum().backward()
    opt.step()
    assert not torch.equal(before, layer.weight)


def _lrs(cfg: SchedulerConfig, epochs: int, metrics: list[float] | None = None) -> list[float]:
    """The lr in force during each epoch."""
    opt = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=1.0)
    sched = build_scheduler(opt, cfg, epochs)
    lrs = []
    for e in range(epochs):
        lrs.append(current_lr(opt))
        opt.step()
        sched.step(metrics[e] if metrics else 1.0)
    return lrs


@pytest.mark.parametrize("name", ["none", "steplr", "cosineannealinglr", "reducelronplateau"])
@pytest.mark.parametrize("warmup", [0, 2])
def test_each_scheduler_builds_and_steps(name: str, warmup: int) -> None:
    lrs = _lrs(SchedulerConfig(name=name, warmup_epochs=warmup), 6)  # type: ignore[arg-type]
    assert len(lrs) == 6 and all(lr > 0 for lr in lrs)


def test_schedule_values() -> None:
    assert _lrs(SchedulerConfig(name="steplr", step_size=2, gamma=0.5), 5) == [1, 1, 0.5, 0.5, 0.25]
    cos = _lrs(SchedulerConfig(name="cosineannealinglr", eta_min=0.1), 5)
    assert cos[0] == 1.0 and cos == sorted(cos, reverse=True) and cos[-1] > 0.1
    # Warm-up: lr/(W+1), 2·lr/(W+1), then the full lr, then the main schedule.
    warm = _lrs(SchedulerConfig(name="steplr", step_size=1, gamma=0.5, warmup_epochs=2), 5)
    assert warm == pytest.approx([1 / 3, 2 / 3, 1.0, 0.5, 0.25])


def test_plateau_reads_the_metric() -> None:
    cfg = SchedulerConfig(name="reducelronplateau", factor=0.5, patience=0)
    assert _lrs(cfg, 4, metrics=[3.0, 2.0, 1.0, 0.5]) == [1, 1, 1, 1]  # improving: no change
    assert _lrs(cfg, 4, metrics=[1.0, 1.0, 1.0, 1.0]) == [1, 1, 0.5, 0.25]


def test_scheduler_state_roundtrip() -> None:
    cfg = SchedulerConfig(name="cosineannealinglr", warmup_epochs=1)
    opt = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=1.0)
    sched = build_scheduler(opt, cfg, 6)
    for _ in range(3):
        opt.step()
        sched.step()
    state, opt_state = sched.state_dict(), opt.state_dict()
    opt2 = torch.optim.SGD(nn.Linear(1, 1).parameters(), lr=1.0)
    sched2 = build_scheduler(opt2, cfg, 6)
    opt2.load_state_dict(opt_state)
    sched2.load_state_dict(state)
    for _ in range(3):
        opt.step()
        sched.step()
        opt2.step()
        sched2.step()
        assert current_lr(opt) == current_lr(opt2)
