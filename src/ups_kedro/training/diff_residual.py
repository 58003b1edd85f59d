"""Stage 2 (``diff_residual``) task: EDM denoising score matching of the operator's residual.

A :class:`~ups_kedro.training.task.StageTask` for ``fit`` on batches
``{"z": [B, N, D], "z_next": [B, N, D]}`` (optional ``"cond"`` / ``"index"``: where ``ẑ``
comes from, see :mod:`~ups_kedro.training.teacher_cache`, which also defines the residual's
units).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from ups_kedro.models.diffusion_residual import SOLVERS, Solver, sample_residual
from ups_kedro.models.schedules import NoiseSchedule, TauSampling
from ups_kedro.training.losses import relative_l2, spectral_energy_loss
from ups_kedro.training.teacher_cache import (
    Operator,
    OperatorPredictionCache,
    ResidualInputs,
    check_model,
    col,
)


class ResidualDiffusionTask:
    """Stage 2 (``diff_residual``): denoising score matching of the residual given ``ẑ``.

    Per batch: ``r = (z_next − ẑ)/residual_scale``, ``τ`` per ``tau_sampling`` (global RNG,
    which :func:`fit` seeds), ``σ = schedule.sigma(τ)``, ``r_σ = r + σ·ε`` and

        loss = λ(σ)·‖D(r_σ, ẑ, σ) − r‖²  +  λ_spectral·spectral(D, r)
               +  λ_relative·mean_b[ λ(σ_b)·‖D_b − r_b‖² / (‖r_b‖² + relative_floor²) ]

    with EDM's ``λ(σ) = 1/c_out(σ)²`` (squared norms as means over tokens and channels).  The
    relative term is the same denoising error, per sample divided by that sample's residual
    energy: residuals span orders of magnitude (decayed, low-amplitude states have tiny ones,
    and the per-frame nRMSE the rollouts are scored by weighs them like energetic ones), and
    under the plain term the model ignores them and adds noise of the global residual scale
    there.  ``relative_floor`` (normalised-residual units) bounds the weight of ~zero residuals.
    With ``λ_relative ≫ 1`` the plain term is negligible (typical weights are 10²–10⁴).  The
    first term is evaluated as ``‖F − F*‖²`` with the target ``F* = (r − c_skip·r_σ)/c_out``
    written in closed form (``(σ²/(σ²+σ_d²)·r − c_skip·σ·ε)/c_out``): identical in exact
    arithmetic, but at σ ≈ 1e-4 the direct ``D − r`` cancels ~4 of float32's 7 digits before
    being multiplied by 1e8.

    Components: ``mse`` (the weighted term), ``spectral``, ``relative`` (always logged; they
    enter the loss only with non-zero λ).  Validation: the same loss at ``val_num_sigmas``
    fixed σ (the Karras grid, every sample at every σ, noise from the loop's seeded validation
    RNG) plus ``sampled_residual_rel_err``: relative L2 of a ``val_sample_steps``-step sample
    vs the true residual.

    Reading the loss: EDM's weighting gives every σ a unit-scale loss; at σ below the
    residual's conditional spread even the optimal denoiser scores ≈ 1 there (it cannot see
    ε under r's own uncertainty), so the fixed-grid validation loss has a floor of roughly
    (number of such low levels)/``val_num_sigmas``.  ``sampled_residual_rel_err`` is the
    direct quality measure.

    Args:
        operator: the frozen stage 1 operator ``ẑ = operator(z)`` (put in eval mode, its
            parameters frozen); may be ``None`` when every batch carries ``"cond"``.
        schedule: must equal the model's (``model.schedule``); checked on first use.
        tau_sampling: how τ is drawn.
        lambda_spectral, lambda_relative: weights of the extra terms (≥ 0).
        relative_floor: the relative term's floor (> 0, normalised-residual units).
        residual_scale: must equal the model config's ``residual_scale``.
        cache: per-index cache of ``ẑ`` when batches carry ``"index"``.
        val_num_sigmas: fixed validation noise levels (≥ 2; the Karras grid σ_min … σ_max).
        val_sample_steps: sampler steps for ``sampled_residual_rel_err`` (0: skip it).  The
            default σ range spans 2e5, so Heun needs ~16+ steps (31 NFE) to be accurate: on
            Gaussian data its RMS error is ≈ 0.05 of the data std at 16 steps, ≈ 0.3 at 8.
        val_solver: ``heun`` or ``euler``.
    """

    def __init__(
        self,
        operator: Operator | None,
        schedule: NoiseSchedule,
        tau_sampling: TauSampling | None = None,
        lambda_spectral: float = 0.0,
        lambda_relative: float = 0.0,
        residual_scale: float = 1.0,
        cache: bool = True,
        val_num_sigmas: int = 8,
        val_sample_steps: int = 16,
        val_solver: Solver = "heun",
        relative_floor: float = 0.01,
    ) -> None:
        self.tau_sampling = tau_sampling or TauSampling()
        if not (math.isfinite(relative_floor) and relative_floor > 0):
            raise ValueError(f"relative_floor must be finite and > 0, got {relative_floor}")
        self.relative_floor = float(relative_floor)
        self.tau_sampling.validate("diff_residual.tau_sampling")
        if lambda_spectral < 0 or lambda_relative < 0:
            raise ValueError(
                "lambda_spectral/lambda_relative must be >= 0, "
                f"got {lambda_spectral}, {lambda_relative}"
            )
        if val_num_sigmas < 2:
            raise ValueError(f"val_num_sigmas must be >= 2, got {val_num_sigmas}")
        if val_sample_steps < 0:
            raise ValueError(f"val_sample_steps must be >= 0, got {val_sample_steps}")
        if val_solver not in SOLVERS:
            raise ValueError(f"val_solver must be one of {SOLVERS}, got {val_solver!r}")
        self.schedule = schedule
        self.lambda_spectral = float(lambda_spectral)
        self.lambda_relative = float(lambda_relative)
        self.val_num_sigmas = val_num_sigmas
        self.val_sample_steps = val_sample_steps
        self.val_solver = val_solver
        self._data = ResidualInputs(operator, residual_scale, cache)
        self._checked = False

    @property
    def residual_scale(self) -> float:
        return self._data.residual_scale

    @property
    def train_cache(self) -> OperatorPredictionCache:
        return self._data.train_cache

    def _check(self, model: nn.Module) -> None:
        if not self._checked:
            check_model(model, self.schedule, self.residual_scale, "edm", "ResidualDiffusionTask")
            self._checked = True

    def denoising_loss(
        self, model: nn.Module, r: Tensor, cond: Tensor, sigma: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        """Stage 2 loss of clean residuals ``r`` ``[B, N, D]`` at noise levels ``sigma`` ``[B]``."""
        eps = torch.randn_like(r)
        r_noisy = r + col(sigma) * eps
        denoised, raw = model(r_noisy, cond, sigma)
        sd2 = self.schedule.sigma_data**2
        s2 = sigma.float() ** 2
        c_skip = self.schedule.c_skip(sigma.float(), "edm")
        c_out = self.schedule.c_out(sigma.float(), "edm")
        f_target = (col(s2 / (s2 + sd2)) * r - col(c_skip * sigma.float()) * eps) / col(c_out)
        per_sample = (raw.float() - f_target).pow(2).flatten(1).mean(1)  # [B] λ(σ)·|D − r|²
        mse_term = per_sample.mean()
        spectral = spectral_energy_loss(denoised, r, dim=1)
        energy = r.float().pow(2).flatten(1).mean(1)  # [B]
        relative = (per_sample / (energy + self.relative_floor**2)).mean()
        loss = mse_term
        if self.lambda_spectral > 0:
            loss = loss + self.lambda_spectral * spectral
        if self.lambda_relative > 0:
            loss = loss + self.lambda_relative * relative
        parts = {
            "mse": float(mse_term.detach()),
            "spectral": float(spectral.detach()),
            "relative": float(relative.detach()),
        }
        return loss, parts

    def training_loss(
        self, model: nn.Module, batch: dict[str, Tensor], epoch: int
    ) -> tuple[Tensor, dict[str, float]]:
        """Loss at random τ (see class docstring); ``epoch`` is unused."""
        self._check(model)
        cond, r = self._data.inputs(batch, train=True)
        sigma = self.schedule.sample_sigma(r.shape[0], self.tau_sampling, device=r.device)
        return self.denoising_loss(model, r, cond, sigma)

    def validation_loss(
        self, model: nn.Module, batch: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, float]]:
        """Loss on every sample at the fixed σ grid, plus the sampler's residual error."""
        self._check(model)
        cond, r = self._data.inputs(batch, train=False)
        b, k = r.shape[0], self.val_num_sigmas
        grid = self.schedule.levels(k, device=r.device)  # [K] σ_min … σ_max
        sigma = grid.repeat_interleave(b)  # [K·B], sample-major inside each level
        loss, parts = self.denoising_loss(
            model, r.repeat(k, 1, 1), cond.repeat(k, 1, 1), sigma
        )
        if self.val_sample_steps > 0:
            sample, _ = sample_residual(
                model, cond, self.val_sample_steps, self.schedule, solver=self.val_solver
            )
            parts["sampled_residual_rel_err"] = float(relative_l2(sample, r))
        return loss, parts
