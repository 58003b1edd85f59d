"""Latent step functions for the surrogate variants compared in evaluation.

A variant is a callable ``z [B, N, D] -> z_next [B, N, D]`` (latent space) plus the number of
network evaluations it spends per step, so rollouts of every variant share one code path
(:func:`ups_kedro.evaluation.rollout.latent_rollout`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ups_kedro.evaluation import metrics
from ups_kedro.evaluation.rollout import latent_rollout, persistence_rollout, scored_frames
from ups_kedro.models.corrector import RolloutCorrector
from ups_kedro.models.diffusion_residual import refine_latent


@dataclass
class Variant:
    """A latent stepper and its cost: ``nfe`` network evaluations per step (operator included)."""

    name: str
    step: Callable[[torch.Tensor], torch.Tensor]
    nfe: float = 1
    #: Called before each batch's rollout (stateful steppers restart their step count).
    reset: Callable[[], None] | None = None
    #: Extra figures measured during the rollout (e.g. the fraction of corrected steps) and how
    #: to zero them (the untimed warm-up must not count).
    stats: Callable[[], dict[str, float]] | None = None
    clear_stats: Callable[[], None] | None = None


def operator_variant(operator: nn.Module, dt: float) -> Variant:
    return Variant("operator", lambda z: operator(z, dt), nfe=1)


def corrected_variant(name: str, operator: nn.Module, dt: float, corrector: nn.Module,
                      n_steps: int, seed: int = 0, solver: str = "heun") -> Variant:
    """Operator prediction refined by a residual model (Stage 2 sampler or Stage 3 student).

    The sampler's noise comes from one seeded generator per variant, so a rollout is
    reproducible; NFE per step = 1 (operator) + the sampler's evaluations.
    """
    generator = torch.Generator().manual_seed(seed)
    return Variant(name, lambda z: _refine(corrector, z, operator(z, dt), n_steps, generator,
                                           solver),
                   nfe=1 + _sampler_nfe(corrector, n_steps, solver))


def _refine(corrector: nn.Module, z: torch.Tensor, z_pred: torch.Tensor, n_steps: int,
            generator: torch.Generator, solver: str) -> torch.Tensor:
    """Corrected prediction from state ``z`` and ``z_pred = Op(z)`` [B, N, D].

    A :class:`RolloutCorrector` sees both; the EDM residual model is conditioned on ``z_pred``.
    """
    if isinstance(corrector, RolloutCorrector):
        return corrector.correct(z, z_pred, generator=generator, n_steps=n_steps)
    return refine_latent(corrector, z_pred, n_steps, generator=generator, solver=solver)[0]


def _sampler_nfe(corrector: nn.Module, n_steps: int, solver: str) -> int:
    """Network evaluations of one corrector call (a dry call on a dummy batch, own generator)."""
    if isinstance(corrector, RolloutCorrector):
        return corrector.steps_nfe(n_steps)
    probe = torch.zeros(1, corrector.config.latent_tokens, corrector.config.latent_dim)
    with torch.no_grad():
        return refine_latent(corrector, probe, n_steps, generator=torch.Generator().manual_seed(0),
                             solver=solver)[1]


def step_residual(z: torch.Tensor, z_pred: torch.Tensor) -> torch.Tensor:
    """Relative latent change of one operator step, per sample: rms(ẑ − z) / rms(z) → [B]."""
    dims = tuple(range(1, z.ndim))
    change = (z_pred - z).pow(2).mean(dim=dims).sqrt()
    return change / z.pow(2).mean(dim=dims).sqrt().clamp_min(1e-12)


def gated_variant(name: str, operator: nn.Module, dt: float, corrector: nn.Module, n_steps: int,
                  residual_threshold: float | None, correct_every: int, seed: int = 0,
                  solver: str = "heun") -> Variant:
    """The original's inference rule: correct only some steps.

    A sample's operator prediction ẑ = Op(z) is refined when its :func:`step_residual` exceeds
    ``residual_threshold`` (a fast-changing state, where the operator errs most) or on every
    ``correct_every``-th step (0 or None: never by count).  Only the selected samples go through
    the corrector, so the measured milliseconds reflect the saving; ``stats()`` reports the
    fraction of corrected steps and the mean NFE per step actually spent.
    """
    generator = torch.Generator().manual_seed(seed)
    sampler_nfe = _sampler_nfe(corrector, n_steps, solver)
    state = {"k": 0, "corrected": 0, "total": 0}

    def reset() -> None:
        state["k"] = 0

    def step(z: torch.Tensor) -> torch.Tensor:
        z_pred = operator(z, dt)
        state["k"] += 1
        by_count = bool(correct_every) and state["k"] % correct_every == 0
        mask = torch.full((z.shape[0],), by_count)
        if residual_threshold is not None and not by_count:
            mask = step_residual(z, z_pred) > residual_threshold
        state["corrected"] += int(mask.sum())
        state["total"] += z.shape[0]
        if mask.any():
            z_pred = z_pred.clone()
            z_pred[mask] = _refine(corrector, z[mask], z_pred[mask], n_steps, generator,
                                   solver)
        return z_pred

    def clear_stats() -> None:
        state.update(corrected=0, total=0)

    def stats() -> dict[str, float]:
        frac = state["corrected"] / max(state["total"], 1)
        return {"corrected_fraction": frac, "nfe_per_step": 1.0 + frac * sampler_nfe}

    return Variant(name, step, nfe=1 + sampler_nfe, reset=reset, stats=stats,
                   clear_stats=clear_stats)


KEYS = ("nrmse", "nrmse_h1", "nrmse_h5", "nrmse_h10", "nrmse_last", "rmse", "crmse",
        "corr_steps_0.8", "corr_steps_0.95")


def _summary(pred: np.ndarray, truth: np.ndarray,
             keys: tuple[str, ...] | None) -> dict[str, float]:
    if keys == ():  # only the cost is wanted (the caller scores the predictions itself)
        return {}
    summary = metrics.summarise(pred, truth)
    return summary if keys is None else {k: summary[k] for k in keys if k in summary}


def score_variants(variants: list[Variant], fields: np.ndarray, normaliser: dict,
                   encode, decode, initial_step: int, time_stride: int = 1,
                   batch_size: int = 64, keys: tuple[str, ...] | None = KEYS,
                   ) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """Decoded rollouts of each variant on ``fields`` [B, T, *space, C], scored the PDEBench way.

    The persistence baseline (every frame = the last given one) is always scored first.
    ``keys``: which :func:`~ups_kedro.evaluation.metrics.summarise` metrics to keep (None: all).

    Returns:
        ({variant: {metric: value, "ms_per_trajectory", "nfe_per_step"}}, {variant: predictions}).
    """
    truth = np.asarray(fields)[:, scored_frames(fields.shape[1], initial_step, time_stride)]
    baseline = persistence_rollout(fields, initial_step, time_stride)
    scores = {"persistence": {**_summary(baseline, truth, keys), "nfe_per_step": 0.0}}
    preds = {"persistence": baseline}
    for v in variants:
        # Warm-up on two trajectories so one-off costs (allocator, thread pool) are not timed.
        latent_rollout(fields[:2, :initial_step + time_stride], normaliser, encode, v.step,
                       decode, initial_step, time_stride, batch_size, on_start=v.reset)
        if v.clear_stats is not None:
            v.clear_stats()
        start = time.perf_counter()
        pred = latent_rollout(fields, normaliser, encode, v.step, decode, initial_step,
                              time_stride, batch_size, on_start=v.reset)
        elapsed = time.perf_counter() - start
        scores[v.name] = _summary(pred, truth, keys)
        scores[v.name]["ms_per_trajectory"] = 1000.0 * elapsed / fields.shape[0]
        scores[v.name]["nfe_per_step"] = float(v.nfe)
        if v.stats is not None:
            scores[v.name].update(v.stats())
        preds[v.name] = pred
    return scores, preds


def flatten_scores(prefix: str, scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """``{variant: {metric: v}}`` → ``{"<prefix>_<variant>_<metric>": v}`` for MLflow."""
    return {f"{prefix}_{name}_{k}": v for name, s in scores.items() for k, v in s.items()}
