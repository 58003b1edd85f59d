"""Loss helpers and the inverse-loss curriculum."""

from __future__ import annotations

import pytest
import torch

from ups_kedro.training.losses import inverse_loss_weight, mse, relative_l2, spectral_energy_loss


def test_mse_and_relative_l2() -> None:
    target = torch.tensor([[1.0, 2.0], [3.0, 4.0]])
    assert mse(target * 2, target).item() == pytest.approx((1 + 4 + 9 + 16) / 4)
    assert relative_l2(target * 2, target).item() == pytest.approx(1.0)
    pred = torch.stack([target[0], target[1] * 2])  # errors 0 and 1 per sample → mean 0.5
    assert relative_l2(pred, target).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shapes differ"):
        relative_l2(target, target[:1])


def test_spectral_energy_loss() -> None:
    torch.manual_seed(0)
    x = torch.randn(3, 32, 8)  # [B, tokens, dim]
    assert spectral_energy_loss(x, x.clone(), dim=1).item() == 0.0
    # A shift along the token axis keeps the energy spectrum (periodic FFT): still zero.
    shifted = torch.roll(x, 5, dims=1)
    assert spectral_energy_loss(shifted, x, dim=1).item() == pytest.approx(0.0, abs=1e-5)
    pred = (x + 0.3 * torch.randn_like(x)).requires_grad_()
    loss = spectral_energy_loss(pred, x, dim=1)
    assert loss.item() > 0
    loss.backward()
    assert pred.grad is not None and torch.isfinite(pred.grad).all()
    assert spectral_energy_loss(x[:, :, 0], 2 * x[:, :, 0], dim=-1).item() > 0
    with pytest.raises(ValueError, match="batch axis"):
        spectral_energy_loss(x, x, dim=0)


@pytest.mark.parametrize(
    ("epoch", "expected"),
    [
        (1, 0.0),
        (15, 0.0),  # the first W = 15 epochs: forward loss only
        (16, 0.0),  # the ramp starts from 0 (original 0-based epoch 15)
        (17, 0.1 * 1 / 15),
        (23, 0.1 * 7 / 15),
        (24, 0.05),  # 0.1·8/15 > 0.05 → capped
        (31, 0.05),
        (100, 0.05),
    ],
)
def test_inverse_loss_curriculum(epoch: int, expected: float) -> None:
    got = inverse_loss_weight(epoch, warmup_epochs=15, max_weight=0.05, base_weight=0.1)
    assert got == pytest.approx(expected)


def test_inverse_loss_curriculum_edges() -> None:
    assert inverse_loss_weight(1, warmup_epochs=0, max_weight=0.05, base_weight=0.01) == 0.01
    assert inverse_loss_weight(11, warmup_epochs=5, max_weight=1.0, base_weight=0.02) == 0.02
    with pytest.raises(ValueError):
        inverse_loss_weight(0, 5, 1.0, 1.0)
