"""The latent token layout, torch-free (shared by the model configs and the modules)."""

from __future__ import annotations


def tokens_per_axis(latent_tokens: int, spatial_dims: int) -> int:
    """Tokens along each spatial axis; ``-1`` when ``latent_tokens`` is not an exact s-th power."""
    side = round(latent_tokens ** (1.0 / spatial_dims))
    return side if side**spatial_dims == latent_tokens else -1
