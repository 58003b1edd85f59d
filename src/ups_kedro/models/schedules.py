"""Noise schedule and preconditioning for the residual diffusion and consistency models.

Conventions (EDM, Karras et al. 2022, "variance exploding"): a clean residual ``r`` is
corrupted as ``r_σ = r + σ·ε`` with ``ε ~ N(0, I)``.  The diffusion *time* ``τ ∈ [0, 1]`` is a
monotone reparameterisation of the noise level on the Karras ρ-grid::

    σ(τ) = (σ_min^(1/ρ) + τ·(σ_max^(1/ρ) − σ_min^(1/ρ)))^ρ,   σ(0) = σ_min,  σ(1) = σ_max.

Uniform ``τ`` therefore puts most samples at small σ (ρ = 7), which is where the residual's fine
structure lives and where the sampler spends its steps.

Units: every σ here is in the units of the *normalised* residual ``r / residual_scale`` (the
caller divides by a training-set RMS), so ``sigma_data = 1`` is the natural choice.  Defaults
are far below image-diffusion practice on purpose: PDE-Refiner's smallest noise std was
≈ 6e-4 (variance 4e-7) of a unit-scale field; ``sigma_min = 1e-4`` keeps detail down to
~1e-4 of the residual's RMS.  ``sigma_max = 20`` dominates the unit-RMS data (the prior
N(0, σ_max²) differs from the noised data by a relative variance of 1/σ_max² = 0.25 %).

Preconditioning (the network ``F`` never sees raw scales)::

    D(r_σ, σ) = c_skip(σ)·r_σ + c_out(σ)·F(c_in(σ)·r_σ, c_noise(σ))

* ``"edm"``:          c_skip = σ_d²/(σ²+σ_d²),           c_out = σ·σ_d/√(σ²+σ_d²)
* ``"consistency"``:  c_skip = σ_d²/((σ−σ_min)²+σ_d²),   c_out = (σ−σ_min)·σ_d/√(σ²+σ_d²)
  (Song et al. 2023), so c_skip(σ_min) = 1 and c_out(σ_min) = 0: f(x, σ_min) = x exactly;
* both: c_in = 1/√(σ²+σ_d²), c_noise = ¼·ln σ.

EDM's loss weight ``λ(σ) = (σ²+σ_d²)/(σ·σ_d)²`` equals ``1/c_out²`` for ``"edm"``, so the
weighted denoising loss is a plain MSE on ``F`` (see :meth:`NoiseSchedule.loss_weight`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from ups_kedro.config import Checked, bounded, require
from ups_kedro.models.corrector_config import (
    PARAMETERISATIONS,
    TAU_MODES,
    Parameterisation,
    TauMode,
    TauSampling,
)



class Preconditioning(NamedTuple):
    """Coefficients for a batch of noise levels, each ``[B]`` (float32)."""

    c_skip: Tensor
    c_out: Tensor
    c_in: Tensor
    c_noise: Tensor


def _sample_gamma(shape: tuple[int, ...], concentration: float, generator: torch.Generator | None,
                  device: torch.device | str | None) -> Tensor:
    """Gamma(concentration, 1) samples drawn only from ``generator`` (float64).

    ``torch.distributions.Gamma`` cannot take a generator, and a seeded, isolated stream is what
    makes validation and resume reproducible; so Marsaglia–Tsang (2000) is done by hand:
    ``d = a − 1/3``, ``c = 1/√(9d)``, propose ``v = (1 + c·x)³`` with ``x ~ N(0, 1)`` and accept
    when ``ln u < x²/2 + d − d·v + d·ln v``.  For ``a < 1`` use ``Gamma(a+1)·U^(1/a)``.
    """
    boost = concentration < 1.0
    a = concentration + 1.0 if boost else concentration
    d = a - 1.0 / 3.0
    c = 1.0 / math.sqrt(9.0 * d)
    n = math.prod(shape)
    out = torch.empty(n, dtype=torch.float64, device=device)
    todo = torch.arange(n, device=device)
    while todo.numel() > 0:  # acceptance > 95 %: a few rounds at most
        m = todo.numel()
        x = torch.randn(m, generator=generator, dtype=torch.float64, device=device)
        u = torch.rand(m, generator=generator, dtype=torch.float64, device=device)
        v = (1.0 + c * x) ** 3
        ok = v > 0
        log_v = torch.log(torch.where(ok, v, torch.ones_like(v)))
        ok &= torch.log(u) < 0.5 * x * x + d - d * v + d * log_v
        out[todo[ok]] = (d * v)[ok]
        todo = todo[~ok]
    if boost:
        u = torch.rand(n, generator=generator, dtype=torch.float64, device=device)
        out = out * u.pow(1.0 / concentration)
    return out.reshape(shape)


@dataclass(frozen=True)
class NoiseSchedule(Checked):
    """Karras/EDM noise levels, τ sampling and the two preconditionings (see module docstring).

    Attributes:
        sigma_min: smallest noise std (normalised residual units), > 0.
        sigma_max: largest noise std, > sigma_min.
        rho: Karras grid exponent (7: dense steps at small σ).
        sigma_data: std of the (normalised) clean residual the preconditioning assumes.
    """

    WHERE: ClassVar[str] = "schedule"

    @classmethod
    def of(cls, config) -> NoiseSchedule:
        """The schedule a model config's ``sigma_min``/``sigma_max``/``rho``/``sigma_data`` describe."""
        return cls(config.sigma_min, config.sigma_max, config.rho, config.sigma_data)

    sigma_min: float = bounded(1e-4, gt=0)
    sigma_max: float = bounded(20.0, gt=0)
    rho: float = bounded(7.0, gt=0)
    sigma_data: float = bounded(1.0, gt=0)

    def __post_init__(self) -> None:
        self.validate()

    def check(self, where: str) -> None:
        require(self.sigma_max > self.sigma_min,
                f"{where}.sigma_max must be > sigma_min={self.sigma_min}, got {self.sigma_max}")

    # ---------------------------------------------------------------- σ(τ) and grids

    def sigma(self, tau: Tensor) -> Tensor:
        """Noise level of diffusion time ``tau`` ([...], in [0, 1]) → ``[...]``, increasing.

        Computed in float64 (``x^7`` of values near σ_min^(1/7) loses digits in float32) and
        returned in ``tau``'s floating dtype (float32 for integer input).
        """
        dtype = tau.dtype if tau.is_floating_point() else torch.float32
        lo = self.sigma_min ** (1.0 / self.rho)
        hi = self.sigma_max ** (1.0 / self.rho)
        t = tau.to(torch.float64).clamp(0.0, 1.0)
        s = (lo + t * (hi - lo)) ** self.rho
        # Pin the endpoints: (σ^(1/ρ))^ρ can miss σ by an ulp, and the consistency boundary
        # condition needs σ(0) to be *exactly* σ_min.
        s = torch.where(t == 0.0, torch.full_like(s, self.sigma_min), s)
        s = torch.where(t == 1.0, torch.full_like(s, self.sigma_max), s)
        return s.to(dtype)

    def tau(self, sigma: Tensor) -> Tensor:
        """Inverse of :meth:`sigma` (σ clamped to [σ_min, σ_max]) → ``[...]`` in [0, 1]."""
        dtype = sigma.dtype if sigma.is_floating_point() else torch.float32
        lo = self.sigma_min ** (1.0 / self.rho)
        hi = self.sigma_max ** (1.0 / self.rho)
        s = sigma.to(torch.float64).clamp(self.sigma_min, self.sigma_max)
        return ((s ** (1.0 / self.rho) - lo) / (hi - lo)).to(dtype)

    def levels(self, n: int, device: torch.device | str | None = None) -> Tensor:
        """``n`` ≥ 2 increasing Karras levels σ_min = s_0 < … < s_{n−1} = σ_max → ``[n]``.

        The consistency-distillation discretisation (adjacent pairs ``s_i < s_{i+1}``).
        """
        if n < 2:
            raise ValueError(f"levels: n must be >= 2, got {n}")
        return self.sigma(torch.linspace(0.0, 1.0, n, dtype=torch.float64, device=device)).float()

    def discretise(self, n_steps: int, device: torch.device | str | None = None) -> Tensor:
        """Sampler grid ``[n_steps + 1]``: strictly decreasing, from σ_max, ending at **0**.

        As in EDM: ``n_steps`` Karras levels from σ_max down to σ_min, then a final 0.  Ending at
        0 (not σ_min) means the last step is a pure denoise ``D(x, σ_min)`` (an Euler step to
        σ = 0), so no σ_min noise is left in the returned residual.  ``n_steps = 1`` gives
        ``[σ_max, 0]`` (one denoise from pure noise).
        """
        if n_steps < 1:
            raise ValueError(f"discretise: n_steps must be >= 1, got {n_steps}")
        if n_steps == 1:
            body = torch.tensor([self.sigma_max], dtype=torch.float64, device=device)
        else:
            body = self.sigma(torch.linspace(1.0, 0.0, n_steps, dtype=torch.float64, device=device))
        return torch.cat([body, body.new_zeros(1)]).float()

    # ---------------------------------------------------------------- τ sampling

    def sample_tau(
        self,
        batch: int,
        mode: TauMode = "uniform",
        alpha: float = 1.2,
        beta: float = 1.2,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """``batch`` diffusion times in [0, 1] → ``[batch]`` float32.

        ``uniform``: U(0, 1); ``beta``: Beta(alpha, beta) (via two Gamma draws).  Only
        ``generator`` (or the global RNG when ``None``) is read.
        """
        if mode == "uniform":
            return torch.rand(batch, generator=generator, device=device)
        if mode == "beta":
            if alpha <= 0 or beta <= 0:
                raise ValueError(f"sample_tau: alpha and beta must be > 0, got {alpha}, {beta}")
            x = _sample_gamma((batch,), alpha, generator, device)
            y = _sample_gamma((batch,), beta, generator, device)
            return (x / (x + y)).float()
        raise ValueError(f"sample_tau: mode must be one of {TAU_MODES}, got {mode!r}")

    def sample_sigma(
        self,
        batch: int,
        sampling: TauSampling | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """``σ(τ)`` for ``τ`` drawn per ``sampling`` → ``[batch]`` float32."""
        s = sampling or TauSampling()
        tau = self.sample_tau(batch, s.mode, s.alpha, s.beta, generator=generator, device=device)
        return self.sigma(tau)

    # ---------------------------------------------------------------- preconditioning

    def c_skip(self, sigma: Tensor, parameterisation: Parameterisation = "edm") -> Tensor:
        """Skip weight ``[B]`` (1 at σ_min for ``consistency``)."""
        sd2 = self.sigma_data**2
        if parameterisation == "edm":
            return sd2 / (sigma**2 + sd2)
        if parameterisation == "consistency":
            # sigma − sigma_min is exactly 0 at sigma == sigma_min (same float32 value), so
            # c_skip is exactly 1 there: the boundary condition holds to the bit.
            return sd2 / ((sigma - self.sigma_min) ** 2 + sd2)
        raise ValueError(
            f"parameterisation must be one of {PARAMETERISATIONS}, got {parameterisation!r}"
        )

    def c_out(self, sigma: Tensor, parameterisation: Parameterisation = "edm") -> Tensor:
        """Network output weight ``[B]`` (exactly 0 at σ_min for ``consistency``)."""
        sd = self.sigma_data
        if parameterisation == "edm":
            return sigma * sd / torch.sqrt(sigma**2 + sd**2)
        if parameterisation == "consistency":
            return (sigma - self.sigma_min) * sd / torch.sqrt(sigma**2 + sd**2)
        raise ValueError(
            f"parameterisation must be one of {PARAMETERISATIONS}, got {parameterisation!r}"
        )

    def c_in(self, sigma: Tensor) -> Tensor:
        """Input scale ``[B]``: ``c_in·r_σ`` has unit variance when ``r`` has std σ_data."""
        return 1.0 / torch.sqrt(sigma**2 + self.sigma_data**2)

    def c_noise(self, sigma: Tensor) -> Tensor:
        """Noise-level input of the network ``[B]``: ¼·ln σ (O(1) over σ ∈ [1e-4, 20])."""
        return 0.25 * torch.log(sigma)

    def preconditioning(
        self, sigma: Tensor, parameterisation: Parameterisation = "edm"
    ) -> Preconditioning:
        """All four coefficients for ``sigma`` ``[B]`` (computed in float32)."""
        s = sigma.float()
        return Preconditioning(
            self.c_skip(s, parameterisation),
            self.c_out(s, parameterisation),
            self.c_in(s),
            self.c_noise(s),
        )

    def loss_weight(self, sigma: Tensor) -> Tensor:
        """EDM's ``λ(σ) = (σ² + σ_d²)/(σ·σ_d)²`` ``[B]`` (= 1/c_out² of ``edm``)."""
        s = sigma.float()
        return (s**2 + self.sigma_data**2) / (s * self.sigma_data) ** 2


__all__ = ["PARAMETERISATIONS", "TAU_MODES", "NoiseSchedule", "Parameterisation",
           "Preconditioning", "TauMode", "TauSampling"]
