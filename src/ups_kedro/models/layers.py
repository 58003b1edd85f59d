"""Small building blocks shared by the encoder, decoder and latent operator.

Conventions: positions live in the periodic unit cube ``[0, 1)^s``; latent tokens of a
``spatial_dims = 2`` model form a ``sqrt(N) x sqrt(N)`` grid flattened row-major (the first
spatial axis varies slowest), matching :func:`token_positions`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ups_kedro.models.token_grid import tokens_per_axis

__all__ = ["Mlp", "RMSNorm", "cell_centres", "check", "fourier_features", "rms_norm",
           "token_positions", "tokens_per_axis"]


def check(ok: bool, where: str, field: str, message: str) -> None:
    """Raise ``ValueError("<where>.<field> ...")`` unless ``ok`` (config validation helper)."""
    if not ok:
        sep = "" if message.startswith("=") else " "
        raise ValueError(f"{where}.{field}{sep}{message}")


def cell_centres(shape: Sequence[int]) -> torch.Tensor:
    """Cell-centre coordinates ``(i + 0.5) / n`` of a regular grid, row-major.

    Returns:
        ``[prod(shape), len(shape)]`` float32 tensor in ``[0, 1)``.
    """
    axes = [(torch.arange(n, dtype=torch.float32) + 0.5) / n for n in shape]
    mesh = torch.meshgrid(*axes, indexing="ij")
    return torch.stack([m.reshape(-1) for m in mesh], dim=-1)


def token_positions(latent_tokens: int, spatial_dims: int) -> torch.Tensor:
    """Centres of the latent token cells: ``[N, spatial_dims]`` in ``[0, 1)``."""
    side = tokens_per_axis(latent_tokens, spatial_dims)
    if side < 1:
        raise ValueError(f"latent_tokens={latent_tokens} is not a perfect power {spatial_dims}")
    return cell_centres((side,) * spatial_dims)


def fourier_features(
    pos: torch.Tensor, freqs: torch.Tensor, scale: float = 2.0 * math.pi
) -> torch.Tensor:
    """``[sin, cos](scale * f * pos)`` for every frequency and axis.

    Args:
        pos: ``[..., s]`` positions (float32 recommended; computed in float32 regardless).
        freqs: ``[F]`` frequencies.
        scale: ``2*pi`` makes integer frequencies periodic on ``[0, 1)``.

    Returns:
        ``[..., 2 * s * F]``.
    """
    angles = scale * pos.float().unsqueeze(-1) * freqs.float()  # [..., s, F]
    feats = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)  # [..., s, 2F]
    return feats.flatten(-2)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """``x / rms(x) * weight`` over the last dim, computed in float32 (bf16-autocast safe).

    Returns a tensor of ``x``'s dtype.
    """
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + eps)
    return (xf * weight.float()).to(x.dtype)


class RMSNorm(nn.Module):
    """RMS normalisation over the last dim with a learnt gain (see :func:`rms_norm`)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rms_norm(x, self.weight, self.eps)


class Mlp(nn.Module):
    """``Linear -> GELU -> Dropout -> Linear`` on the last dim."""

    def __init__(self, dim: int, hidden: int, out: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim if out is None else out)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.dropout(F.gelu(self.fc1(x))))
