"""Autoencoder and operator stage losses: each term, the curriculum, gradients reach the operator."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from ups_kedro.models.registry import build_model
from ups_kedro.training.autoencoder import AutoencoderLossConfig, AutoencoderTask, physical_nrmse
from ups_kedro.training.operator import OperatorLossConfig, OperatorTask


def _autoencoder() -> nn.Module:
    common = {"latent_dim": 4, "latent_tokens": 4, "spatial_dims": 1}
    return build_model("autoencoder", {
        "encoder": {**common, "in_channels": 1, "grid_shape": [16], "patch_size": 2,
                    "stem_hidden": 8},
        "decoder": {**common, "out_channels": 1, "hidden_dim": 8, "num_layers": 1,
                    "num_heads": 2, "mlp_hidden": 8},
    })


def _operator() -> nn.Module:
    op = build_model("latent_operator", {"latent_dim": 4, "latent_tokens": 4, "hidden_dim": 8,
                                         "group_size": 4, "num_heads": 2, "time_embed_dim": 4})
    nn.init.normal_(op.out_proj.weight, std=0.1)  # leave the persistence init behind
    return op


def test_physical_nrmse_matches_definition() -> None:
    mean, std = torch.tensor([2.0]), torch.tensor([3.0])
    true = torch.randn(5, 16, 1)
    pred = true + 0.1 * torch.randn(5, 16, 1)
    p, t = pred * 3 + 2, true * 3 + 2
    expected = ((p - t).norm(dim=1) / t.norm(dim=1)).mean()
    torch.testing.assert_close(physical_nrmse(pred, true, mean, std), expected)


def test_autoencoder_losses_and_validation_metric() -> None:
    torch.manual_seed(0)
    model = _autoencoder()
    task = AutoencoderTask(AutoencoderLossConfig(1.0, 0.5), torch.zeros(1), torch.ones(1))
    batch = {"u": torch.randn(3, 16, 1)}
    loss, parts = task.training_loss(model, batch, 1)
    assert loss.item() == pytest.approx(parts["inv_enc"] + 0.5 * parts["inv_dec"], rel=1e-5)
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    _, val = task.validation_loss(model, batch)
    assert val["recon_nrmse"] > 0


def _batch(horizon: int = 2) -> dict[str, torch.Tensor]:
    torch.manual_seed(1)
    return {"z": torch.randn(3, 4, 4), "z_next": torch.randn(3, horizon, 4, 4),
            "u_next": torch.randn(3, horizon, 16, 1)}


@pytest.mark.parametrize("term", ["forward", "rollout", "spectral", "inv_enc", "inv_dec"])
def test_each_operator_loss_term_reaches_the_operator(term: str) -> None:
    weights = {"lambda_forward": 0.0, "lambda_rollout": 0.0, "rollout_horizon": 2,
               "inverse_loss_warmup_epochs": 0, "inverse_loss_max_weight": 1.0}
    if term != "rollout":
        weights["lambda_forward"] = 1e-9  # one of forward/rollout must be on
    weights[f"lambda_{term}"] = 1.0
    ae = _autoencoder().requires_grad_(False)
    op = _operator()
    task = OperatorTask(OperatorLossConfig(**weights), dt=0.05, autoencoder=ae)
    loss, parts = task.training_loss(op, _batch(), epoch=1)
    assert parts[term] > 0
    loss.backward()
    assert op.in_proj.weight.grad is not None and op.in_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in ae.parameters())  # frozen decoder is not trained


def test_inverse_losses_follow_the_curriculum() -> None:
    cfg = OperatorLossConfig(lambda_inv_enc=1.0, lambda_inv_dec=1.0,
                             inverse_loss_warmup_epochs=2, inverse_loss_max_weight=0.05)
    task = OperatorTask(cfg, 0.05, _autoencoder().requires_grad_(False))
    op, batch = _operator(), _batch(1)
    early, parts = task.training_loss(op, batch, epoch=1)  # warm-up: forward only
    assert early.item() == pytest.approx(parts["forward"], rel=1e-5)
    assert parts["inv_weight"] == 0.0
    late, parts = task.training_loss(op, batch, epoch=10)  # capped at max weight
    expected = parts["forward"] + 0.05 * (parts["inv_enc"] + parts["inv_dec"])
    assert late.item() == pytest.approx(expected, rel=1e-5)
    # Validation never includes curriculum terms, so selection is comparable across epochs.
    val, _ = task.validation_loss(op, batch)
    assert val.item() == pytest.approx(parts["forward"], rel=1e-5)


def test_loss_config_rejects_inconsistent_pairs() -> None:
    with pytest.raises(ValueError, match="rollout_horizon ≥ 2"):
        OperatorLossConfig(lambda_rollout=1.0, rollout_horizon=1).validate()
    with pytest.raises(ValueError, match="cannot both be 0"):
        OperatorLossConfig(lambda_forward=0.0).validate()
    with pytest.raises(ValueError, match="need the autoencoder"):
        OperatorTask(OperatorLossConfig(lambda_inv_enc=1.0), 0.05, None)


def test_relative_mse_weighs_samples_by_their_energy() -> None:
    from ups_kedro.training.losses import relative_mse

    target = torch.stack([torch.full((4, 2), 1.0), torch.full((4, 2), 0.1)])  # [2, 4, 2]
    pred = target + 0.01  # the same absolute error on a strong and a weak sample
    loss = relative_mse(pred, target, floor=0.0)
    assert loss.item() == pytest.approx(0.5 * (1e-4 / 1.0 + 1e-4 / 0.01), rel=1e-4)
    # The floor bounds the weight of a near-zero target; an origin shifts "no signal".
    assert relative_mse(pred, target, floor=1.0).item() < loss.item()
    shifted = relative_mse(pred + 3.0, target + 3.0, 0.0, origin=torch.full((4, 2), 3.0))
    assert shifted.item() == pytest.approx(loss.item(), rel=1e-4)


def test_autoencoder_relative_reconstruction_loss() -> None:
    torch.manual_seed(0)
    model = _autoencoder()
    batch = {"u": torch.randn(3, 16, 1)}
    plain = AutoencoderTask(AutoencoderLossConfig(1.0, 0.0), torch.zeros(1), torch.ones(1))
    rel = AutoencoderTask(AutoencoderLossConfig(1.0, 0.0, relative_floor=0.1),
                          torch.zeros(1), torch.ones(1))
    _, p = plain.training_loss(model, batch, 1)
    loss, r = rel.training_loss(model, batch, 1)
    assert r["inv_enc"] != pytest.approx(p["inv_enc"])
    loss.backward()
    with pytest.raises(ValueError, match="relative_floor"):
        AutoencoderLossConfig(relative_floor=0.0).validate()


def test_operator_relative_loss_and_input_noise() -> None:
    op, batch = _operator(), _batch(2)
    origin = torch.randn(4, 4)
    cfg = OperatorLossConfig(lambda_rollout=1.0, rollout_horizon=2, relative_floor=0.1,
                             input_noise=0.5)
    task = OperatorTask(cfg, 0.05, latent_origin=origin)
    torch.manual_seed(0)
    a, _ = task.training_loss(op, batch, epoch=1)
    torch.manual_seed(1)
    b, _ = task.training_loss(op, batch, epoch=1)
    assert a.item() != pytest.approx(b.item())  # training inputs are perturbed
    a.backward()
    assert op.in_proj.weight.grad is not None
    v1, _ = task.validation_loss(op, batch)
    v2, _ = task.validation_loss(op, batch)
    assert v1.item() == v2.item()  # validation is clean and deterministic
    clean = OperatorTask(OperatorLossConfig(relative_floor=0.1), 0.05, latent_origin=origin)
    expected = relative_mse_ref(op(batch["z"], 0.05), batch["z_next"][:, 0], 0.1, origin)
    assert clean.validation_loss(op, batch)[1]["forward"] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="input_noise"):
        OperatorLossConfig(input_noise=-1.0).validate()
    with pytest.raises(ValueError, match="relative_floor"):
        OperatorLossConfig(relative_floor=-1.0).validate()


def relative_mse_ref(pred: torch.Tensor, target: torch.Tensor, floor: float,
                     origin: torch.Tensor) -> float:
    err = (pred - target).square().flatten(1).mean(1)
    energy = (target - origin).square().flatten(1).mean(1)
    return (err / (energy + floor**2)).mean().item()
