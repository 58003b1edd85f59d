"""Conditional diffusion model of the operator's residual, its samplers and the consistency student.

Stage 2 (``diff_residual``) learns the distribution of the one-step residual
``r = (z_next − ẑ) / residual_scale`` given the operator prediction ``ẑ = Op(z)``; stage 3
(``consistency_distill``) trains the same class with ``parameterisation="consistency"`` as a
1–few step student.  Shapes: ``B`` batch, ``N`` latent tokens, ``D`` latent width, ``C`` width of
the conditioning (``cond_dim``, default ``D``).

The preconditioned denoiser (see :mod:`ups_kedro.models.schedules`)::

    D(r_σ, ẑ, σ) = c_skip(σ)·r_σ + c_out(σ)·F(c_in(σ)·r_σ, ẑ, c_noise(σ))

``F`` sees, per token, ``[c_in·r_σ (D), ẑ (C), noise embedding (E)]``:

* ``"mlp"``: the original's per-token ``Linear–SiLU–Linear–SiLU–Linear`` (``num_layers``
  linear layers), no mixing between tokens;
* ``"token_mixer"``: an input projection plus a learned token position embedding, then
  ``num_layers`` pre-norm transformer blocks (self-attention over tokens with
  ``F.scaled_dot_product_attention``, then an MLP).

The last linear layer is zero-initialised, so an untrained model denoises as ``c_skip·r_σ``
(the optimal denoiser for zero-mean data of std ``sigma_data``), and a consistency student
starts as an exact identity at σ_min.

Everything around the network (coefficients, the skip connection, the sampler's ODE steps) is
float32 even under bf16 autocast: residuals are small, and bf16's 8-bit mantissa would swamp
them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ups_kedro.models.corrector_config import (
    ARCHITECTURES,
    SOLVERS,
    Architecture,
    DiffusionResidualConfig,
    Solver,
)
from ups_kedro.models.schedules import NoiseSchedule



class _TokenMixerBlock(nn.Module):
    """Pre-norm transformer block over tokens: ``x + Attn(LN x)``, then ``x + MLP(LN x)``."""

    def __init__(self, dim: int, heads: int, mlp_hidden: int) -> None:
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_hidden), nn.SiLU(), nn.Linear(mlp_hidden, dim))

    def forward(self, x: Tensor) -> Tensor:
        """``x``: ``[B, N, H]`` → ``[B, N, H]``."""
        b, n, h = x.shape
        qkv = self.qkv(self.norm1(x)).view(b, n, 3, self.heads, h // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # each [B, heads, N, H/heads]
        att = F.scaled_dot_product_attention(q, k, v)  # [B, heads, N, H/heads]
        x = x + self.proj(att.transpose(1, 2).reshape(b, n, h))
        return x + self.mlp(self.norm2(x))


class DiffusionResidual(nn.Module):
    """Preconditioned conditional denoiser of the normalised residual (see module docstring)."""

    def __init__(self, config: DiffusionResidualConfig) -> None:
        super().__init__()
        config.validate()
        self.config = config
        self.cfg = config  # the name every registry model uses (model_config, checkpoints)
        self.schedule = NoiseSchedule.of(config)
        d, c, e, h = (
            config.latent_dim, config.conditioning_dim, config.noise_embed_dim, config.hidden_dim
        )
        # Fixed log-spaced frequencies for c_noise = ¼ln σ ∈ [≈ −2.3, 0.75]: the slowest
        # resolves the whole range, the fastest about 1/25 of a unit (≈ 10 % in σ).  Not
        # persistent: it is a function of the config, not a weight.
        freqs = math.pi * torch.logspace(-2.0, 3.0, e // 2, base=2.0)
        self.register_buffer("noise_freqs", freqs, persistent=False)
        in_dim = d + c + e
        self.pos_embed: nn.Parameter | None = None
        self.blocks: nn.ModuleList | None = None
        if config.architecture == "mlp":
            # num_layers linear layers: (num_layers − 1) × (Linear–SiLU), then the output.
            layers: list[nn.Module] = []
            for i in range(config.num_layers - 1):
                layers += [nn.Linear(in_dim if i == 0 else h, h), nn.SiLU()]
            self.net = nn.Sequential(*layers)
            self.out = nn.Linear(h, d)
        else:
            self.in_proj = nn.Linear(in_dim, h)
            # Attention is permutation-equivariant; the position embedding lets it use token
            # order (the tokens are spatial cells).
            self.pos_embed = nn.Parameter(0.02 * torch.randn(1, config.latent_tokens, h))
            mlp_hidden = max(1, int(round(config.mlp_ratio * h)))
            self.blocks = nn.ModuleList(
                _TokenMixerBlock(h, config.num_heads, mlp_hidden) for _ in range(config.num_layers)
            )
            self.norm_out = nn.LayerNorm(h)
            self.out = nn.Linear(h, d)
        # Zero output: an untrained model is D = c_skip·r_σ, and F's first updates are not
        # drowned by a random initial output.
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    # ------------------------------------------------------------------------------------

    def noise_embedding(self, c_noise: Tensor) -> Tensor:
        """``c_noise`` ``[B]`` → ``[B, E]`` sinusoidal features."""
        ang = c_noise.float().unsqueeze(-1) * self.noise_freqs  # [B, E/2]
        return torch.cat([torch.sin(ang), torch.cos(ang)], dim=-1)

    def raw(self, x_in: Tensor, cond: Tensor, c_noise: Tensor) -> Tensor:
        """The bare network ``F``.

        Args:
            x_in: ``[B, N, D]`` scaled noisy residual ``c_in·r_σ``.
            cond: ``[B, N, C]`` conditioning (operator prediction ``ẑ``).
            c_noise: ``[B]`` noise-level input.

        Returns:
            ``[B, N, D]`` in the autocast dtype (float32 without autocast).
        """
        b, n, _ = x_in.shape
        emb = self.noise_embedding(c_noise).unsqueeze(1).expand(b, n, -1)  # [B, N, E]
        h = torch.cat([x_in, cond.to(x_in.dtype), emb.to(x_in.dtype)], dim=-1)  # [B, N, D+C+E]
        if self.blocks is None:
            return self.out(self.net(h))
        if n != self.config.latent_tokens:
            raise ValueError(
                "DiffusionResidual(token_mixer): expected "
                f"{self.config.latent_tokens} tokens, got {n}"
            )
        h = self.in_proj(h) + self.pos_embed  # [B, N, H]
        for block in self.blocks:
            h = block(h)
        return self.out(self.norm_out(h))

    def forward(
        self, r_noisy: Tensor, cond: Tensor, sigma: Tensor | float
    ) -> tuple[Tensor, Tensor]:
        """Denoise and also return the raw network output (the stable training target space).

        Args:
            r_noisy: ``[B, N, D]`` noisy normalised residual ``r_σ``.
            cond: ``[B, N, C]`` operator prediction ``ẑ``.
            sigma: ``[B]`` (or a scalar / ``[1]``, broadcast) noise levels, > 0.

        Returns:
            ``(denoised [B, N, D] float32, raw F [B, N, D] float32)``.
        """
        self._check_shapes(r_noisy, cond)
        x = r_noisy.float()
        sig = torch.as_tensor(sigma, dtype=torch.float32, device=x.device).reshape(-1)
        sig = sig.expand(x.shape[0]) if sig.numel() == 1 else sig
        if sig.shape != (x.shape[0],):
            raise ValueError(f"sigma must be a scalar or [B={x.shape[0]}], got {tuple(sig.shape)}")
        pre = self.schedule.preconditioning(sig, self.config.parameterisation)
        raw = self.raw(pre.c_in[:, None, None] * x, cond, pre.c_noise).float()
        denoised = pre.c_skip[:, None, None] * x + pre.c_out[:, None, None] * raw
        return denoised, raw

    def denoise(self, r_noisy: Tensor, cond: Tensor, sigma: Tensor | float) -> Tensor:
        """``D(r_σ, ẑ, σ)`` → ``[B, N, D]`` float32 (see :meth:`forward`)."""
        return self(r_noisy, cond, sigma)[0]

    def _check_shapes(self, r_noisy: Tensor, cond: Tensor) -> None:
        cfg = self.config
        if r_noisy.ndim != 3 or r_noisy.shape[-1] != cfg.latent_dim:
            raise ValueError(
                f"DiffusionResidual: r_noisy must be [B, N, {cfg.latent_dim}], "
                f"got {tuple(r_noisy.shape)}"
            )
        want = (*r_noisy.shape[:2], cfg.conditioning_dim)
        if tuple(cond.shape) != want:
            raise ValueError(f"DiffusionResidual: cond must be {want}, got {tuple(cond.shape)}")


# ------------------------------------------------------------------------------------------
# samplers


class Denoiser(Protocol):
    """Anything with the :meth:`DiffusionResidual.denoise` signature (e.g. an analytic oracle)."""

    def denoise(self, r_noisy: Tensor, cond: Tensor, sigma: Tensor | float) -> Tensor: ...


def _schedule_of(model: object, schedule: NoiseSchedule | None) -> NoiseSchedule:
    if schedule is not None:
        return schedule
    found = getattr(model, "schedule", None)
    if not isinstance(found, NoiseSchedule):
        raise ValueError("no schedule given and the model has no NoiseSchedule `schedule`")
    return found


def _initial_noise(cond: Tensor, latent_dim: int | None, noise: Tensor | None,
                   generator: torch.Generator | None) -> Tensor:
    if noise is not None:
        return noise.float()
    shape = (*cond.shape[:-1], latent_dim if latent_dim is not None else cond.shape[-1])
    return torch.randn(shape, generator=generator, device=cond.device, dtype=torch.float32)


def _latent_dim_of(model: object) -> int | None:
    cfg = getattr(model, "config", None)
    return getattr(cfg, "latent_dim", None)


@torch.no_grad()
def sample_residual(
    model: Denoiser,
    cond: Tensor,
    n_steps: int,
    schedule: NoiseSchedule | None = None,
    generator: torch.Generator | None = None,
    solver: Solver = "heun",
    noise: Tensor | None = None,
) -> tuple[Tensor, int]:
    """Deterministic probability-flow ODE sampler (EDM Algorithm 1, no churn).

    Starts at ``r = σ_max·ε`` and integrates ``dr/dσ = (r − D(r, σ))/σ`` over
    ``schedule.discretise(n_steps)`` (σ_max … σ_min, 0).  ``heun`` adds the trapezoidal
    correction on every step except the last (to σ = 0), which is the plain denoise
    ``r ← D(r, σ_min)``.

    Args:
        model: the denoiser (stage 2 :class:`DiffusionResidual` or any :class:`Denoiser`).
        cond: ``[B, N, C]`` operator prediction ``ẑ``.
        n_steps: ≥ 1 sampler steps.
        schedule: grid source (``None``: ``model.schedule``).
        generator: RNG for ``ε`` (``None``: the global torch RNG).
        solver: ``heun`` (2·n_steps − 1 evaluations) or ``euler`` (n_steps).
        noise: optional ``ε`` ``[B, N, D]`` (used instead of drawing; to compare samplers on
            the same noise).

    Returns:
        ``(r̂ [B, N, D] float32 in normalised units, NFE)``.
    """
    if solver not in SOLVERS:
        raise ValueError(f"sample_residual: solver must be one of {SOLVERS}, got {solver!r}")
    sched = _schedule_of(model, schedule)
    sigmas = sched.discretise(n_steps).tolist()  # python floats: no device sync per step
    eps = _initial_noise(cond, _latent_dim_of(model), noise, generator)
    x = sigmas[0] * eps
    nfe = 0
    for s, s_next in zip(sigmas[:-1], sigmas[1:]):
        den = model.denoise(x, cond, s).float()
        nfe += 1
        if s_next == 0.0:
            # Euler to σ = 0: x + (0 − s)(x − D)/s = D, written without the cancellation.
            x = den
            continue
        d = (x - den) / s
        x_next = x + (s_next - s) * d
        if solver == "heun":
            d_next = (x_next - model.denoise(x_next, cond, s_next).float()) / s_next
            nfe += 1
            x_next = x + (s_next - s) * 0.5 * (d + d_next)
        x = x_next
    return x, nfe


@torch.no_grad()
def consistency_sample(
    student: Denoiser,
    cond: Tensor,
    n_steps: int = 1,
    schedule: NoiseSchedule | None = None,
    generator: torch.Generator | None = None,
    sigmas: Sequence[float] | None = None,
    noise: Tensor | None = None,
) -> tuple[Tensor, int]:
    """Multistep consistency sampling (Song et al. 2023, Algorithm 1).

    ``r̂ = f(σ_max·ε, σ_max)``; then for each intermediate level ``σ_i`` (decreasing):
    ``x = r̂ + √(σ_i² − σ_min²)·ε_i``, ``r̂ = f(x, σ_i)``.

    Args:
        student: a consistency-parameterised :class:`DiffusionResidual` (``f`` = ``denoise``).
        cond: ``[B, N, C]`` operator prediction ``ẑ``.
        n_steps: ≥ 1 network evaluations.
        schedule: ``None``: ``student.schedule``.
        generator: RNG for all noise (``None``: the global torch RNG).
        sigmas: the ``n_steps − 1`` intermediate levels; default: the interior points of the
            Karras grid ``σ(linspace(1, 0, n_steps + 1))`` (strictly between σ_min and σ_max;
            σ_min itself would be a no-op by the boundary condition).
        noise: optional initial ``ε`` ``[B, N, D]``.

    Returns:
        ``(r̂ [B, N, D] float32 in normalised units, NFE = n_steps)``.
    """
    if n_steps < 1:
        raise ValueError(f"consistency_sample: n_steps must be >= 1, got {n_steps}")
    sched = _schedule_of(student, schedule)
    if sigmas is None:
        grid = sched.sigma(torch.linspace(1.0, 0.0, n_steps + 1, dtype=torch.float64))
        levels = grid[1:-1].tolist()
    else:
        levels = [float(s) for s in sigmas]
        if len(levels) != n_steps - 1:
            raise ValueError(
                f"consistency_sample: need n_steps-1={n_steps - 1} intermediate sigmas, "
                f"got {len(levels)}"
            )
    eps = _initial_noise(cond, _latent_dim_of(student), noise, generator)
    r = student.denoise(sched.sigma_max * eps, cond, sched.sigma_max).float()
    nfe = 1
    for s in levels:
        if not sched.sigma_min <= s <= sched.sigma_max:
            raise ValueError(f"consistency_sample: sigma {s} outside [sigma_min, sigma_max]")
        z = torch.randn(r.shape, generator=generator, device=r.device, dtype=torch.float32)
        x = r + math.sqrt(max(s * s - sched.sigma_min**2, 0.0)) * z
        r = student.denoise(x, cond, s).float()
        nfe += 1
    return r, nfe


def refine_latent(
    model: DiffusionResidual,
    z_pred: Tensor,
    n_steps: int,
    generator: torch.Generator | None = None,
    solver: Solver = "heun",
) -> tuple[Tensor, int]:
    """Correct an operator prediction: ``ẑ + residual_scale · r̂`` → ``([B, N, D], NFE)``.

    Dispatches on ``model.config.parameterisation``: ``edm`` → :func:`sample_residual`
    (``solver``), ``consistency`` → :func:`consistency_sample`.  ``z_pred`` is also the
    conditioning, so this is the whole inference-time corrector for one step.
    """
    if model.config.parameterisation == "consistency":
        r, nfe = consistency_sample(model, z_pred, n_steps, generator=generator)
    else:
        r, nfe = sample_residual(model, z_pred, n_steps, generator=generator, solver=solver)
    return z_pred + model.config.residual_scale * r.to(z_pred.dtype), nfe


def make_consistency_student(
    teacher: DiffusionResidual, init_from_teacher: bool = True
) -> DiffusionResidual:
    """A stage 3 student: the teacher's config with ``parameterisation="consistency"``.

    ``init_from_teacher`` copies the teacher's weights (as in Song et al.'s CD): the raw
    network already knows the residual; only the skip/output mixing differs near σ_min.  The
    result is a new module; the teacher is never modified.
    """
    from dataclasses import replace

    student = DiffusionResidual(replace(teacher.config, parameterisation="consistency"))
    if init_from_teacher:
        student.load_state_dict(teacher.state_dict())
    return student.to(next(teacher.parameters()).device)


# The config types live in the torch-free corrector_config; re-exported for existing imports.
__all__ = ["ARCHITECTURES", "SOLVERS", "Architecture", "Denoiser", "DiffusionResidual",
           "DiffusionResidualConfig", "Solver", "consistency_sample", "make_consistency_student",
           "refine_latent", "sample_residual"]
