"""GridEncoder: shapes, identity stem at init, token positions, config validation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ups_kedro.models.encoder import GridEncoder, GridEncoderConfig

from ._helpers import GRIDS, encoder_cfg


@pytest.mark.parametrize("spatial_dims", [1, 2])
@pytest.mark.parametrize("channels", [1, 3])
def test_forward_shape(spatial_dims: int, channels: int) -> None:
    torch.manual_seed(0)
    cfg = encoder_cfg(spatial_dims, channels)
    enc = GridEncoder(cfg)
    u = torch.randn(3, *GRIDS[spatial_dims], channels)
    z = enc(u)
    assert z.shape == (3, cfg.latent_tokens, cfg.latent_dim)
    assert torch.isfinite(z).all()


def test_wrong_input_shape_is_rejected() -> None:
    enc = GridEncoder(encoder_cfg(1, 1))
    with pytest.raises(ValueError, match="expects u of shape"):
        enc(torch.randn(2, 64, 1))


@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_stem_is_identity_at_init(spatial_dims: int) -> None:
    torch.manual_seed(0)
    enc = GridEncoder(encoder_cfg(spatial_dims, 2))
    x = enc.patchify(torch.randn(2, *GRIDS[spatial_dims], 2))
    assert torch.equal(enc.stem(x), x)


def test_patchify_keeps_every_value_once() -> None:
    enc = GridEncoder(encoder_cfg(1, 2))
    u = torch.arange(2 * 32 * 2, dtype=torch.float32).reshape(2, 32, 2)
    x = enc.patchify(u)  # [B, C*p, P]
    assert x.shape == (2, 4, 16)
    assert torch.equal(torch.sort(x.flatten())[0], torch.sort(u.flatten())[0])
    # Patch j of channel c holds u[2j : 2j+2, c].
    assert torch.equal(x[0, 0:2, 3], u[0, 6:8, 0])


@pytest.mark.parametrize(("spatial_dims", "expected"), [(1, 8), (2, 4)])
def test_token_positions_are_cell_centres(spatial_dims: int, expected: int) -> None:
    enc = GridEncoder(encoder_cfg(spatial_dims))
    pos = enc.token_positions()
    assert pos.shape == (expected, spatial_dims)
    if spatial_dims == 1:
        assert torch.allclose(pos[:, 0], (torch.arange(8) + 0.5) / 8)
    else:  # 2 x 2 grid, row-major
        assert pos.tolist() == [[0.25, 0.25], [0.25, 0.75], [0.75, 0.25], [0.75, 0.75]]


def test_pooled_token_is_mean_of_its_patches() -> None:
    """With the stem at identity, token j only sees the patches of its own cell."""
    torch.manual_seed(0)
    enc = GridEncoder(encoder_cfg(1, 1))  # 32 points, patch 2 -> 16 patches -> 8 tokens
    u = torch.zeros(1, 32, 1)
    u[0, 4:8, 0] = 1.0  # exactly token 1's cell
    z0 = enc(torch.zeros(1, 32, 1))
    changed = (enc(u) - z0).abs().sum(-1)[0]
    assert changed[1] > 0
    assert torch.count_nonzero(changed) == 1


@pytest.mark.parametrize(
    ("override", "field"),
    [
        ({"spatial_dims": 3}, "spatial_dims"),
        ({"grid_shape": (32, 32)}, "grid_shape"),
        ({"patch_size": 3}, "grid_shape"),
        ({"latent_tokens": 5}, "latent_tokens"),
        ({"spatial_dims": 2, "grid_shape": (8, 8), "latent_tokens": 8}, "latent_tokens"),
        ({"in_channels": 0}, "in_channels"),
        ({"stem_layers": -1}, "stem_layers"),
        ({"fourier_freqs": (1.0, -2.0)}, "fourier_freqs"),
    ],
)
def test_validation_names_the_field(override: dict, field: str) -> None:
    cfg = dataclasses.replace(encoder_cfg(1, 1), **override)
    with pytest.raises(ValueError, match=rf"grid_encoder\.{field}"):
        cfg.validate()
    with pytest.raises(ValueError, match=field):
        GridEncoder(cfg)


def test_config_is_frozen() -> None:
    cfg = encoder_cfg()
    with pytest.raises(AttributeError):
        cfg.patch_size = 4  # type: ignore[misc]
    assert isinstance(cfg, GridEncoderConfig)
