"""Steady prior (stage 4): refine an initial-guess latent towards the encoded steady state.

``num_steps`` residual refinements with one shared drift network::

    z_0 = z0,    z_{s+1} = z_s + drift([z_s, cond, s / (num_steps - 1)]),    s = 0 .. S-1

on latents ``z [B, N, D]``, conditioned on what defines the steady state (coefficient field,
forcing) given as ``cond [B, N, Cc]`` in the *same token layout* as ``z`` (token ``n`` of
``cond`` describes the same patch of the domain as token ``n`` of ``z``).  The caller
encodes the conditioning fields (see ``ups_kedro.training.steady.conditioning_tokens``).

Two drifts:

* ``"mlp"``: the original's design, a per-token GELU MLP with ``num_layers`` Linear layers.
  Tokens never exchange information, so the drift only sees its own patch's conditioning;
  that is enough when the encoder's tokens already carry global context, not otherwise
  (elliptic problems are global: ``u`` at a point depends on ``a`` everywhere).
* ``"token_mixer"``: ``num_layers`` pre-RMSNorm transformer blocks over the tokens (SDPA
  self-attention + GELU MLP) with a learnt token-position embedding, so each refinement can
  propagate information across the domain.

The drift's last layer is zero-initialised: an untrained prior is exactly the identity
``z = z0``, i.e. the initial-guess baseline, and training can only move away from it with
gradient signal.  (The original was trained on transient pairs ``z_t -> z_{t+1}``, which
made it a second time-stepper, not a steady-state solver: defect 6.)
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from ups_kedro.models.layers import Mlp, RMSNorm
from ups_kedro.models.steady_prior_config import ARCHITECTURES, SteadyPriorConfig

def _zero_init(layer: nn.Linear) -> None:
    """Zero weight and bias: the drift's output starts at exactly 0 (prior = identity)."""
    nn.init.zeros_(layer.weight)
    nn.init.zeros_(layer.bias)


class MlpDrift(nn.Module):
    """Per-token GELU MLP ``[B, N, In] -> [B, N, D]`` with ``num_layers`` Linear layers."""

    def __init__(self, in_dim: int, hidden: int, out_dim: int, num_layers: int) -> None:
        super().__init__()
        widths = [in_dim] + [hidden] * (num_layers - 1) + [out_dim]
        self.layers = nn.ModuleList(nn.Linear(widths[i], widths[i + 1]) for i in range(num_layers))
        _zero_init(self.layers[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, N, In]`` -> ``[B, N, D]``."""
        for i, layer in enumerate(self.layers):
            x = layer(x if i == 0 else F.gelu(x))
        return x


class SelfAttention(nn.Module):
    """Multi-head self-attention over tokens with ``F.scaled_dot_product_attention``."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, N, H]`` -> ``[B, N, H]``."""
        b, n, dim = x.shape
        h = self.num_heads
        qkv = self.qkv(x).reshape(b, n, 3, h, dim // h)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, h, N, dh]
        a = F.scaled_dot_product_attention(q, k, v)
        return self.out(a.transpose(1, 2).reshape(b, n, dim))


class MixerBlock(nn.Module):
    """Pre-RMSNorm attention then pre-RMSNorm MLP (width ``2H``), both residual."""

    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.norm_attn = RMSNorm(dim)
        self.attn = SelfAttention(dim, num_heads)
        self.norm_mlp = RMSNorm(dim)
        self.mlp = Mlp(dim, 2 * dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, N, H]`` -> ``[B, N, H]``."""
        x = x + self.attn(self.norm_attn(x))
        return x + self.mlp(self.norm_mlp(x))


class TokenMixerDrift(nn.Module):
    """``[B, N, In] -> [B, N, D]``: Linear + position embedding, blocks, norm, zero-init Linear."""

    def __init__(
        self, in_dim: int, hidden: int, out_dim: int, tokens: int, layers: int, heads: int
    ) -> None:
        super().__init__()
        self.in_proj = nn.Linear(in_dim, hidden)
        # Attention is permutation-equivariant; the learnt embedding tells it where a token is
        # (the conditioning may not carry positions).  Small init: a perturbation of in_proj.
        self.pos_embed = nn.Parameter(0.02 * torch.randn(tokens, hidden))
        self.blocks = nn.ModuleList(MixerBlock(hidden, heads) for _ in range(layers))
        self.out_norm = RMSNorm(hidden)
        self.out_proj = nn.Linear(hidden, out_dim)
        _zero_init(self.out_proj)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x [B, N, In]`` -> ``[B, N, D]``."""
        h = self.in_proj(x) + self.pos_embed.to(x.dtype)
        for blk in self.blocks:
            h = blk(h)
        return self.out_proj(self.out_norm(h))


class SteadyPrior(nn.Module):
    """``z = refine^S(z0 | cond)``; ``z0 [B, N, D]``, ``cond [B, N, Cc]`` (see the module doc)."""

    def __init__(self, cfg: SteadyPriorConfig) -> None:
        super().__init__()
        cfg.validate()
        self.cfg = cfg
        in_dim = cfg.latent_dim + cfg.cond_dim + 1  # [z, cond, step fraction]
        if cfg.architecture == "mlp":
            self.drift: nn.Module = MlpDrift(
                in_dim, cfg.hidden_dim, cfg.latent_dim, cfg.num_layers
            )
        else:
            self.drift = TokenMixerDrift(
                in_dim,
                cfg.hidden_dim,
                cfg.latent_dim,
                cfg.latent_tokens,
                cfg.num_layers,
                cfg.num_heads,
            )

    def _check_inputs(self, z0: torch.Tensor, cond: torch.Tensor) -> None:
        cfg = self.cfg
        want_z = (cfg.latent_tokens, cfg.latent_dim)
        if z0.ndim != 3 or tuple(z0.shape[1:]) != want_z:
            raise ValueError(
                f"SteadyPrior expects z0 of shape [B, {want_z[0]}, {want_z[1]}], "
                f"got {tuple(z0.shape)}"
            )
        want_c = (z0.shape[0], cfg.latent_tokens, cfg.cond_dim)
        if tuple(cond.shape) != want_c:
            raise ValueError(
                f"SteadyPrior expects cond of shape [B, N, cond_dim] = {list(want_c)}, "
                f"got {tuple(cond.shape)}"
            )

    def _step_fraction(self, s: int) -> float:
        """``s / (S - 1)`` in ``[0, 1]``; 0 when there is a single step."""
        return s / (self.cfg.num_steps - 1) if self.cfg.num_steps > 1 else 0.0

    def _states(self, z0: torch.Tensor, cond: torch.Tensor) -> Iterator[torch.Tensor]:
        """Yield ``z_1 .. z_S`` (each ``[B, N, D]``)."""
        z = z0
        cond = cond.to(z0.dtype)
        for s in range(self.cfg.num_steps):
            # The step fraction as an input channel: one shared drift, told where it is in the
            # refinement (early steps make large corrections, late ones small).
            frac = z0.new_full((*z0.shape[:2], 1), self._step_fraction(s))  # [B, N, 1]
            z = z + self.drift(torch.cat([z, cond, frac], dim=-1)).to(z.dtype)
            yield z

    def forward(
        self, z0: torch.Tensor, cond: torch.Tensor, return_trajectory: bool = False
    ) -> torch.Tensor:
        """Refine ``z0``.

        Args:
            z0: initial guess ``[B, N, D]``.
            cond: conditioning tokens ``[B, N, Cc]``.
            return_trajectory: also return every intermediate state (through ``forward``, so
                that ``torch.compile`` / EMA wrappers, which only proxy ``forward``, see it).

        Returns:
            ``z [B, N, D]`` after ``num_steps`` refinements, or with ``return_trajectory``
            ``[B, num_steps + 1, N, D]`` with ``[:, 0] == z0``.
        """
        self._check_inputs(z0, cond)
        if return_trajectory:
            return torch.stack([z0, *self._states(z0, cond)], dim=1)
        z = z0
        for z in self._states(z0, cond):
            pass
        return z

    def trajectory(self, z0: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """All states ``[B, num_steps + 1, N, D]``, ``[:, 0] == z0`` (error-vs-step reports)."""
        return self(z0, cond, return_trajectory=True)


__all__ = [
    "ARCHITECTURES",
    "MixerBlock",
    "MlpDrift",
    "SelfAttention",
    "SteadyPrior",
    "SteadyPriorConfig",
    "TokenMixerDrift",
]
