"""Gradient-health flags and the divergence guard of fit(), provoked on real training runs."""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn
from training_support import RegressionData, RegressionTask, make_model

from ups_kedro.training.config import (
    DivergenceConfig,
    GradHealthConfig,
    OptimizerConfig,
    TrainConfig,
)
from ups_kedro.training.health import DivergenceError
from ups_kedro.training.launcher import fit
from ups_kedro.training.losses import mse


def _cfg(**kw) -> TrainConfig:
    base = {"epochs": 4, "batch_size": 8, "optimizer": OptimizerConfig(lr=1e-2),
            "progress": False, "seed": 0, "grad_clip": 1.0}
    return TrainConfig(**{**base, **kw})


class ScaledTask(RegressionTask):
    """MSE times ``scale``: a loss on the wrong scale, like Stage 2's (norms 34–916, clip 1)."""

    def __init__(self, scale: float) -> None:
        self.scale = scale

    def training_loss(self, model: nn.Module, batch: dict[str, Tensor], epoch: int):
        loss, parts = super().training_loss(model, batch, epoch)
        return self.scale * loss, parts


class DetachedTask(RegressionTask):
    """A loss that does not depend on the parameters (gradients exactly 0, like Stage 3's)."""

    def training_loss(self, model: nn.Module, batch: dict[str, Tensor], epoch: int):
        pred = model(batch["x"]).detach()
        loss = mse(pred, batch["y"]) + 0.0 * sum(p.sum() for p in model.parameters())
        return loss, {"mse": loss.item()}


def _flags(result, key: str) -> list[int]:
    return [int(h["epoch"]) for h in result.history if h[key] > 0]


def test_exploding_gradients_are_flagged_every_epoch(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[dict] = []
    with caplog.at_level(logging.WARNING, logger="ups_kedro.training.health"):
        result = fit(make_model(), ScaledTask(500.0), RegressionData(64),
                     RegressionData(16, seed=5),
                     _cfg(optimizer=OptimizerConfig(lr=1e-3)), stage="stage2",
                     on_epoch_end=lambda e, m: seen.append(m))
    assert min(h["grad_norm"] for h in result.history) > 10.0  # > 10 x clip 1
    assert _flags(result, "grad_exploding") == [1, 2, 3, 4]
    assert _flags(result, "grad_vanishing") == []
    assert all(m["grad_exploding"] == 1.0 for m in seen)  # the metric reaches the callback
    text = caplog.text
    assert "stage 'stage2' epoch 1: exploding gradients" in text and "epoch 4" in text


def test_zero_gradients_are_flagged_vanishing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="ups_kedro.training.health"):
        result = fit(make_model(), DetachedTask(), RegressionData(64), RegressionData(16, seed=5),
                     _cfg(divergence=DivergenceConfig(None, None)), stage="stage3")
    assert all(h["grad_norm"] == 0.0 for h in result.history)
    assert _flags(result, "grad_vanishing") == [1, 2, 3, 4]
    assert _flags(result, "grad_exploding") == []
    assert "stage 'stage3' epoch 3: vanishing gradients" in caplog.text


class ExactLinear(RegressionData):
    """Noise-free ``y = x·w``: a linear model converges to zero loss and zero gradient."""

    def __init__(self, n: int, seed: int) -> None:
        super().__init__(n, seed=seed)
        self.y = self.x @ torch.linspace(-1.0, 1.0, 4).unsqueeze(1)


def test_healthy_run_whose_gradients_shrink_is_not_flagged() -> None:
    # A converging run: its gradient norm falls far below the vanishing threshold (0.01, the
    # default), but only after its loss did, so it is never flagged.
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    cfg = _cfg(epochs=10, optimizer=OptimizerConfig(name="sgd", lr=0.1, momentum=0.0))
    result = fit(model, RegressionTask(), ExactLinear(64, 0), ExactLinear(16, 5), cfg,
                 stage="healthy")
    norms = [h["grad_norm"] for h in result.history]
    assert norms[0] > 0.01 > norms[-1]  # the gradients did shrink below the threshold
    assert result.history[-1]["loss"] < 1e-3 * result.history[0]["loss"]
    assert _flags(result, "grad_vanishing") == [] and _flags(result, "grad_exploding") == []


def test_thresholds_are_parameters() -> None:
    off = GradHealthConfig(vanishing_norm=None, exploding_factor=None)
    result = fit(make_model(), ScaledTask(500.0), RegressionData(64), None,
                 _cfg(epochs=2, grad_health=off, optimizer=OptimizerConfig(lr=1e-3)), stage="s")
    assert _flags(result, "grad_exploding") == []
    with pytest.raises(ValueError, match="s.train.grad_health.exploding_factor must be ≥ 1"):
        _cfg(grad_health=GradHealthConfig(exploding_factor=0.5)).validate("s.train")


# ------------------------------------------------------------------------------------------
# divergence


def test_divergence_fails_the_run_and_keeps_state_of_the_last_good_epoch(tmp_path: Path) -> None:
    # lr 1000 with AdamW and clipping, like `--params operator.train.optimizer.lr=1000` (which
    # gave a finite validation loss far above the untrained one and replaced the checkpoint).
    cfg = _cfg(optimizer=OptimizerConfig(name="adamw", lr=1000.0))
    with pytest.raises(DivergenceError) as info:
        fit(make_model(), RegressionTask(), RegressionData(64), RegressionData(16, seed=5), cfg,
            stage="operator", state_dir=tmp_path)
    message = str(info.value)
    assert "stage 'operator' diverged at epoch 1" in message
    assert "untrained network's" in message and "operator.train.optimizer.lr (now 1000)" in message
    assert info.value.epoch == 1
    assert not (tmp_path / "last.pt").exists()  # no state of the diverged epoch


class SpikeTask(RegressionTask):
    """Validation explodes from epoch ``at`` on (weights corrupted), after learning well."""

    def __init__(self, at: int) -> None:
        self.at, self.epoch = at, 0

    def training_loss(self, model: nn.Module, batch: dict[str, Tensor], epoch: int):
        if epoch >= self.at and self.epoch < epoch:
            with torch.no_grad():
                for p in model.parameters():
                    p.mul_(30.0)
        self.epoch = epoch
        return super().training_loss(model, batch, epoch)


def test_validation_far_above_its_best_fails_at_that_epoch() -> None:
    cfg = _cfg(epochs=6, optimizer=OptimizerConfig(name="sgd", lr=0.05, momentum=0.0))
    with pytest.raises(DivergenceError, match=r"diverged at epoch 4: validation loss .* its best"):
        fit(make_model(), SpikeTask(at=4), RegressionData(64), RegressionData(16, seed=5), cfg,
            stage="op")
    relaxed = replace(cfg, divergence=DivergenceConfig(max_ratio_to_best=None))
    result = fit(make_model(), SpikeTask(at=4), RegressionData(64), RegressionData(16, seed=5),
                 relaxed, stage="op")
    assert result.best_epoch == 3  # switched off, the run ends and keeps its best epoch


class WorseTask(RegressionTask):
    """Trains towards the wrong target: every epoch validates worse than the untrained net."""

    def training_loss(self, model: nn.Module, batch: dict[str, Tensor], epoch: int):
        return super().training_loss(model, {"x": batch["x"], "y": batch["y"] + 10.0}, epoch)

    def validation_loss(self, model: nn.Module, batch: dict[str, Tensor]):
        return RegressionTask.training_loss(self, model, batch, 0)  # the true target


def test_a_run_that_never_beats_the_untrained_network_fails_at_the_end() -> None:
    cfg = _cfg(epochs=3, divergence=DivergenceConfig(max_ratio_to_best=None), grad_clip=None,
               optimizer=OptimizerConfig(lr=5e-2))
    assert cfg.divergence.max_ratio_to_initial == 2.0  # the default
    with pytest.raises(DivergenceError,
                       match="not below .*max_ratio_to_initial = 2 x the untrained"):
        fit(make_model(), WorseTask(), RegressionData(64), RegressionData(16, seed=5), cfg,
            stage="w")
    off = replace(cfg, divergence=DivergenceConfig(None, None))
    fit(make_model(), WorseTask(), RegressionData(64), RegressionData(16, seed=5), off, stage="w")


def test_untrained_baseline_survives_a_resume(tmp_path: Path) -> None:
    from ups_kedro.training.checkpoint import load_train_state

    cfg = _cfg(epochs=2)
    train, val = RegressionData(64), RegressionData(16, seed=5)
    fit(make_model(), RegressionTask(), train, val, replace(cfg, epochs=1), stage="r",
        state_dir=tmp_path)
    state = load_train_state(tmp_path / "last.pt")
    assert state.initial_val is not None and state.initial_val > state.best_val


def test_divergence_message_names_the_nested_train_block() -> None:
    """The Stage 2 corrector's training block is ``diff_residual.corrector.train``: the message
    names the keys where the user set them, not ``diff_residual.train``."""
    from ups_kedro.config import parse
    from ups_kedro.training.config import TrainConfig
    from ups_kedro.training.health import DivergenceError

    cfg = parse(TrainConfig, {"epochs": 2, "batch_size": 8}, "diff_residual.corrector.train")
    message = str(DivergenceError("diff_residual", 2, "val loss is nan", cfg))
    assert "Lower diff_residual.corrector.train.optimizer.lr" in message
    assert "set diff_residual.corrector.train.divergence." in message
    built = TrainConfig(epochs=2, batch_size=8)  # built in code: the stage's own block
    assert "Lower diff_residual.train.optimizer.lr" in str(
        DivergenceError("diff_residual", 2, "val loss is nan", built))
