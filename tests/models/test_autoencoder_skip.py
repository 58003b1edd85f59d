"""The decoder's linear "unpatch" skip path and the autoencoder's exact inverse-pair init."""

from __future__ import annotations

import pytest
import torch

from ups_kedro.models.autoencoder import Autoencoder, AutoencoderConfig
from ups_kedro.models.decoder import AnyPointDecoder
from ups_kedro.models.registry import build_model, model_config

from ._helpers import GRIDS, TOKENS, decoder_cfg, encoder_cfg

# One patch per token: 1D 32 points / 8 tokens -> patch 4; 2D 8 x 8 / (2 x 2) -> patch 4.
PATCH = 4


def _skip_ae(spatial_dims: int, channels: int, latent_dim: int) -> Autoencoder:
    enc = encoder_cfg(spatial_dims, channels, patch_size=PATCH, latent_dim=latent_dim)
    dec = decoder_cfg(spatial_dims, channels, latent_dim=latent_dim, local_mode="cell",
                      skip_patch_size=PATCH)
    return Autoencoder(AutoencoderConfig(enc, dec))


@pytest.mark.parametrize(("spatial_dims", "channels", "latent_dim"),
                         [(1, 1, 8), (1, 2, 8), (2, 1, 16), (2, 2, 40)])
def test_inverse_pair_reconstructs_exactly_at_init(spatial_dims: int, channels: int,
                                                   latent_dim: int) -> None:
    """latent_dim >= C * p**s: decode(encode(u)) == u before any training, and the latent is
    an isometry up to a constant (its RMS equals the field's)."""
    torch.manual_seed(0)
    ae = _skip_ae(spatial_dims, channels, latent_dim)
    u = torch.randn(3, *GRIDS[spatial_dims], channels)
    z, u_hat = ae(u)
    assert (u_hat - u).abs().max() < 1e-5
    assert torch.allclose(z.pow(2).mean().sqrt(), u.pow(2).mean().sqrt(), rtol=1e-4)
    assert ae.encode(torch.zeros_like(u)).abs().max() == 0  # no offset: zero field -> zero latent


def test_without_the_skip_path_init_is_not_exact() -> None:
    """The control: the same halves without the skip path are far from the identity at init."""
    torch.manual_seed(0)
    enc = encoder_cfg(1, 1, patch_size=PATCH)
    ae = Autoencoder(AutoencoderConfig(enc, decoder_cfg(1, 1, local_mode="cell")))
    u = torch.randn(3, *GRIDS[1], 1)
    assert (ae(u)[1] - u).pow(2).mean() > 0.1


@pytest.mark.parametrize("spatial_dims", [1, 2])
def test_skip_decoder_interpolates_between_grid_points(spatial_dims: int) -> None:
    """Any point: halfway between grid centres the output is the mean of the neighbours
    (periodic across the domain edge), and decode_grid at the native grid is exact."""
    torch.manual_seed(0)
    ae = _skip_ae(spatial_dims, 1, 16)
    grid = GRIDS[spatial_dims]
    u = torch.randn(2, *grid, 1)
    z = ae.encode(u)
    m = grid[0]
    edges = torch.arange(m) / m  # cell edges: halfway between centres k - 1 and k
    if spatial_dims == 1:
        out = ae.decoder(z, edges[:, None])
        ref = 0.5 * (u + torch.roll(u, 1, dims=1))
    else:
        xx, yy = torch.meshgrid(edges, edges, indexing="ij")
        out = ae.decoder(z, torch.stack([xx, yy], -1).reshape(-1, 2)).reshape(2, m, m, 1)
        ref = 0.25 * (u + u.roll(1, 1) + u.roll(1, 2) + u.roll((1, 1), (1, 2)))
    assert torch.allclose(out, ref, atol=1e-5)
    assert torch.allclose(ae.decode(z, grid), u, atol=1e-5)


def test_skip_path_learns_the_inverse_from_a_random_unpatch() -> None:
    """The skip path is trainable: with its unpatch re-randomised (error ~ the field itself),
    a hundred Adam steps on reconstruction bring the error down by orders of magnitude."""
    torch.manual_seed(0)
    ae = _skip_ae(1, 1, 8)
    with torch.no_grad():
        ae.decoder.unpatch.weight.normal_(std=0.3)
    u = torch.randn(8, *GRIDS[1], 1)
    start = (ae(u)[1] - u).pow(2).mean().item()
    opt = torch.optim.Adam(ae.parameters(), lr=3e-2)
    for _ in range(100):
        loss = (ae(u)[1] - u).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert start > 0.3 and loss.item() < 1e-3 * start


def test_skip_patch_size_must_match_one_patch_per_token() -> None:
    enc = encoder_cfg(1, 1, patch_size=2)  # 32 / 2 = 16 patches for 8 tokens
    dec = decoder_cfg(1, 1, skip_patch_size=2)
    with pytest.raises(ValueError, match=r"autoencoder\.decoder\.skip_patch_size"):
        Autoencoder(AutoencoderConfig(enc, dec))
    with pytest.raises(ValueError, match=r"any_point_decoder\.skip_patch_size"):
        AnyPointDecoder(decoder_cfg(1, 1, skip_patch_size=-1))


def test_configs_without_the_field_still_build() -> None:
    """Checkpoints written before the skip path existed (no ``skip_patch_size``) still load."""
    cfg = model_config(AnyPointDecoder(decoder_cfg(1, 1)))
    cfg.pop("skip_patch_size")
    dec = build_model("any_point_decoder", cfg)
    assert dec.cfg.skip_patch_size == 0 and not hasattr(dec, "unpatch")
    z = torch.randn(2, TOKENS[1], 8)
    assert dec(z, torch.rand(5, 1)).shape == (2, 5, 1)


def test_skip_only_decoder_is_linear_and_has_no_residual() -> None:
    """local_features off and no attention: the decoder is the skip path alone (linear in z),
    which the validation accepts only with the skip path on."""
    torch.manual_seed(0)
    dec = AnyPointDecoder(decoder_cfg(1, 1, local_features=False, num_layers=0,
                                      skip_patch_size=PATCH))
    assert not dec.residual and not hasattr(dec, "head_w2")
    assert {name.split(".")[0] for name, _ in dec.named_parameters()} == {"unpatch"}
    z1, z2, coords = torch.randn(2, TOKENS[1], 8), torch.randn(2, TOKENS[1], 8), torch.rand(9, 1)
    bias = dec(torch.zeros_like(z1), coords)
    assert torch.allclose(dec(z1 + 2 * z2, coords) - bias,
                          (dec(z1, coords) - bias) + 2 * (dec(z2, coords) - bias), atol=1e-5)
    with pytest.raises(ValueError, match=r"any_point_decoder\.num_layers"):
        AnyPointDecoder(decoder_cfg(1, 1, local_features=False, num_layers=0))


def test_latent_basis_follows_the_seed_not_the_decoder_architecture() -> None:
    """The orthogonal patch embedding is drawn from its own seeded generator: the same seed
    gives the same latents whatever residual the decoder has, another seed another basis."""
    def encoder_weight(seed: int, **dec_kw: object) -> torch.Tensor:
        torch.manual_seed(seed)
        enc = encoder_cfg(1, 1, patch_size=PATCH)
        dec = decoder_cfg(1, 1, local_mode="cell", skip_patch_size=PATCH, **dec_kw)
        return Autoencoder(AutoencoderConfig(enc, dec)).encoder.proj.weight

    plain = encoder_weight(0, local_features=False, num_layers=0)
    assert torch.equal(plain, encoder_weight(0, num_layers=1))
    assert not torch.equal(plain, encoder_weight(1, local_features=False, num_layers=0))
