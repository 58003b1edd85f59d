"""The frozen operator's predictions ``ẑ = Op(z)`` for the residual stages (teacher caching).

Both residual stage tasks (:mod:`~ups_kedro.training.diff_residual`, Stage 2, and
:mod:`~ups_kedro.training.consistency_distill`, Stage 3) train on batches
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
model config); the schedule's σ are in those units.  :class:`ResidualInputs` turns a batch
into ``(ẑ, r)`` for both tasks; :func:`check_model` checks a model against a task.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from ups_kedro.models.diffusion_residual import DiffusionResidualConfig
from ups_kedro.models.schedules import NoiseSchedule
from ups_kedro.training.task import unwrap_model

Operator = Callable[[Tensor], Tensor]


def freeze(module: Any) -> None:
    """Put a frozen teacher in eval mode with no trainable parameters (dropout off)."""
    if isinstance(module, nn.Module):
        module.eval()
        for p in module.parameters():
            p.requires_grad_(False)


def predict(operator: Operator, z: Tensor) -> Tensor:
    """``Op(z)`` ``[B, N, D]`` → float32, no graph, autocast off (see module docstring)."""
    with torch.no_grad(), torch.autocast(z.device.type, enabled=False):
        return operator(z.float()).float()


@torch.no_grad()
def precompute_operator_predictions(operator: Operator, z: Tensor, batch_size: int = 256) -> Tensor:
    """``ẑ = Op(z)`` for a whole split, in batches: ``z`` ``[M, N, D]`` → ``[M, N, D]`` float32.

    Runs on ``z``'s device; put the result in the dataset items as ``"cond"``.
    """
    freeze(operator)
    if batch_size < 1:
        raise ValueError(
            f"precompute_operator_predictions: batch_size must be >= 1, got {batch_size}"
        )
    chunks = [predict(operator, z[i : i + batch_size]) for i in range(0, len(z), batch_size)]
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


class ResidualInputs:
    """Shared logic: where ``ẑ`` comes from and the normalised residual."""

    def __init__(self, operator: Operator | None, residual_scale: float, cache: bool) -> None:
        if not (math.isfinite(residual_scale) and residual_scale > 0):
            raise ValueError(f"residual_scale must be finite and > 0, got {residual_scale}")
        freeze(operator)
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
                cond = store.lookup(batch["index"], z, lambda zz: predict(op, zz))
            else:
                cond = predict(op, z)
        if cond.shape != z_next.shape:
            raise ValueError(
                f"operator prediction {tuple(cond.shape)} and z_next {tuple(z_next.shape)} differ"
            )
        return cond, (z_next - cond) / self.residual_scale


def _model_config(model: nn.Module) -> DiffusionResidualConfig | None:
    cfg = getattr(unwrap_model(model), "config", None)
    return cfg if isinstance(cfg, DiffusionResidualConfig) else None


def check_model(
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
    if NoiseSchedule.of(cfg) != schedule:
        raise ValueError(
            f"{who}: the task's schedule {schedule} differs from the model's "
            f"{NoiseSchedule.of(cfg)}"
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


def col(x: Tensor) -> Tensor:
    """``[B]`` → ``[B, 1, 1]`` to broadcast over tokens and channels."""
    return x[:, None, None]
