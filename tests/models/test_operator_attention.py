"""Position-aware attention and anti-aliased resampling of the PDE-Transformer operator."""

from __future__ import annotations

import pytest
import torch

from tests.models._helpers import operator_cfg
from ups_kedro.models.operator import LatentOperator, downsample_tokens, upsample_tokens
from ups_kedro.models.operator_attention import RelPosAttention, blur_downsample_tokens


def _roll_grid(x: torch.Tensor, rows: int, shift: tuple[int, int]) -> torch.Tensor:
    """Periodic shift of tokens ``[B, N, H]`` on a row-major ``rows x N/rows`` grid."""
    b, n, h = x.shape
    g = x.reshape(b, rows, n // rows, h)
    return torch.roll(g, shifts=shift, dims=(1, 2)).reshape(b, n, h)


def _trained_like(attn: RelPosAttention) -> RelPosAttention:
    torch.nn.init.normal_(attn.rel_bias, std=1.0)  # a non-trivial, position-dependent bias
    return attn


@pytest.mark.parametrize(("rows", "length", "shift"), [(1, 16, (0, 3)), (4, 4, (1, 3))])
def test_relpos_attention_is_shift_equivariant(rows: int, length: int, shift) -> None:
    """Rolling the input tokens (1D row or 2D grid) rolls the output by the same shift."""
    torch.manual_seed(0)
    attn = _trained_like(RelPosAttention(32, 2, rows, length)).eval()
    x = torch.randn(2, rows * length, 32)
    out = attn(x)
    assert torch.allclose(attn(_roll_grid(x, rows, shift)), _roll_grid(out, rows, shift),
                          atol=1e-5)


def test_relpos_attention_sees_positions() -> None:
    """With a bias favouring the right-hand neighbour, a token's output follows that neighbour
    (a position-blind attention treats the tokens as a set and could not)."""
    torch.manual_seed(0)
    attn = RelPosAttention(16, 1, 1, 8).eval()
    with torch.no_grad():
        attn.rel_bias.fill_(-30.0)
        attn.rel_bias[0, 1] = 30.0   # offset +1
        attn.out.weight.copy_(torch.eye(16))
        attn.out.bias.zero_()
    x = torch.randn(1, 8, 16)
    v = attn.qkv(x)[..., 32:]   # the value projection of each token
    assert torch.allclose(attn(x), torch.roll(v, -1, dims=1), atol=1e-4)


def test_window_masks_distant_tokens_periodically() -> None:
    attn = RelPosAttention(16, 1, 1, 8, window=1)
    allowed = torch.isfinite(attn.bias()[0, 0])   # query 0: itself and neighbours 1 and 7
    assert allowed.tolist() == [True, True, False, False, False, False, False, True]


def test_windowed_operator_survives_the_weight_ema() -> None:
    """The EMA folds float buffers in by lerp: a float -inf mask would turn into NaN."""
    from ups_kedro.training.ema import create_ema

    torch.manual_seed(0)
    op = LatentOperator(operator_cfg("pdet_unet", hidden_dim=16, num_heads=1, window=1))
    torch.nn.init.normal_(op.out_proj.weight, std=0.1)
    ema = create_ema(op, 0.9)
    for _ in range(3):
        ema.update_parameters(op)
    assert torch.isfinite(ema.module(torch.randn(2, 8, 8), 0.1)).all()


def test_blur_downsample_is_antialiased_and_adjoint_of_upsampling() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 16, 3)
    # Even shifts commute exactly with halving.
    assert torch.allclose(blur_downsample_tokens(torch.roll(x, 2, 1)),
                          torch.roll(blur_downsample_tokens(x), 1, 1), atol=1e-6)
    # The highest token frequency (+-1 alternation) is removed, where pair means keep a trace
    # of nearby frequencies: alias-free for the Nyquist mode.
    nyquist = torch.tensor([1.0, -1.0] * 8).reshape(1, 16, 1)
    assert blur_downsample_tokens(nyquist).abs().max() < 1e-6
    # Adjoint: <down(x), y> * 2 == <x, up(y)> for the linear interpolation used on the way up.
    y = torch.randn(2, 8, 3)
    assert torch.allclose(2 * (blur_downsample_tokens(x) * y).sum(),
                          (x * upsample_tokens(y)).sum(), atol=1e-4)
    # Rows never mix on a 2D grid.
    grid = torch.randn(1, 4 * 8, 2)
    rowwise = torch.cat([blur_downsample_tokens(grid[:, 8 * r:8 * (r + 1)]) for r in range(4)], 1)
    assert torch.allclose(blur_downsample_tokens(grid, rows=4), rowwise)
    assert downsample_tokens(nyquist).abs().max() < 1e-6  # (pairs also cancel exact Nyquist)


@pytest.mark.parametrize(("tokens", "spatial_dims", "shift"), [(16, 1, (0, 4)), (64, 2, (3, 4))])
def test_pdet_unet_commutes_with_grid_shifts(tokens: int, spatial_dims: int, shift) -> None:
    """The whole U-Net commutes with shifts by the coarsest level's stride (4 tokens here)."""
    torch.manual_seed(0)
    op = LatentOperator(operator_cfg("pdet_unet", latent_tokens=tokens, hidden_dim=32,
                                     num_heads=2, spatial_dims=spatial_dims))
    torch.nn.init.normal_(op.out_proj.weight, std=0.1)
    for m in op.modules():
        if isinstance(m, RelPosAttention):
            _trained_like(m)
    rows = 1 if spatial_dims == 1 else 8
    z = torch.randn(2, tokens, 8)
    out = op(z, 0.1)
    assert torch.allclose(op(_roll_grid(z, rows, shift), 0.1), _roll_grid(out, rows, shift),
                          atol=1e-5)


def test_grouped_attention_is_still_available() -> None:
    op = LatentOperator(operator_cfg("pdet_unet", attention="grouped"))
    assert op(torch.randn(2, 8, 8), 0.1).shape == (2, 8, 8)
