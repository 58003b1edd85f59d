"""Latent operator: one time step ``z_t -> z_{t+dt}`` in latent token space.

A PDE-Transformer-like core (U-shaped or a plain stack) of pre-norm attention blocks, or a
stack of periodic convolutions, conditioned on ``dt`` through an additive time embedding.
Attention is multi-head with a periodic relative-position bias (``attention: relpos``, optionally
windowed; see :mod:`ups_kedro.models.operator_attention`) or the original's position-blind
channel-separated form (``attention: grouped``).
"""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import nn

from ups_kedro.models.layers import Mlp, RMSNorm, rms_norm
from ups_kedro.models.operator_config import ARCHITECTURES, LatentOperatorConfig
from ups_kedro.models.operator_attention import RelPosAttention, blur_downsample_tokens



class ChannelGroupAttention(nn.Module):
    """Channel-separated self-attention over tokens.

    The ``H`` channels are split into ``G = H / group_size`` groups.  Each group has its own
    q/k/v/out projections (block-diagonal weights, so groups never mix here; the MLP mixes them)
    and attends over the tokens with ``num_heads`` heads of width ``group_size / num_heads``.
    q and k are RMS-normalised per group (QK-norm, learnt gains) to keep logits bounded.
    Groups and heads are folded into the SDPA head dimension: no Python loop over groups.
    """

    def __init__(self, dim: int, group_size: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.groups = dim // group_size
        self.group_size = group_size
        self.num_heads = num_heads
        self.dropout = dropout
        g, gs = self.groups, group_size
        bound = 1.0 / math.sqrt(gs)  # nn.Linear's default init, per group
        self.qkv_weight = nn.Parameter(torch.empty(g, gs, 3 * gs).uniform_(-bound, bound))
        self.qkv_bias = nn.Parameter(torch.empty(g, 3 * gs).uniform_(-bound, bound))
        self.out_weight = nn.Parameter(torch.empty(g, gs, gs).uniform_(-bound, bound))
        self.out_bias = nn.Parameter(torch.empty(g, gs).uniform_(-bound, bound))
        self.q_gain = nn.Parameter(torch.ones(g, gs))
        self.k_gain = nn.Parameter(torch.ones(g, gs))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, N, H]`` -> ``[B, N, H]``."""
        b, n, dim = x.shape
        g, gs, nh = self.groups, self.group_size, self.num_heads
        xg = x.reshape(b, n, g, gs)
        # Block-diagonal projection: group g only sees its own channels.
        qkv = torch.einsum("bngi,gio->bngo", xg, self.qkv_weight.to(xg.dtype))
        qkv = qkv + self.qkv_bias.to(xg.dtype)
        q, k, v = qkv.chunk(3, dim=-1)  # each [B, N, G, gs]
        q = rms_norm(q, self.q_gain)
        k = rms_norm(k, self.k_gain)

        def heads(t: torch.Tensor) -> torch.Tensor:  # [B, N, G, gs] -> [B, G*nh, N, gs/nh]
            return t.reshape(b, n, g * nh, gs // nh).transpose(1, 2)

        a = F.scaled_dot_product_attention(
            heads(q), heads(k), heads(v), dropout_p=self.dropout if self.training else 0.0
        )
        a = a.transpose(1, 2).reshape(b, n, g, gs)
        out = torch.einsum("bngi,gio->bngo", a, self.out_weight.to(a.dtype))
        out = out + self.out_bias.to(a.dtype)
        return out.reshape(b, n, dim)


class OperatorBlock(nn.Module):
    """Pre-RMSNorm attention, then a pre-RMSNorm MLP; both residual.

    ``grid`` (rows, row_length) is the token grid at this block's resolution; ``None`` selects the
    position-blind :class:`ChannelGroupAttention`, otherwise :class:`RelPosAttention`.
    """

    def __init__(
        self, dim: int, group_size: int, num_heads: int, mlp_ratio: float, dropout: float,
        grid: tuple[int, int] | None = None, window: int | None = None,
    ) -> None:
        super().__init__()
        self.norm_attn = RMSNorm(dim)
        self.attn: nn.Module
        if grid is None:
            self.attn = ChannelGroupAttention(dim, group_size, num_heads, dropout)
        else:
            self.attn = RelPosAttention(dim, num_heads, grid[0], grid[1], window, dropout)
        self.norm_mlp = RMSNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), dropout=dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, N, H]`` -> ``[B, N, H]``."""
        x = x + self.attn(self.norm_attn(x))
        return x + self.mlp(self.norm_mlp(x))


class ConvBlock(nn.Module):
    """Pre-RMSNorm ``x + conv(gelu(conv(norm(x))))`` with periodic padding over the token grid.

    Tokens are ``[B, N, H]`` laid out as ``rows x (N / rows)`` (row-major, see
    :class:`LatentOperatorConfig`); ``rows == 1`` convolves along the single periodic row.
    """

    def __init__(self, dim: int, hidden: int, kernel_size: int, rows: int, spatial_dims: int,
                 dropout: float = 0.0) -> None:
        super().__init__()
        self.rows, self.spatial_dims = rows, spatial_dims
        conv = nn.Conv1d if spatial_dims == 1 else nn.Conv2d
        pad = kernel_size // 2
        self.norm = RMSNorm(dim)
        self.conv1 = conv(dim, hidden, kernel_size, padding=pad, padding_mode="circular")
        self.conv2 = conv(hidden, dim, kernel_size, padding=pad, padding_mode="circular")
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, N, H]`` -> ``[B, N, H]``."""
        b, n, h = x.shape
        grid = (n,) if self.spatial_dims == 1 else (self.rows, n // self.rows)
        y = self.norm(x).transpose(1, 2).reshape(b, h, *grid)  # channels-first token grid
        y = self.conv2(self.dropout(F.gelu(self.conv1(y))))
        return x + y.reshape(b, h, n).transpose(1, 2)


def downsample_tokens(x: torch.Tensor, rows: int = 1) -> torch.Tensor:
    """Average neighbouring token pairs within each row: ``[B, N, H] -> [B, N/2, H]``.

    ``rows`` > 1 treats the sequence as a row-major ``rows x (N / rows)`` grid (row length even,
    validated), so pairs never straddle two rows.
    """
    b, n, h = x.shape
    return x.reshape(b, rows, n // (2 * rows), 2, h).mean(3).reshape(b, n // 2, h)


def upsample_tokens(x: torch.Tensor, rows: int = 1) -> torch.Tensor:
    """Periodic linear interpolation back to the finer token centres: ``[B, M, H] -> [B, 2M, H]``.

    Coarse token ``m`` sits between fine tokens ``2m`` and ``2m+1``; each fine token is 3/4 of
    its own coarse token plus 1/4 of the coarse neighbour on its side, wrapping around within its
    row (a periodic domain, unlike ``F.interpolate``, which clamps at the ends).
    """
    b, m, h = x.shape
    x = x.reshape(b, rows, m // rows, h)
    even = 0.75 * x + 0.25 * torch.roll(x, 1, dims=2)
    odd = 0.75 * x + 0.25 * torch.roll(x, -1, dims=2)
    return torch.stack([even, odd], dim=3).reshape(b, 2 * m, h)


class LatentOperator(nn.Module):
    """``z_next = z + out_proj(core(in_proj(z) + time_embed(dt)))`` on ``z [B, N, D]``."""

    def __init__(self, cfg: LatentOperatorConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        hid = cfg.hidden_dim

        def blocks(n: int, level: int = 0) -> nn.ModuleList:
            # U-Net level ``level`` halves the row length ``level`` times (rows stay).
            grid = (None if cfg.attention == "grouped"
                    else (cfg.rows, cfg.row_length // 2**level))
            return nn.ModuleList(
                OperatorBlock(hid, cfg.group_size, cfg.num_heads, cfg.mlp_ratio, cfg.dropout,
                              grid, cfg.window)
                for _ in range(n)
            )

        self.in_proj = nn.Linear(cfg.latent_dim, hid)
        self.time_embed = nn.Sequential(
            nn.Linear(1, cfg.time_embed_dim), nn.SiLU(), nn.Linear(cfg.time_embed_dim, hid)
        )
        if cfg.architecture == "pdet_unet":
            levels = len(cfg.depths) - 1
            self.down = nn.ModuleList(blocks(d, i) for i, d in enumerate(cfg.depths[:-1]))
            self.bottleneck = blocks(cfg.depths[-1], levels)
            # Up path mirrors the down path (finest level last); skip = concat + Linear.
            self.skip_proj = nn.ModuleList(nn.Linear(2 * hid, hid) for _ in cfg.depths[:-1])
            self.up = nn.ModuleList(blocks(d, levels - 1 - i)
                                    for i, d in enumerate(reversed(cfg.depths[:-1])))
        elif cfg.architecture == "conv_stack":
            self.stack = nn.ModuleList(
                ConvBlock(hid, int(hid * cfg.mlp_ratio), cfg.kernel_size, cfg.rows,
                          cfg.spatial_dims, cfg.dropout)
                for _ in range(sum(cfg.depths))
            )
        else:
            self.stack = blocks(sum(cfg.depths))
        self.out_norm = RMSNorm(hid)
        # Zero-initialised output projection: an untrained operator is exactly persistence,
        # z_next = z, the baseline the original lost to (0.708 vs 0.369 nRMSE). The original's
        # z + LayerNorm(core(z)) instead added a unit-variance update at every step from the
        # start (LayerNorm fixes the update's scale, so "no change" was not even representable).
        # Only out_proj receives gradient on the very first step; the rest follow once it is
        # non-zero.
        self.out_proj = nn.Linear(hid, cfg.latent_dim)
        nn.init.zeros_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def _core(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, N, H] -> [B, N, H]``."""
        if self.cfg.architecture in ("pdet_stack", "conv_stack"):
            for blk in self.stack:
                x = blk(x)
            return x
        skips = []
        for level in self.down:
            for blk in level:
                x = blk(x)
            skips.append(x)
            # Anti-aliased with position-aware attention; the original's pair mean otherwise.
            down = downsample_tokens if self.cfg.attention == "grouped" else blur_downsample_tokens
            x = down(x, self.cfg.rows)
        for blk in self.bottleneck:
            x = blk(x)
        for proj, level, skip in zip(self.skip_proj, self.up, reversed(skips)):
            x = proj(torch.cat([upsample_tokens(x, self.cfg.rows), skip], dim=-1))
            for blk in level:
                x = blk(x)
        return x

    def forward(self, z: torch.Tensor, dt: float | torch.Tensor) -> torch.Tensor:
        """One step.

        Args:
            z: latent state ``[B, N, D]``.
            dt: time step, a float, a 0-d tensor or ``[B]``.

        Returns:
            ``z_next [B, N, D]``.
        """
        b = z.shape[0]
        dt_t = torch.as_tensor(dt, dtype=torch.float32, device=z.device).reshape(-1, 1).expand(b, 1)
        x = self.in_proj(z) + self.time_embed(dt_t).unsqueeze(1)  # [B, N, H]
        x = self._core(x)
        return z + self.out_proj(self.out_norm(x)).to(z.dtype)

    def rollout(self, z0: torch.Tensor, dt: float | torch.Tensor, steps: int) -> torch.Tensor:
        """Autoregressive rollout: ``z0 [B, N, D]`` -> ``[B, steps, N, D]`` (excludes ``z0``)."""
        zs = []
        z = z0
        for _ in range(steps):
            z = self(z, dt)
            zs.append(z)
        return torch.stack(zs, dim=1)


__all__ = [
    "ARCHITECTURES",
    "ChannelGroupAttention",
    "ConvBlock",
    "LatentOperator",
    "LatentOperatorConfig",
    "OperatorBlock",
    "downsample_tokens",
    "upsample_tokens",
]
