"""AnyPointDecoder: shapes, any resolution, periodicity, continuity, validation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ups_kedro.models.decoder import AnyPointDecoder
from ups_kedro.models.layers import cell_centres

from ._helpers import GRIDS, TOKENS, assert_grads, decoder_cfg


@pytest.mark.parametrize("spatial_dims", [1, 2])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("local", [True, False])
def test_forward_shapes(spatial_dims: int, channels: int, local: bool) -> None:
    torch.manual_seed(0)
    cfg = decoder_cfg(spatial_dims, channels, local_features=local)
    dec = AnyPointDecoder(cfg)
    z = torch.randn(2, TOKENS[spatial_dims], cfg.latent_dim)
    shared = dec(z, torch.rand(7, spatial_dims))
    per_sample = dec(z, torch.rand(2, 7, spatial_dims))
    assert shared.shape == per_sample.shape == (2, 7, channels)
    grid = (16,) if spatial_dims == 1 else (6, 10)
    assert dec.decode_grid(z, grid).shape == (2, *grid, channels)


@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_shared_and_per_sample_coords_agree(spatial_dims: int) -> None:
    torch.manual_seed(0)
    dec = AnyPointDecoder(decoder_cfg(spatial_dims, 2))
    z = torch.randn(3, TOKENS[spatial_dims], 8)
    coords = torch.rand(11, spatial_dims)
    a = dec(z, coords)
    b = dec(z, coords.expand(3, -1, -1))
    assert torch.allclose(a, b, atol=1e-6)


def test_any_resolution_256_and_512() -> None:
    torch.manual_seed(0)
    dec = AnyPointDecoder(decoder_cfg(1, 1, latent_tokens=32))
    z = torch.randn(2, 32, 8)
    coarse = dec.decode_grid(z, (256,))
    fine = dec.decode_grid(z, [512])
    assert coarse.shape == (2, 256, 1) and fine.shape == (2, 512, 1)
    # decode_grid is forward at the cell centres (i + 0.5) / n.
    assert torch.allclose(coarse, dec(z, cell_centres((256,))).reshape(2, 256, 1))
    # Fine cells 2i, 2i+1 straddle coarse cell i: a smooth decoder nearly agrees with it.
    pair_mean = fine.reshape(2, 256, 2, 1).mean(2)
    assert (pair_mean - coarse).abs().max() < 0.1 * coarse.abs().max()


@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_periodic_in_coordinates(spatial_dims: int) -> None:
    torch.manual_seed(0)
    dec = AnyPointDecoder(decoder_cfg(spatial_dims, 1))
    z = torch.randn(2, TOKENS[spatial_dims], 8)
    coords = torch.rand(9, spatial_dims)
    assert torch.allclose(dec(z, coords), dec(z, coords + 1.0), atol=1e-5)
    assert torch.allclose(dec(z, coords), dec(z, coords - 2.0), atol=1e-5)


@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_continuous_across_token_centres_and_cell_edges(spatial_dims: int) -> None:
    """The local features blend corner tokens with interpolation weights: no jumps."""
    torch.manual_seed(0)
    dec = AnyPointDecoder(decoder_cfg(spatial_dims, 1))
    z = torch.randn(2, TOKENS[spatial_dims], 8)
    side = round(TOKENS[spatial_dims] ** (1 / spatial_dims))
    # Token centres (j + 0.5) / side and token-cell edges j / side, incl. the periodic wrap 0.
    special = torch.cat([(torch.arange(side) + 0.5) / side, torch.arange(side) / side])
    pts = special.unsqueeze(-1).expand(-1, spatial_dims).clone()
    if spatial_dims == 2:
        pts[:, 1] = 0.3  # cross the special lines along the first axis only
    eps = 1e-5
    shift = torch.zeros(spatial_dims)
    shift[0] = eps
    jump = (dec(z, pts + shift) - dec(z, pts - shift)).abs().max()
    assert jump < 1e-2


@pytest.mark.parametrize("spatial_dims", [1, 2])
@pytest.mark.parametrize(("layers", "local"), [(2, True), (0, True), (1, False)])
def test_every_parameter_gets_a_gradient(spatial_dims: int, layers: int, local: bool) -> None:
    torch.manual_seed(0)
    dec = AnyPointDecoder(decoder_cfg(spatial_dims, 2, num_layers=layers, local_features=local))
    z = torch.randn(2, TOKENS[spatial_dims], 8, requires_grad=True)
    dec(z, torch.rand(2, 13, spatial_dims)).pow(2).mean().backward()
    assert_grads(dec, nonzero=True)
    assert z.grad is not None and z.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"spatial_dims": 0}, "spatial_dims"),
        ({"latent_tokens": 0}, "latent_tokens"),
        ({"spatial_dims": 2, "latent_tokens": 8}, "latent_tokens"),
        ({"num_heads": 3}, "num_heads"),
        ({"num_layers": -1}, "num_layers"),
        ({"fourier_freqs": ()}, "fourier_freqs"),
        ({"out_channels": 0}, "out_channels"),
        ({"mlp_hidden": 0}, "mlp_hidden"),
        ({"num_layers": 0, "local_features": False}, "num_layers"),
    ],
)
def test_validation_names_the_field(override: dict, field: str) -> None:
    cfg = dataclasses.replace(decoder_cfg(1, 1), **override)
    with pytest.raises(ValueError, match=rf"any_point_decoder\.{field}"):
        AnyPointDecoder(cfg)


def test_decode_grid_rejects_wrong_rank() -> None:
    dec = AnyPointDecoder(decoder_cfg(1, 1))
    with pytest.raises(ValueError, match="grid_shape"):
        dec.decode_grid(torch.randn(1, 8, 8), (4, 4))


@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_cell_mode_shapes_periodicity_and_shared_coords(spatial_dims: int) -> None:
    torch.manual_seed(0)
    dec = AnyPointDecoder(decoder_cfg(spatial_dims, 2, local_mode="cell", num_layers=0))
    z = torch.randn(3, TOKENS[spatial_dims], 8)
    coords = torch.rand(11, spatial_dims)
    out = dec(z, coords)
    assert out.shape == (3, 11, 2)
    assert torch.allclose(out, dec(z, coords.expand(3, -1, -1)), atol=1e-6)
    assert torch.allclose(out, dec(z, coords + 1.0), atol=1e-5)
    assert dec.decode_grid(z, GRIDS[spatial_dims]).shape == (3, *GRIDS[spatial_dims], 2)


def test_cell_mode_reads_only_the_containing_token() -> None:
    """With the kernel-3 token convolution, a point depends on its token and the 2 neighbours."""
    torch.manual_seed(0)
    dec = AnyPointDecoder(decoder_cfg(1, 1, local_mode="cell", num_layers=0))
    z = torch.randn(1, TOKENS[1], 8)
    x = torch.tensor([[0.5 / TOKENS[1]]])  # centre of token 0's patch
    far = z.clone()
    far[0, 4] += 10.0  # token 4 is not a neighbour of token 0 (of 8)
    near = z.clone()
    near[0, 1] += 10.0
    assert torch.allclose(dec(z, x), dec(far, x))
    assert not torch.allclose(dec(z, x), dec(near, x))


def test_local_mode_is_validated() -> None:
    with pytest.raises(ValueError, match=r"any_point_decoder\.local_mode"):
        AnyPointDecoder(decoder_cfg(1, 1, local_mode="nearest"))
