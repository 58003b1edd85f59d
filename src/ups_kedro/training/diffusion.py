"""Stage tasks for the residual diffusion model (stage 2) and its consistency distillation (3).

Both are :class:`ups_kedro.training.loop.StageTask` implementations for :func:`fit` on batches
``{"z": [B, N, D], "z_next": [B, N, D]}`` with optional

* ``"cond"`` ``[B, N, D]``: the operator prediction ``ẑ = Op(z)``, precomputed by the caller
  (e.g. with :func:`precompute_operator_predictions`); used as is when present;
* ``"index"`` ``[B]`` (int): the dataset index of each sample, which turns on the per-index
  teacher cache (:class:`OperatorPredictionCache`) when ``cache=True``.

Teacher caching, the choice made here: the operator is frozen, so ``ẑ`` depends only on the
sample.  The cheapest option is to precompute it once for the whole split and put it in the
dataset as ``"cond"`` (no operator call during training at all).  When the caller cannot
(e.g. the latents are streamed), each task keeps a lazily filled ``[num_samples, N, D]`` cache
keyed by ``"index"`` (separate caches for training and validation, whose indices overlap), so
the operator runs once per sample for the whole stage, not once per epoch.  Without either,
``ẑ`` is computed per batch under ``no_grad``.  In every case ``ẑ`` is computed in float32
with autocast off: the residual ``z_next − ẑ`` is a small difference of O(1) numbers and bf16
(≈ 3 significant digits) would destroy it.

Units: the models work on the normalised residual ``r = (z_next − ẑ)/residual_scale``
(``residual_scale`` from :func:`estimate_residual_scale` on training data, stored in the
model config); the schedule's σ are in those units.
"""

from __future__ import annotations

import copy
import math
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ups_kedro.models.diffusion_residual import (
    SOLVERS,
    DiffusionResidualConfig,
    Denoiser,
    Solver,
    consistency_sample,
    sample_residual,
)
from ups_kedro.models.schedules import NoiseSchedule, TauSampling
from ups_kedro.training.loop import unwrap_model
from ups_kedro.training.losses import relative_l2, spectral_energy_loss

Operator = Callable[[Tensor], Tensor]


# ------------------------------------------------------------------------------------------
# operator predictions (teacher caching)


def _freeze(module: Any) -> None:
    """Put a frozen teacher in eval mode with no trainable parameters (dropout off)."""
    if isinstance(module, nn.Module):
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)


def _predict(operator: Operator, z: Tensor) -> Tensor:
    """``Op(z)`` ``[B, N, D]`` → float32, no graph, autocast off (see module docstring)."""
    with torch.no_grad(), torch.autocast(z.device.type, enabled=False):
        return operator(z.float()).float()


@torch.no_grad()
def precompute_operator_predictions(operator: Operator, z: Tensor, batch_size: int = 256) -> Tensor:
    """``ẑ = Op(z)`` for a whole split, in batches: ``z`` ``[M, N, D]`` → ``[M, N, D]`` float32.

    Runs on ``z``'s device; put the result in the dataset items as ``"cond"``.
    """
    _freeze(operator)
    if batch_size < 1:
        raise ValueError(
            f"precompute_operator_predictions: batch_size must be >= 1, got {batch_size}"
        )
    chunks = [_predict(operator, z[i : i + batch_size]) for i in range(0, len(z), batch_size)]
    return torch.cat(chunks)


def estimate_residual_scale(z_next: Tensor, z_pred: Tensor) -> float:
    """RMS of the training residual ``z_next − ẑ`` (both ``[M, N, D]``): the ``residual_scale``.

    Dividing by it gives the residual unit RMS, matching ``sigma_data = 1``.
    """
    rms = float((z_next.double() - z_pred.double()).pow(2).mean().sqrt())
    if not math.isfinite(rms) or rms <= 0.0:
        raise ValueError(f"estimate_residual_scale: residual RMS must be finite and > 0, got {rms}")
    return rms


class OperatorPredictionCache:
    """``ẑ`` per dataset index, filled on first sight (see module docstring).

    The store lives on the device of the first batch and grows by doubling.  On the CPU it is
    a memory-mapped temporary file (removed with the cache), so the process's own memory does
    not grow with the number of training pairs: the kernel pages the predictions in and out
    like the memory-mapped latents.  A checksum of
    each sample's ``z`` is kept and compared on every hit, so a dataset whose item for an
    index changes between epochs (random crops, random time pairs) raises instead of silently
    serving stale predictions; such data needs ``cache=False``.
    """

    def __init__(self) -> None:
        self.store: Tensor | None = None  # [capacity, N, D] float32
        self.filled: Tensor | None = None  # [capacity] bool
        self.checksum: Tensor | None = None  # [capacity, 2] float64: Σz, Σz²
        self.hits = 0
        self.misses = 0
        self._spill: tempfile.TemporaryDirectory | None = None  # CPU store's folder

    def _alloc(self, cap: int, like: Tensor) -> Tensor:
        """A zeroed ``[cap, N, D]`` float32 store: a memory-mapped temporary file on the CPU."""
        shape = (cap, *like.shape[1:])
        if like.device.type != "cpu":
            return like.new_zeros(shape, dtype=torch.float32)
        if self._spill is None:
            self._spill = tempfile.TemporaryDirectory(prefix="ups-operator-cache-")
        path = Path(self._spill.name) / f"store-{cap}.f32"
        store = torch.from_numpy(np.memmap(path, dtype=np.float32, mode="w+", shape=shape))
        for old in Path(self._spill.name).glob("store-*.f32"):
            if old != path:
                old.unlink()  # the previous (smaller) store: still mapped until replaced
        return store

    def _grow(self, need: int, like: Tensor) -> None:
        old = 0 if self.store is None else self.store.shape[0]
        if need <= old:
            return
        cap = max(need, 2 * old, 16)
        store = self._alloc(cap, like)
        filled = torch.zeros(cap, dtype=torch.bool, device=like.device)
        checksum = torch.zeros(cap, 2, dtype=torch.float64, device=like.device)
        if self.store is not None:
            store[:old] = self.store
            filled[:old] = self.filled
            checksum[:old] = self.checksum
        self.store, self.filled, self.checksum = store, filled, checksum

    @staticmethod
    def _sums(z: Tensor) -> Tensor:
        flat = z.detach().flatten(1).double()
        return torch.stack([flat.sum(1), flat.pow(2).sum(1)], dim=1)  # [B, 2]

    def lookup(self, index: Tensor, z: Tensor, predict: Callable[[Tensor], Tensor]) -> Tensor:
        """``ẑ`` for samples ``index`` ``[B]`` with latents ``z`` ``[B, N, D]`` → ``[B, N, D]``.

        ``predict`` runs only on the samples not seen before.
        """
        idx = index.reshape(-1).long().to(z.device)
        if idx.numel() != z.shape[0]:
            raise ValueError(f"cache: index has {idx.numel()} entries for a batch of {z.shape[0]}")
        if idx.numel() and int(idx.min()) < 0:
            raise ValueError("cache: negative sample index")
        self._grow(int(idx.max()) + 1 if idx.numel() else 0, z)
        assert self.store is not None and self.filled is not None and self.checksum is not None
        sums = self._sums(z)
        known = self.filled[idx]
        if known.any():
            old = self.checksum[idx[known]]
            if not torch.allclose(old, sums[known], rtol=1e-6, atol=1e-9):
                raise ValueError(
                    "cache: the latents for a cached sample index changed between calls; the "
                    "dataset is not deterministic per index, so run with cache=False"
                )
        miss = ~known
        if miss.any():
            self.store[idx[miss]] = predict(z[miss])
            self.checksum[idx[miss]] = sums[miss]
            self.filled[idx[miss]] = True
        self.hits += int(known.sum())
        self.misses += int(miss.sum())
        return self.store[idx]


class _ResidualInputs:
    """Shared logic: where ``ẑ`` comes from and the normalised residual."""

    def __init__(self, operator: Operator | None, residual_scale: float, cache: bool) -> None:
        if not (math.isfinite(residual_scale) and residual_scale > 0):
            raise ValueError(f"residual_scale must be finite and > 0, got {residual_scale}")
        _freeze(operator)
        self.operator = operator
        self.residual_scale = float(residual_scale)
        self.cache = cache
        self.train_cache = OperatorPredictionCache()
        self.val_cache = OperatorPredictionCache()

    def _operator_on(self, device: torch.device) -> Operator:
        if self.operator is None:
            raise ValueError(
                "the batch has no 'cond' (operator prediction) and the task has no operator"
            )
        if isinstance(self.operator, nn.Module):
            self.operator.to(device)
        return self.operator

    def inputs(self, batch: dict[str, Tensor], train: bool) -> tuple[Tensor, Tensor]:
        """``(cond ẑ [B, N, D], r [B, N, D])`` float32; ``r = (z_next − ẑ)/residual_scale``."""
        z_next = batch["z_next"].float()
        if "cond" in batch:
            cond = batch["cond"].float()
        else:
            z = batch["z"]
            op = self._operator_on(z.device)
            if self.cache and "index" in batch:
                store = self.train_cache if train else self.val_cache
                cond = store.lookup(batch["index"], z, lambda zz: _predict(op, zz))
            else:
                cond = _predict(op, z)
        if cond.shape != z_next.shape:
            raise ValueError(
                f"operator prediction {tuple(cond.shape)} and z_next {tuple(z_next.shape)} differ"
            )
        return cond, (z_next - cond) / self.residual_scale


def _model_config(model: nn.Module) -> DiffusionResidualConfig | None:
    cfg = getattr(unwrap_model(model), "config", None)
    return cfg if isinstance(cfg, DiffusionResidualConfig) else None


def _check_model(
    model: nn.Module,
    schedule: NoiseSchedule,
    residual_scale: float,
    parameterisation: str,
    who: str,
) -> None:
    """A mismatch here would silently break the preconditioning or the boundary condition."""
    cfg = _model_config(model)
    if cfg is None:
        return
    if cfg.schedule != schedule:
        raise ValueError(
            f"{who}: the task's schedule {schedule} differs from the model's {cfg.schedule}"
        )
    if not math.isclose(cfg.residual_scale, residual_scale, rel_tol=1e-6):
        raise ValueError(
            f"{who}: residual_scale {residual_scale} differs from the model config's "
            f"{cfg.residual_scale}"
        )
    if cfg.parameterisation != parameterisation:
        raise ValueError(
            f"{who}: needs a {parameterisation!r}-parameterised model, got {cfg.parameterisation!r}"
        )


def _col(x: Tensor) -> Tensor:
    """``[B]`` → ``[B, 1, 1]`` to broadcast over tokens and channels."""
    return x[:, None, None]


# ------------------------------------------------------------------------------------------
# stage 2


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
        self._data = _ResidualInputs(operator, residual_scale, cache)
        self._checked = False

    @property
    def residual_scale(self) -> float:
        return self._data.residual_scale

    @property
    def train_cache(self) -> OperatorPredictionCache:
        return self._data.train_cache

    def _check(self, model: nn.Module) -> None:
        if not self._checked:
            _check_model(model, self.schedule, self.residual_scale, "edm", "ResidualDiffusionTask")
            self._checked = True

    def denoising_loss(
        self, model: nn.Module, r: Tensor, cond: Tensor, sigma: Tensor
    ) -> tuple[Tensor, dict[str, float]]:
        """Stage 2 loss of clean residuals ``r`` ``[B, N, D]`` at noise levels ``sigma`` ``[B]``."""
        eps = torch.randn_like(r)
        r_noisy = r + _col(sigma) * eps
        denoised, raw = model(r_noisy, cond, sigma)
        sd2 = self.schedule.sigma_data**2
        s2 = sigma.float() ** 2
        c_skip = self.schedule.c_skip(sigma.float(), "edm")
        c_out = self.schedule.c_out(sigma.float(), "edm")
        f_target = (_col(s2 / (s2 + sd2)) * r - _col(c_skip * sigma.float()) * eps) / _col(c_out)
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


# ------------------------------------------------------------------------------------------
# stage 3


class _MicroBatchedLoss(torch.autograd.Function):
    """Gradient accumulation over micro-batches hidden inside one loss tensor.

    ``forward`` runs the micro-batch losses one at a time *with* a graph, takes each one's
    parameter gradients at once (``torch.autograd.grad``, which frees that graph) and sums
    them; it returns the summed loss value.  ``backward`` hands the stored sums, times the
    incoming gradient (the loop's ``1/accum_steps``), to autograd.  So ``fit``'s
    ``(loss / group_len).backward()``, clipping and accumulation work unchanged, while peak
    activation memory is that of one micro-batch and no forward is recomputed.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, runner: _ChunkRunner, *params: Tensor
    ) -> Tensor:
        total = torch.zeros((), dtype=torch.float32, device=runner.device)
        grads: list[Tensor | None] = [None] * len(runner.params)
        with torch.enable_grad():
            for loss in runner.losses():
                got = torch.autograd.grad(loss, runner.params, allow_unused=True)
                for i, g in enumerate(got):
                    if g is not None:
                        grads[i] = g if grads[i] is None else grads[i] + g
                total = total + loss.detach().float()
        ctx.grads = grads
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        scaled = [None if g is None else g * grad_out.to(g.dtype) for g in ctx.grads]
        ctx.grads = None
        return (None, *scaled)


class _ChunkRunner:
    """Holds what ``_MicroBatchedLoss`` needs: the chunk-loss generator and the parameters."""

    def __init__(self, losses: Callable[[], Iterator[Tensor]], params: list[Tensor],
                 device: torch.device) -> None:
        self.losses = losses
        self.params = params
        self.device = device


class ConsistencyDistillTask:
    """Stage 3 (``consistency_distill``): consistency distillation (Song et al. 2023, CD).

    Train a ``parameterisation="consistency"`` :class:`DiffusionResidual` (the model given to
    :func:`fit`; build it with :func:`make_consistency_student`) to map any point of the
    teacher's probability-flow ODE trajectory to its end.  Per training call:

    1. ``ẑ`` and ``r`` once per batch (teacher caching, as in stage 2);
    2. tiling: each sample is repeated ``K`` times (``K`` = ``tau_schedule[epoch−1]``, the last
       entry repeating, or ``distill_num_taus``), so ``K`` τ values per sample run in one
       vectorised forward of ``[K·B, N, D]``;
    3. per row: a level index ``n ~ U{0, …, n_levels−2}`` on the Karras grid
       ``schedule.levels(n_levels)`` (σ_min … σ_max), ``x_{n+1} = r + σ_{n+1}·ε``, one teacher
       ODE step (Heun or Euler, ``no_grad``) to ``x̂_n``, and
       ``loss = mean ‖f_θ(x_{n+1}, σ_{n+1}) − f_θ⁻(x̂_n, σ_n)‖²`` with the target network
       ``f_θ⁻`` under ``no_grad`` (uniform λ, as in the paper's CD);
    4. micro-batching: with ``distill_micro_batch`` set, the tiled rows are processed in
       chunks of that many through :class:`_MicroBatchedLoss` (gradients accumulated inside
       the loss; the loop's backward just scales them), so memory does not grow with ``K``.

    Target network (EMA of the student, ``θ⁻ ← μ·θ⁻ + (1−μ)·θ``): :func:`fit` has no
    per-step hook, so the task does it itself at the start of every ``training_loss``: it
    keeps a private copy of the student, created from the student's weights on the first call,
    and folds in the student's current weights whenever they changed since the last call
    (detected via the parameters' in-place version counters, so with ``accum_steps > 1`` the
    update happens once per optimizer step, not per micro-batch).  ``target_ema = 0`` is
    iCT's recommended stop-gradient target.  This target is separate from ``fit``'s own EMA
    (``ema_decay``), which is the usual slowly averaged student used for validation.  It is
    not part of ``fit``'s saved state: after a resume it restarts from the student's weights
    (use :meth:`target_state` / :meth:`load_target_state` once the loop has a hook).

    Validation (``model`` is fit's EMA student): ``loss`` = ``teacher_gap``, the relative L2
    of the student's ``val_student_steps``-step sample vs the teacher's
    ``val_teacher_steps``-step sample from the same ``ε`` (distillation fidelity); components
    ``cd`` (the training loss at random levels), ``student_rel_err`` and ``teacher_rel_err``
    (each sample vs the true residual).

    Args:
        teacher: the frozen stage 2 model (or any :class:`Denoiser`); put in eval mode.
        schedule: must equal the student's schedule (σ_min is the boundary).
        operator: frozen stage 1 operator, unless every batch carries ``"cond"``.
        n_levels: discretisation ``N`` of σ (≥ 2).
        distill_num_taus: τ values per sample per step when there is no ``tau_schedule``.
        distill_micro_batch: rows per micro-batch of the tiled batch (``None``: one pass).
        teacher_solver: ``heun`` (2 teacher calls per row) or ``euler`` (1).
        tau_schedule: per-epoch ``distill_num_taus`` (epoch ``e`` uses entry ``e−1``; the last
            entry holds after the list ends), e.g. the original's ``[5, 4, 3]``.
        target_ema: μ in [0, 1).
        residual_scale: ``None``: the teacher config's (or 1.0 for a teacher without config).
        cache: per-index cache of ``ẑ`` when batches carry ``"index"``.
        val_teacher_steps, val_student_steps: sampler steps for validation.
    """

    def __init__(
        self,
        teacher: Denoiser,
        schedule: NoiseSchedule,
        *,
        operator: Operator | None = None,
        n_levels: int = 18,
        distill_num_taus: int = 1,
        distill_micro_batch: int | None = None,
        teacher_solver: Solver = "heun",
        tau_schedule: Sequence[int] | None = None,
        target_ema: float = 0.95,
        residual_scale: float | None = None,
        cache: bool = True,
        val_teacher_steps: int = 16,
        val_student_steps: int = 1,
    ) -> None:
        if n_levels < 2:
            raise ValueError(f"n_levels must be >= 2, got {n_levels}")
        if distill_num_taus < 1:
            raise ValueError(f"distill_num_taus must be >= 1, got {distill_num_taus}")
        if distill_micro_batch is not None and distill_micro_batch < 1:
            raise ValueError(f"distill_micro_batch must be >= 1 or None, got {distill_micro_batch}")
        if teacher_solver not in SOLVERS:
            raise ValueError(f"teacher_solver must be one of {SOLVERS}, got {teacher_solver!r}")
        if tau_schedule is not None and (not tau_schedule or any(int(k) < 1 for k in tau_schedule)):
            raise ValueError(
                f"tau_schedule must be a non-empty list of ints >= 1, got {tau_schedule}"
            )
        if not 0.0 <= target_ema < 1.0:
            raise ValueError(f"target_ema must be in [0, 1), got {target_ema}")
        if val_teacher_steps < 1 or val_student_steps < 1:
            raise ValueError("val_teacher_steps and val_student_steps must be >= 1")
        teacher_cfg = getattr(teacher, "config", None)
        if residual_scale is None:
            residual_scale = getattr(teacher_cfg, "residual_scale", 1.0)
        _freeze(teacher)
        self.teacher = teacher
        self.schedule = schedule
        self.n_levels = n_levels
        self.distill_num_taus = distill_num_taus
        self.distill_micro_batch = distill_micro_batch
        self.teacher_solver = teacher_solver
        self.tau_schedule = [int(k) for k in tau_schedule] if tau_schedule is not None else None
        self.target_ema = float(target_ema)
        self.val_teacher_steps = val_teacher_steps
        self.val_student_steps = val_student_steps
        self._data = _ResidualInputs(operator, float(residual_scale), cache)
        if teacher_cfg is not None and not math.isclose(
            getattr(teacher_cfg, "residual_scale", residual_scale), residual_scale, rel_tol=1e-6
        ):
            raise ValueError("ConsistencyDistillTask: residual_scale differs from the teacher's")
        self.target: nn.Module | None = None
        self._student_version: tuple[int, ...] | None = None
        self._checked = False

    @property
    def residual_scale(self) -> float:
        return self._data.residual_scale

    @property
    def train_cache(self) -> OperatorPredictionCache:
        return self._data.train_cache

    def taus_for_epoch(self, epoch: int) -> int:
        """τ values per sample in epoch ``epoch`` (1-based)."""
        if self.tau_schedule is None:
            return self.distill_num_taus
        return self.tau_schedule[min(max(epoch, 1), len(self.tau_schedule)) - 1]

    # ---------------------------------------------------------------- target network

    @torch.no_grad()
    def update_target(self, student: nn.Module) -> None:
        """``θ⁻ ← μ·θ⁻ + (1−μ)·θ`` (created as a copy of ``θ`` on the first call).

        Called by :meth:`training_loss`; a caller with a per-step hook may call it after each
        optimizer step instead (repeated calls without a weight change do nothing).
        """
        plain = unwrap_model(student)
        params = list(plain.parameters())
        version = tuple(p._version for p in params)  # bumped by every in-place update
        if self.target is None:
            self.target = copy.deepcopy(plain).eval()
            for p in self.target.parameters():
                p.requires_grad_(False)
        elif version != self._student_version:
            t_params = list(self.target.parameters())
            torch._foreach_lerp_(t_params, [p.detach() for p in params], 1.0 - self.target_ema)
            for tb, sb in zip(self.target.buffers(), plain.buffers(), strict=True):
                tb.copy_(sb)
        self._student_version = version

    def target_state(self) -> dict[str, Tensor] | None:
        """The target network's weights (for a resumable state), or ``None`` before training."""
        return None if self.target is None else self.target.state_dict()

    def load_target_state(self, student: nn.Module, state: dict[str, Tensor]) -> None:
        """Restore :meth:`target_state` (the student gives the architecture)."""
        self.target = None
        self.update_target(student)
        assert self.target is not None
        self.target.load_state_dict(state)

    # ---------------------------------------------------------------- loss

    @torch.no_grad()
    def teacher_step(self, x: Tensor, cond: Tensor, s_from: Tensor, s_to: Tensor) -> Tensor:
        """One PF-ODE step of the teacher from ``s_from`` to ``s_to`` (``[R]``, both > 0).

        ``x``, ``cond``: ``[R, N, D]`` → ``[R, N, D]`` float32.
        """
        h = _col(s_to - s_from)
        d = (x - self.teacher.denoise(x, cond, s_from).float()) / _col(s_from)
        x_euler = x + h * d
        if self.teacher_solver == "euler":
            return x_euler
        d_next = (x_euler - self.teacher.denoise(x_euler, cond, s_to).float()) / _col(s_to)
        return x + h * 0.5 * (d + d_next)

    def _pair_loss(
        self, student: nn.Module, target_net: nn.Module, r: Tensor, cond: Tensor, idx: Tensor,
        eps: Tensor, levels: Tensor,
    ) -> Tensor:
        """Mean CD distance over rows: ``r``, ``cond``, ``eps`` ``[R, N, D]``, ``idx`` ``[R]``."""
        s_lo, s_hi = levels[idx], levels[idx + 1]
        x_hi = r + _col(s_hi) * eps
        with torch.no_grad():
            x_lo = self.teacher_step(x_hi, cond, s_hi, s_lo)
            target = target_net(x_lo, cond, s_lo)[0].float()
        pred = student(x_hi, cond, s_hi)[0].float()
        return (pred - target).pow(2).mean()

    def _prepare(self, model: nn.Module, r: Tensor) -> None:
        if not self._checked:
            _check_model(model, self.schedule, self.residual_scale, "consistency",
                         "ConsistencyDistillTask")
            self._checked = True
        if isinstance(self.teacher, nn.Module):
            self.teacher.to(r.device)

    def training_loss(
        self, model: nn.Module, batch: dict[str, Tensor], epoch: int
    ) -> tuple[Tensor, dict[str, float]]:
        """CD loss on ``K`` tiled τ values per sample (see class docstring)."""
        cond, r = self._data.inputs(batch, train=True)
        self._prepare(model, r)
        self.update_target(model)
        target_net = self.target
        assert target_net is not None
        target_net.to(r.device)
        k = self.taus_for_epoch(epoch)
        r_t, cond_t = r.repeat(k, 1, 1), cond.repeat(k, 1, 1)  # [K·B, N, D], ẑ reused K times
        rows = r_t.shape[0]
        levels = self.schedule.levels(self.n_levels, device=r.device)
        idx = torch.randint(0, self.n_levels - 1, (rows,), device=r.device)
        eps = torch.randn_like(r_t)
        chunk = self.distill_micro_batch
        parts = {"num_taus": float(k)}
        if chunk is None or chunk >= rows:
            loss = self._pair_loss(model, target_net, r_t, cond_t, idx, eps, levels)
            parts["cd"] = float(loss.detach())
            return loss, parts

        def losses() -> Iterator[Tensor]:
            for start in range(0, rows, chunk):
                sl = slice(start, min(start + chunk, rows))
                weight = (sl.stop - sl.start) / rows  # chunk means → the mean over all rows
                yield weight * self._pair_loss(
                    model, target_net, r_t[sl], cond_t[sl], idx[sl], eps[sl], levels
                )

        params = [p for p in unwrap_model(model).parameters() if p.requires_grad]
        loss = _MicroBatchedLoss.apply(_ChunkRunner(losses, params, r.device), *params)
        parts["cd"] = float(loss.detach())
        return loss, parts

    def validation_loss(
        self, model: nn.Module, batch: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, float]]:
        """``teacher_gap`` (loss) plus ``cd``, ``student_rel_err``, ``teacher_rel_err``."""
        cond, r = self._data.inputs(batch, train=False)
        self._prepare(model, r)
        # Before any training call there is no target yet: θ⁻ = θ (the model itself).
        target_net = self.target.to(r.device) if self.target is not None else model
        levels = self.schedule.levels(self.n_levels, device=r.device)
        idx = torch.randint(0, self.n_levels - 1, (r.shape[0],), device=r.device)
        cd = self._pair_loss(model, target_net, r, cond, idx, torch.randn_like(r), levels)
        eps = torch.randn_like(r)
        teacher_r, _ = sample_residual(
            self.teacher, cond, self.val_teacher_steps, self.schedule,
            solver=self.teacher_solver, noise=eps,
        )
        student_r, _ = consistency_sample(
            model, cond, self.val_student_steps, self.schedule, noise=eps
        )
        gap = relative_l2(student_r, teacher_r)
        parts = {
            "teacher_gap": float(gap),
            "cd": float(cd),
            "student_rel_err": float(relative_l2(student_r, r)),
            "teacher_rel_err": float(relative_l2(teacher_r, r)),
        }
        return gap, parts
