"""LatentOperator: shapes, persistence at init, dt forms, gradients, token resampling."""

from __future__ import annotations

import pytest
import torch

from ups_kedro.models.operator import LatentOperator, downsample_tokens, upsample_tokens

from ._helpers import assert_grads, operator_cfg

ARCHS = ["pdet_unet", "pdet_stack", "conv_stack"]


@pytest.mark.parametrize("architecture", ARCHS)
@pytest.mark.parametrize("depths", [(1,), (1, 1, 1), (2, 0, 1)])
def test_forward_shape_and_persistence_at_init(architecture: str, depths: tuple[int, ...]) -> None:
    torch.manual_seed(0)
    op = LatentOperator(operator_cfg(architecture, depths=depths))
    z = torch.randn(3, 8, 8)
    z_next = op(z, 0.1)
    assert z_next.shape == z.shape
    # Zero-initialised out_proj: an untrained operator is exactly "no change".
    assert torch.equal(z_next, z)


@pytest.mark.parametrize("dt", [torch.tensor(0.1), torch.tensor([0.1, 0.1, 0.1])])
def test_dt_forms(dt: torch.Tensor) -> None:
    """A float, a 0-d tensor and a [B] tensor of the same step are the same step."""
    torch.manual_seed(0)
    op = LatentOperator(operator_cfg())
    torch.nn.init.normal_(op.out_proj.weight, std=0.1)
    z = torch.randn(3, 8, 8)
    reference = op(z, 0.1)
    assert not torch.allclose(reference, z)  # a step that does something
    assert torch.allclose(op(z, dt), reference, atol=1e-6)


def test_per_sample_dt_steps_each_sample_with_its_own() -> None:
    torch.manual_seed(0)
    op = LatentOperator(operator_cfg())
    torch.nn.init.normal_(op.out_proj.weight, std=0.1)
    z = torch.randn(3, 8, 8)
    dts = [0.1, 0.2, 0.3]
    batched = op(z, torch.tensor(dts))
    for i, dt in enumerate(dts):
        assert torch.allclose(batched[i], op(z[i:i + 1], dt)[0], atol=1e-6)


def test_dt_conditions_the_step() -> None:
    torch.manual_seed(0)
    op = LatentOperator(operator_cfg())
    torch.nn.init.normal_(op.out_proj.weight, std=0.1)
    z = torch.randn(2, 8, 8)
    a = op(z, torch.tensor([0.1, 0.5]))
    assert torch.allclose(a[0], op(z[:1], 0.1)[0], atol=1e-6)
    assert not torch.allclose(a[1], op(z[1:], 0.1)[0], atol=1e-4)


@pytest.mark.parametrize("architecture", ARCHS)
def test_rollout_matches_repeated_steps(architecture: str) -> None:
    torch.manual_seed(0)
    op = LatentOperator(operator_cfg(architecture))
    torch.nn.init.normal_(op.out_proj.weight, std=0.1)
    z0 = torch.randn(2, 8, 8)
    traj = op.rollout(z0, 0.05, steps=3)
    assert traj.shape == (2, 3, 8, 8)
    assert torch.allclose(traj[:, 2], op(op(op(z0, 0.05), 0.05), 0.05), atol=1e-6)


@pytest.mark.parametrize("architecture", ARCHS)
def test_gradients_reach_every_parameter(architecture: str) -> None:
    """At init only out_proj can move (its zero weights block the rest); after one optimiser
    step every parameter, the time embedding included, receives a non-zero gradient."""
    torch.manual_seed(0)
    op = LatentOperator(operator_cfg(architecture, dropout=0.0))
    opt = torch.optim.SGD(op.parameters(), lr=0.5)
    z, target = torch.randn(4, 8, 8), torch.randn(4, 8, 8)
    dt = torch.tensor([0.1, 0.2, 0.3, 0.4])

    (op(z, dt) - target).pow(2).mean().backward()
    assert_grads(op, nonzero=False)  # present and finite, zero upstream of out_proj
    assert op.out_proj.weight.grad.abs().sum() > 0
    assert op.in_proj.weight.grad.abs().sum() == 0
    opt.step()
    opt.zero_grad()

    (op(z, dt) - target).pow(2).mean().backward()
    assert_grads(op, nonzero=True)


def test_train_mode_with_dropout_runs_and_eval_is_deterministic() -> None:
    torch.manual_seed(0)
    op = LatentOperator(operator_cfg(dropout=0.2))
    torch.nn.init.normal_(op.out_proj.weight, std=0.1)
    z = torch.randn(2, 8, 8)
    op.train()
    assert op(z, 0.1).shape == z.shape
    op.eval()
    assert torch.equal(op(z, 0.1), op(z, 0.1))


def test_token_resampling_is_periodic_and_exact_on_constants() -> None:
    x = torch.randn(2, 8, 5)
    up = upsample_tokens(x)
    assert up.shape == (2, 16, 5)
    # Periodic: rolling the coarse tokens by one rolls the fine ones by two.
    assert torch.allclose(upsample_tokens(torch.roll(x, 1, dims=1)), torch.roll(up, 2, dims=1))
    const = torch.ones(1, 4, 3)
    assert torch.allclose(upsample_tokens(const), torch.ones(1, 8, 3))
    assert torch.allclose(downsample_tokens(x), 0.5 * (x[:, 0::2] + x[:, 1::2]))


def test_two_dimensional_token_grid_resamples_within_rows() -> None:
    x = torch.randn(2, 4, 4, 3)  # [B, rows, row length, H]
    seq = x.reshape(2, 16, 3)
    down = downsample_tokens(seq, rows=4).reshape(2, 4, 2, 3)
    assert torch.allclose(down, 0.5 * (x[:, :, 0::2] + x[:, :, 1::2]))
    # Upsampling wraps around inside each row (periodic along the row), never across rows.
    coarse = torch.randn(2, 4, 2, 3)
    up = upsample_tokens(coarse.reshape(2, 8, 3), rows=4).reshape(2, 4, 4, 3)
    rolled = upsample_tokens(torch.roll(coarse, 1, dims=2).reshape(2, 8, 3), rows=4)
    assert torch.allclose(rolled.reshape(2, 4, 4, 3), torch.roll(up, 2, dims=2))
    for row in range(4):
        assert torch.allclose(up[:, row], upsample_tokens(coarse[:, row]))

    torch.manual_seed(0)
    op = LatentOperator(operator_cfg(latent_tokens=16, spatial_dims=2))
    torch.nn.init.normal_(op.out_proj.weight, std=0.1)
    assert op(torch.randn(2, 16, 8), 0.1).shape == (2, 16, 8)


def test_bf16_autocast() -> None:
    torch.manual_seed(0)
    op = LatentOperator(operator_cfg())
    torch.nn.init.normal_(op.out_proj.weight, std=0.1)
    z = torch.randn(2, 8, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = op(z, 0.1)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    assert torch.allclose(out, op(z, 0.1), atol=0.1)


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"group_size": 5, "attention": "grouped"}, "group_size"),
        ({"num_heads": 4, "attention": "grouped"}, "num_heads"),
        ({"num_heads": 5}, "num_heads"),  # relpos: 24 channels not divisible by 5 heads
        ({"attention": "axial"}, "attention"),
        ({"window": 0}, "window"),
        ({"architecture": "unet"}, "architecture"),
        ({"depths": ()}, "depths"),
        ({"depths": (1, 1, 1, 1, 1)}, "latent_tokens"),  # 8 tokens cannot halve 4 times
        ({"latent_tokens": 6}, "latent_tokens"),
        ({"latent_tokens": 8, "spatial_dims": 2}, "latent_tokens"),  # not a square
        ({"latent_tokens": 36, "spatial_dims": 2}, "latent_tokens"),  # 6 per row, not / 4
        ({"spatial_dims": 3}, "spatial_dims"),
        ({"dropout": 1.0}, "dropout"),
        ({"mlp_ratio": 0.0}, "mlp_ratio"),
        ({"time_embed_dim": 0}, "time_embed_dim"),
    ],
)
def test_validation_names_the_field(override: dict, field: str) -> None:
    cfg = operator_cfg(**override)
    with pytest.raises(ValueError, match=rf"latent_operator\.{field}"):
        LatentOperator(cfg)


def test_stack_does_not_need_divisible_tokens() -> None:
    op = LatentOperator(operator_cfg("pdet_stack", latent_tokens=6))
    assert op(torch.randn(1, 6, 8), 0.1).shape == (1, 6, 8)


def test_conv_stack_ignores_attention_groups_and_checks_kernel() -> None:
    # Attention group sizes do not apply to the conv stack, so they need not divide hidden_dim.
    op = LatentOperator(operator_cfg("conv_stack", hidden_dim=20, group_size=6, kernel_size=3))
    assert op(torch.randn(2, 8, 8), 0.1).shape == (2, 8, 8)
    with pytest.raises(ValueError, match=r"latent_operator\.kernel_size"):
        LatentOperator(operator_cfg("conv_stack", kernel_size=4))


def test_conv_stack_is_local_and_periodic() -> None:
    """One block with kernel 3 only mixes each token with its two periodic neighbours."""
    torch.manual_seed(0)
    op = LatentOperator(operator_cfg("conv_stack", depths=(1,), kernel_size=3))
    torch.nn.init.normal_(op.out_proj.weight, std=0.1)
    z = torch.randn(1, 8, 8)
    bumped = z.clone()
    bumped[0, 0] += 1.0
    changed = (op(bumped, 0.1) - op(z, 0.1)).abs().sum(-1)[0] > 1e-6  # [8]
    # Two convolutions of width 3: reach 2 tokens each side, wrapping around (0 -> 6, 7, 1, 2).
    assert changed.tolist() == [True, True, True, False, False, False, True, True]


def test_conv_stack_on_a_two_dimensional_token_grid() -> None:
    torch.manual_seed(0)
    op = LatentOperator(operator_cfg("conv_stack", latent_tokens=16, spatial_dims=2))
    assert op(torch.randn(2, 16, 8), 0.1).shape == (2, 16, 8)
