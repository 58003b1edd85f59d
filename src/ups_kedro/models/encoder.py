"""Grid encoder: a regular 1D/2D field -> a short sequence of latent tokens.

Pipeline (shapes for 1D, ``P`` = number of patches, ``N`` = latent tokens)::

    u [B, X, C] -> patches [B, C*p, P] -> residual conv stem [B, C*p, P]
      -> pool patch cells to N token cells -> concat Fourier features of the cell centres
      -> Linear -> z [B, N, D]

The original applied ``Linear`` before the average pooling; both are linear in the pooled
quantity, so pooling first gives the same function for a fraction of the cost.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ups_kedro.models.autoencoder_config import GridEncoderConfig
from ups_kedro.models.layers import cell_centres, fourier_features, token_positions


class ResidualConvStem(nn.Module):
    """``x + conv_L(gelu(... conv_1(x)))`` with circular padding (periodic fields).

    The last convolution is zero-initialised, so the stem is exactly the identity at init and the
    encoder starts as a linear patch embedding.
    """

    def __init__(self, channels: int, hidden: int, layers: int, spatial_dims: int) -> None:
        super().__init__()
        conv = nn.Conv1d if spatial_dims == 1 else nn.Conv2d
        widths = [channels] + [hidden] * (layers - 1) + [channels]
        self.convs = nn.ModuleList(
            conv(widths[i], widths[i + 1], kernel_size=3, padding=1, padding_mode="circular")
            for i in range(layers)
        )
        if layers:
            nn.init.zeros_(self.convs[-1].weight)
            nn.init.zeros_(self.convs[-1].bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x``: ``[B, channels, *patch_grid]`` -> same shape."""
        if len(self.convs) == 0:
            return x
        h = x
        for i, conv in enumerate(self.convs):
            h = conv(h) if i == 0 else conv(F.gelu(h))
        return x + h


class GridEncoder(nn.Module):
    """Encode ``u [B, *grid_shape, C]`` (channels-last, normalised) into ``z [B, N, D]``."""

    def __init__(self, cfg: GridEncoderConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        s, p = cfg.spatial_dims, cfg.patch_size
        self.patch_grid = tuple(n // p for n in cfg.grid_shape)
        self.stem = ResidualConvStem(cfg.patch_channels, cfg.stem_hidden, cfg.stem_layers, s)

        # Fourier features of the patch centres, average-pooled to the token cells once, here:
        # they do not depend on the input.  Non-persistent: rebuilt from cfg, not stored.
        freqs = torch.tensor(cfg.fourier_freqs, dtype=torch.float32)
        patch_feats = fourier_features(cell_centres(self.patch_grid), freqs)  # [P, F]
        pos = self._pool(patch_feats.T.reshape(1, -1, *self.patch_grid))  # [1, N, F]
        self.register_buffer("pos_features", pos[0], persistent=False)
        self.proj = nn.Linear(cfg.patch_channels + pos.shape[-1], cfg.latent_dim)

    def _pool(self, h: torch.Tensor) -> torch.Tensor:
        """Average equal patch cells into token cells: ``[B, K, *patch_grid] -> [B, N, K]``.

        Equivalent to adaptive average pooling (validated: the patch grid divides evenly), but a
        reshape-mean, so it is cheap and compiles to one reduction.
        """
        side = self.cfg.tokens_per_axis
        b, k = h.shape[:2]
        if self.cfg.spatial_dims == 1:
            h = h.reshape(b, k, side, -1).mean(-1)  # [B, K, N]
        else:
            px, py = self.patch_grid
            h = h.reshape(b, k, side, px // side, side, py // side).mean((3, 5))  # [B, K, S, S]
            h = h.reshape(b, k, side * side)  # row-major, like token_positions
        return h.transpose(1, 2)

    def patchify(self, u: torch.Tensor) -> torch.Tensor:
        """``u [B, *grid, C]`` -> ``[B, C * p**s, *patch_grid]`` (pixel-unshuffle)."""
        cfg = self.cfg
        if tuple(u.shape[1:-1]) != tuple(cfg.grid_shape) or u.shape[-1] != cfg.in_channels:
            raise ValueError(
                f"GridEncoder expects u of shape [B, *{tuple(cfg.grid_shape)}, {cfg.in_channels}], "
                f"got {tuple(u.shape)}"
            )
        b, p = u.shape[0], cfg.patch_size
        if cfg.spatial_dims == 1:
            x = u.transpose(1, 2)  # [B, C, X]
            x = x.reshape(b, cfg.in_channels, -1, p).transpose(2, 3)  # [B, C, p, P]
            return x.reshape(b, cfg.patch_channels, -1)
        return F.pixel_unshuffle(u.permute(0, 3, 1, 2), p)  # [B, C*p*p, X/p, Y/p]

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """``u [B, *grid_shape, C]`` -> ``z [B, N, D]``."""
        h = self.stem(self.patchify(u))  # [B, C*p^s, *patch_grid]
        h = self._pool(h)  # [B, N, C*p^s]
        pos = self.pos_features.to(h.dtype).expand(h.shape[0], -1, -1)  # [B, N, F]
        return self.proj(torch.cat([h, pos], dim=-1))  # [B, N, D]

    def token_positions(self) -> torch.Tensor:
        """Centres of the pooled token cells, ``[N, spatial_dims]`` in ``[0, 1)``."""
        return token_positions(self.cfg.latent_tokens, self.cfg.spatial_dims)


__all__ = ["GridEncoder", "GridEncoderConfig", "ResidualConvStem"]
