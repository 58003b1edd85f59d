"""Unrolled (multi-step) operator training and best-epoch selection by a rollout metric."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.data import TensorDataset

from ups_kedro.models.registry import build_model
from ups_kedro.training.config import TrainConfig
from ups_kedro.training.launcher import fit
from ups_kedro.training.operator import OperatorLossConfig, OperatorTask


def _operator(architecture: str = "conv_stack") -> nn.Module:
    torch.manual_seed(0)
    op = build_model("latent_operator", {
        "latent_dim": 4, "latent_tokens": 8, "hidden_dim": 16, "group_size": 4, "num_heads": 1,
        "time_embed_dim": 4, "architecture": architecture, "depths": [1, 1], "kernel_size": 3})
    nn.init.normal_(op.out_proj.weight, std=0.1)  # leave the persistence init behind
    return op


def _batch(horizon: int = 4) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {"z": torch.randn(3, 8, 4), "z_next": torch.randn(3, horizon, 8, 4)}


UNROLLED = dict(lambda_forward=0.0, lambda_rollout=1.0, rollout_horizon=4)


def test_curriculum_grows_the_horizon_to_the_full_rollout() -> None:
    cfg = OperatorLossConfig(**UNROLLED, rollout_curriculum_epochs=3)
    assert [cfg.horizon_at(e) for e in range(1, 7)] == [1, 2, 3, 4, 4, 4]
    assert cfg.horizon_at(None) == 4  # validation: always the full horizon
    assert OperatorLossConfig(**UNROLLED).horizon_at(1) == 4  # no curriculum
    warm = OperatorLossConfig(**UNROLLED, rollout_warmup_epochs=2, rollout_curriculum_epochs=1)
    assert [warm.horizon_at(e) for e in range(1, 6)] == [1, 1, 2, 4, 4]


@pytest.mark.parametrize("architecture", ["conv_stack", "pdet_unet"])
def test_unrolled_loss_with_horizon_one_is_the_one_step_loss(architecture: str) -> None:
    op, batch = _operator(architecture), _batch()
    one_step = OperatorTask(OperatorLossConfig(), 0.05)   # lambda_forward only
    unrolled = OperatorTask(OperatorLossConfig(**UNROLLED, rollout_curriculum_epochs=3), 0.05)
    a, _ = one_step.training_loss(op, batch, 1)
    b, parts = unrolled.training_loss(op, batch, 1)       # epoch 1 of the curriculum: 1 step
    assert parts["horizon"] == 1.0
    torch.testing.assert_close(a, b)
    c, parts = unrolled.training_loss(op, batch, 4)        # full horizon: a different loss
    assert parts["horizon"] == 4.0 and not torch.isclose(a, c)
    # Loss at every step: the mean of the per-step errors of the model's own rollout.
    with torch.no_grad():
        states = op.rollout(batch["z"], 0.05, 4)
    expected = ((states - batch["z_next"]) ** 2).mean(dim=(0, 2, 3)).mean()
    torch.testing.assert_close(c.detach(), expected)


def test_gradients_flow_through_the_rollout_unless_truncated() -> None:
    """Full back-propagation differs from the pushforward (1-step truncated) gradient; the
    loss value is the same."""
    batch = _batch()
    grads = {}
    for name, steps in (("full", None), ("pushforward", 1)):
        op = _operator()
        task = OperatorTask(OperatorLossConfig(**UNROLLED, rollout_grad_steps=steps), 0.05)
        loss, _ = task.training_loss(op, batch, 1)
        loss.backward()
        grads[name] = (loss.item(), op.out_proj.weight.grad.clone())
    assert grads["full"][0] == pytest.approx(grads["pushforward"][0])
    assert not torch.allclose(grads["full"][1], grads["pushforward"][1])
    with pytest.raises(ValueError, match="rollout_grad_steps"):
        OperatorLossConfig(**UNROLLED, rollout_grad_steps=0).validate()
    with pytest.raises(ValueError, match="rollout_warmup_epochs"):
        OperatorLossConfig(**UNROLLED, rollout_warmup_epochs=-1).validate()
    with pytest.raises(ValueError, match="rollout_curriculum_epochs"):
        OperatorLossConfig(**UNROLLED, rollout_curriculum_epochs=-1).validate()


class _Items(TensorDataset):
    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        z, z_next = super().__getitem__(i)
        return {"z": z, "z_next": z_next}


def test_fit_selects_the_epoch_with_the_best_validation_metric() -> None:
    """The metric (not the validation loss) picks the epoch, and its weights are returned."""
    torch.manual_seed(0)
    data = _Items(torch.randn(16, 8, 4), torch.randn(16, 1, 8, 4))
    # The untrained network first (the divergence guard's baseline), then epochs 1-4;
    # best: epoch 2 (not the last, where the loss is lowest).
    scripted = iter([1.0, 0.5, 0.2, 0.4, 0.3])
    seen: list[dict[str, torch.Tensor]] = []

    def metric(model: nn.Module) -> float:
        assert not model.training
        seen.append({k: v.clone() for k, v in model.state_dict().items()})
        return next(scripted)

    op = _operator()
    result = fit(op, OperatorTask(OperatorLossConfig(), 0.05, rollout_metric=metric), data, data,
                 TrainConfig(epochs=4, batch_size=8, progress=False), stage="operator")
    assert result.best_epoch == 2 and result.best_val_loss == pytest.approx(0.2)
    assert [h["val_metric"] for h in result.history] == pytest.approx([0.5, 0.2, 0.4, 0.3])
    for k, v in result.model_state.items():
        torch.testing.assert_close(v, seen[2][k])
    # Without a metric the validation loss selects, as before.
    plain = fit(_operator(), OperatorTask(OperatorLossConfig(), 0.05), data, data,
                TrainConfig(epochs=2, batch_size=8, progress=False), stage="operator")
    assert "val_metric" not in plain.history[0]
