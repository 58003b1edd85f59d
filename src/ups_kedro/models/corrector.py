"""Rollout corrector (Stage 2 default, and its Stage 3 student): refine Op(z) given z.

The corrector maps the current latent ``z`` and the frozen operator's prediction ``u = Op(z)``
to a corrected next latent.  Two forms share one network ``f(z, u, k)``: periodic convolutions
over the token grid (they mix neighbouring tokens and, on a periodic domain, carry all the
positional information a shift-equivariant PDE needs), a learned embedding of the refinement
step ``k`` and a zero-initialised output layer, so an untrained corrector is the identity.

* ``kind="deterministic"``: one evaluation, ``u + f(z, u, 0)``.
* ``kind="refiner"`` (PDE-Refiner, Lippe et al. 2023, with the operator as the step-0
  prediction): for ``k = 1..K`` the current estimate is perturbed with Gaussian noise of
  standard deviation ``σ_k · rms(u)`` (noise relative to the state's own scale, ``σ_k``
  geometric from ``sigma_max`` to ``sigma_min``) and the network returns the clean estimate
  ``u ← ũ + f(z, ũ, k)``.  The noise makes the network attend to every amplitude band of the
  error in turn; ``num_samples`` > 1 averages M refinements (a posterior-mean estimate, M·K
  evaluations).

Both are trained through their own rollout (``ups_kedro.training.corrector``); shapes are
``[B, N, D]`` throughout (``N`` tokens, ``D`` latent channels).
"""

from __future__ import annotations

import math
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ups_kedro.models.corrector_config import RolloutCorrectorConfig


class _PeriodicBlock(nn.Module):
    """``x + conv(gelu(conv(norm(x) + step_bias)))`` with circular padding; ``x [B, H, *grid]``."""

    def __init__(self, hidden: int, kernel: int, dims: int) -> None:
        super().__init__()
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        self.norm = nn.GroupNorm(1, hidden)
        self.conv1 = conv(hidden, hidden, kernel, padding=kernel // 2, padding_mode="circular")
        self.conv2 = conv(hidden, hidden, kernel, padding=kernel // 2, padding_mode="circular")

    def forward(self, x: Tensor, step_bias: Tensor) -> Tensor:
        return x + self.conv2(F.gelu(self.conv1(self.norm(x) + step_bias)))


class RolloutCorrector(nn.Module):
    """``correct(z, u) -> z_next`` for ``z, u [B, N, D]``; see the module docstring."""

    def __init__(self, config: RolloutCorrectorConfig) -> None:
        super().__init__()
        config.validate()
        self.cfg = self.config = config
        h, dims = config.hidden_dim, config.spatial_dims
        conv = nn.Conv1d if dims == 1 else nn.Conv2d
        self.lift = conv(2 * config.latent_dim, h, 1)
        # Row 0: the deterministic form; rows 1..K: the refinement steps.
        self.step_embed = nn.Embedding(config.refine_steps + 1, h)
        nn.init.zeros_(self.step_embed.weight)
        self.blocks = nn.ModuleList(_PeriodicBlock(h, config.kernel_size, dims)
                                    for _ in range(config.num_blocks))
        self.head = conv(h, config.latent_dim, 1)
        nn.init.zeros_(self.head.weight)  # identity at initialisation: never worse than Op
        nn.init.zeros_(self.head.bias)

    @property
    def nfe(self) -> int:
        """Network evaluations per corrected step (the operator's own excluded)."""
        return max(self.config.refine_steps, 1) * (self.config.num_samples
                                                   if self.config.kind == "refiner" else 1)

    def _grid(self, x: Tensor) -> Tensor:
        """``[B, N, C] -> [B, C, *grid]``."""
        b, n, c = x.shape
        if self.config.spatial_dims == 1:
            return x.transpose(1, 2)
        side = math.isqrt(n)
        return x.transpose(1, 2).reshape(b, c, side, side)

    def delta(self, z: Tensor, u: Tensor, step: int) -> Tensor:
        """One network evaluation: the correction of estimate ``u`` of Op(z) at step ``step``."""
        b, n, d = u.shape
        x = self.lift(self._grid(torch.cat([z, u], dim=-1)))
        bias = self.step_embed.weight[step].view(1, -1, *([1] * self.config.spatial_dims))
        for block in self.blocks:
            x = block(x, bias)
        return self.head(x).reshape(b, d, n).transpose(1, 2)

    def steps_nfe(self, n_steps: int | None = None) -> int:
        """Network evaluations of :meth:`correct` with ``n_steps`` (None: the trained form)."""
        if self.config.kind == "deterministic":
            return n_steps or 1
        self._check_steps(n_steps)
        return self.nfe

    def _check_steps(self, n_steps: int | None) -> None:
        if self.config.kind == "refiner" and n_steps not in (None, self.config.refine_steps):
            raise ValueError(f"this refiner was trained with refine_steps="
                             f"{self.config.refine_steps} and cannot run {n_steps} steps: set "
                             f"the evaluation's corrector steps to {self.config.refine_steps}")

    def correct(self, z: Tensor, u: Tensor, generator: torch.Generator | None = None,
                noise: bool = True, n_steps: int | None = None) -> Tensor:
        """Corrected next latent ``[B, N, D]`` from the state ``z`` and ``u = Op(z)``.

        ``noise=False`` runs the refiner without its perturbations (a deterministic K-step
        iteration).  ``generator`` (CPU) makes the refiner's noise reproducible.  ``n_steps``
        (None: 1) applies a deterministic correction that many times in succession; a refiner
        takes only its trained ``refine_steps``.
        """
        if self.config.kind == "deterministic":
            for _ in range(n_steps or 1):
                u = u + self.delta(z, u, 0)
            return u
        self._check_steps(n_steps)
        m = self.config.num_samples
        zz, est = (z, u) if m == 1 else (z.repeat(m, 1, 1), u.repeat(m, 1, 1))
        for k, sigma in enumerate(self.config.sigmas(), start=1):
            if noise:
                scale = est.pow(2).mean(dim=(1, 2), keepdim=True).sqrt()
                eps = torch.randn(est.shape, generator=generator, dtype=est.dtype)
                est = est + sigma * scale * eps.to(est.device)
            est = est + self.delta(zz, est, k)
        return est if m == 1 else est.view(m, *u.shape).mean(dim=0)

    def forward(self, z: Tensor, u: Tensor) -> Tensor:
        return self.correct(z, u)


__all__ = ["RolloutCorrector", "RolloutCorrectorConfig"]
