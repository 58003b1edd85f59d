"""Builders that size an untrained model from a stage's parameters and the data layout.

Shared by the stages that train the same kind of model (the transient autoencoder and Stage 4's
steady autoencoder).  ``cfg`` is the stage's parsed parameters (``latent``, ``encoder``,
``decoder`` blocks); the model config is what the checkpoint records.
"""

from __future__ import annotations

import math
from typing import Any

from ups_kedro.config import ConfigError, follow_data
from ups_kedro.models.autoencoder_config import AutoencoderConfig
from ups_kedro.models.registry import build_model


def check_token_grid(tokens: int, dims: int) -> None:
    """The tokens form a grid of the data's dimension: refuse a count that is not a power."""
    side = round(tokens ** (1 / dims)) if tokens > 0 else 0
    if tokens < 1 or side ** dims != tokens:
        kind = {1: "a positive integer", 2: "a perfect square", 3: "a perfect cube"}.get(
            dims, f"a perfect {dims}-th power")
        examples = sorted({max(side, 1) ** dims, (max(side, 1) + 1) ** dims})
        raise ConfigError(
            f"autoencoder.latent.tokens={tokens} must be {kind} for {dims}D data (the tokens "
            f"form a grid), e.g. {' or '.join(map(str, examples))}")


def patch_tokens(grid: tuple[int, ...], patch_size: int) -> int:
    """One token per encoder patch: ``prod(n // patch_size)`` (``latent.tokens: null``)."""
    return math.prod(n // patch_size for n in grid)


def build_autoencoder(cfg: Any, shape: tuple[int, ...]):
    """An untrained Autoencoder sized from the parameters and the data shape [N, T, *space, C]."""
    grid = tuple(int(n) for n in shape[2:-1])
    channels = int(shape[-1])
    tokens = cfg.latent.tokens or patch_tokens(grid, cfg.encoder.patch_size)
    check_token_grid(tokens, len(grid))
    common = {"latent_dim": cfg.latent.dim, "latent_tokens": tokens, "spatial_dims": len(grid)}
    return build_model("autoencoder", AutoencoderConfig(
        encoder=follow_data(cfg.encoder, "autoencoder.encoder", **common, in_channels=channels,
                            grid_shape=grid),
        decoder=follow_data(cfg.decoder, "autoencoder.decoder", **common, out_channels=channels)))
