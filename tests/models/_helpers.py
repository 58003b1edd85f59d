"""Small configs and gradient checks shared by the model tests."""

from __future__ import annotations

import torch
from torch import nn

from ups_kedro.models.decoder import AnyPointDecoderConfig
from ups_kedro.models.encoder import GridEncoderConfig
from ups_kedro.models.operator import LatentOperatorConfig

GRIDS = {1: (32,), 2: (8, 8)}
TOKENS = {1: 8, 2: 4}  # 2D: a 2 x 2 token grid


def encoder_cfg(spatial_dims: int = 1, channels: int = 1, **kw: object) -> GridEncoderConfig:
    base = dict(
        in_channels=channels,
        spatial_dims=spatial_dims,
        grid_shape=GRIDS[spatial_dims],
        patch_size=2,
        latent_dim=8,
        latent_tokens=TOKENS[spatial_dims],
        stem_hidden=8,
    )
    return GridEncoderConfig(**{**base, **kw})


def decoder_cfg(spatial_dims: int = 1, channels: int = 1, **kw: object) -> AnyPointDecoderConfig:
    base = dict(
        latent_dim=8,
        out_channels=channels,
        spatial_dims=spatial_dims,
        latent_tokens=TOKENS[spatial_dims],
        hidden_dim=16,
        mlp_hidden=16,
    )
    return AnyPointDecoderConfig(**{**base, **kw})


def operator_cfg(architecture: str = "pdet_unet", **kw: object) -> LatentOperatorConfig:
    base = dict(
        latent_dim=8,
        latent_tokens=8,
        hidden_dim=24,
        group_size=6,
        num_heads=3,
        time_embed_dim=16,
        architecture=architecture,
    )
    return LatentOperatorConfig(**{**base, **kw})


def assert_grads(module: nn.Module, nonzero: bool) -> None:
    """Every parameter has a finite gradient; with ``nonzero`` also a non-zero one."""
    for name, p in module.named_parameters():
        assert p.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        if nonzero:
            assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"
