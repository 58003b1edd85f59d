"""Position-aware attention and anti-aliased token resampling for the PDE-Transformer operator.

Tokens ``[B, N, H]`` lie on a periodic grid of ``rows x (N / rows)`` (row-major; ``rows == 1``
is a 1D row).  Everything here commutes with periodic shifts of that grid:

* :class:`RelPosAttention` — multi-head self-attention whose logits get a learnt bias per head
  that depends only on the periodic *offset* between two tokens (a periodic relative-position
  bias).  Without it attention sees the tokens as a set and cannot tell a neighbour from a token
  half a domain away; with it, rolling the input tokens rolls the output (exactly, for any
  shift).  An optional ``window`` masks tokens further than ``window`` (periodic distance, per
  axis) — local attention, the inductive bias of a PDE whose information travels a few tokens
  per step.
* :func:`blur_downsample_tokens` — a periodic binomial low-pass ``[1, 3, 3, 1] / 8`` before
  keeping every second token (anti-aliased, "BlurPool"): an exact shift-equivariance for even
  shifts and a smooth response to odd ones, where pair averaging aliases.  It is the adjoint of
  the linear interpolation of :func:`ups_kedro.models.operator.upsample_tokens`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ups_kedro.models.layers import rms_norm


def periodic_offsets(rows: int, row_length: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Offsets between all token pairs of a periodic ``rows x row_length`` grid.

    Returns:
        ``(dr, dc)``: two ``[N, N]`` long tensors, ``(row_j - row_i) mod rows`` and
        ``(col_j - col_i) mod row_length`` for query ``i`` and key ``j``
        (``N = rows * row_length``).
    """
    r = torch.arange(rows).repeat_interleave(row_length)
    c = torch.arange(row_length).repeat(rows)
    return (r[None, :] - r[:, None]) % rows, (c[None, :] - c[:, None]) % row_length


class RelPosAttention(nn.Module):
    """Multi-head self-attention with a periodic relative-position bias (and optional window).

    Args:
        dim: token width ``H``; divisible by ``num_heads`` (head width ``H / num_heads``).
        num_heads: attention heads.
        rows, row_length: the token grid at this block's resolution.
        window: if set, keys further than this periodic distance (in tokens, along each axis)
            from the query are masked out.
        dropout: attention dropout (training only).
    """

    def __init__(self, dim: int, num_heads: int, rows: int, row_length: int,
                 window: int | None = None, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} must be divisible by num_heads={num_heads}")
        self.num_heads, self.dropout = num_heads, dropout
        self.rows, self.row_length = rows, row_length
        head = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.q_gain = nn.Parameter(torch.ones(head))
        self.k_gain = nn.Parameter(torch.ones(head))
        # One learnt logit offset per head and periodic grid offset; zero: plain attention at init.
        self.rel_bias = nn.Parameter(torch.zeros(num_heads, rows * row_length))
        dr, dc = periodic_offsets(rows, row_length)
        self.register_buffer("rel_index", dr * row_length + dc, persistent=False)
        allowed = torch.ones(dr.shape, dtype=torch.bool)
        if window is not None:
            dist_r = torch.minimum(dr, rows - dr)
            dist_c = torch.minimum(dc, row_length - dc)
            allowed = (dist_r <= window) & (dist_c <= window)
        # A bool buffer, not a float -inf mask: the EMA averages float buffers, and
        # lerp(-inf, -inf) is NaN.
        self.register_buffer("window_allowed", allowed, persistent=False)

    def bias(self) -> torch.Tensor:
        """``[heads, N, N]`` additive attention logits (relative-position bias + window mask)."""
        return self.rel_bias[:, self.rel_index].masked_fill(~self.window_allowed, float("-inf"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, N, H]`` -> ``[B, N, H]``; ``N`` must equal ``rows * row_length``."""
        b, n, dim = x.shape
        if n != self.rows * self.row_length:
            raise ValueError(f"RelPosAttention built for {self.rows}x{self.row_length} tokens, "
                             f"got {n}")
        nh = self.num_heads
        q, k, v = self.qkv(x).reshape(b, n, 3, nh, dim // nh).permute(2, 0, 3, 1, 4)
        q, k = rms_norm(q, self.q_gain), rms_norm(k, self.k_gain)  # QK-norm: bounded logits
        a = F.scaled_dot_product_attention(
            q, k, v, attn_mask=self.bias().to(q.dtype)[None],
            dropout_p=self.dropout if self.training else 0.0)
        return self.out(a.transpose(1, 2).reshape(b, n, dim))


def blur_downsample_tokens(x: torch.Tensor, rows: int = 1) -> torch.Tensor:
    """Anti-aliased periodic halving within each row: ``[B, N, H] -> [B, N/2, H]``.

    Coarse token ``m`` (centred between fine tokens ``2m`` and ``2m+1``) is
    ``(x[2m-1] + 3 x[2m] + 3 x[2m+1] + x[2m+2]) / 8``, indices wrapping within the row.
    """
    b, n, h = x.shape
    g = x.reshape(b, rows, n // rows, h)
    even, odd = g[:, :, 0::2], g[:, :, 1::2]
    out = (torch.roll(odd, 1, dims=2) + 3 * even + 3 * odd + torch.roll(even, -1, dims=2)) / 8
    return out.reshape(b, n // 2, h)


__all__ = ["RelPosAttention", "blur_downsample_tokens", "periodic_offsets"]
