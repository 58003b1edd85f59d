"""Latent step functions for the surrogate variants compared in evaluation.

A variant is a callable ``z [B, N, D] -> z_next [B, N, D]`` (latent space) plus the number of
network evaluations it spends per step, so rollouts of every variant share one code path
(:func:`ups_kedro.evaluation.rollout.latent_rollout`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ups_kedro.evaluation import metrics
from ups_kedro.evaluation.rollout import latent_rollout, persistence_rollout, scored_frames
from ups_kedro.models.diffusion_residual import refine_latent


@dataclass
class Variant:
    """A latent stepper and its cost: ``nfe`` network evaluations per step (operator included)."""

    name: str
    step: Callable[[torch.Tensor], torch.Tensor]
    nfe: int = 1
    meta: dict = field(default_factory=dict)


def operator_variant(operator: nn.Module, dt: float) -> Variant:
    return Variant("operator", lambda z: operator(z, dt), nfe=1)


def corrected_variant(name: str, operator: nn.Module, dt: float, corrector: nn.Module,
                      n_steps: int, seed: int = 0, solver: str = "heun") -> Variant:
    """Operator prediction refined by a residual model (Stage 2 sampler or Stage 3 student).

    The sampler's noise comes from one seeded generator per variant, so a rollout is
    reproducible; NFE per step = 1 (operator) + the sampler's evaluations.
    """
    generator = torch.Generator().manual_seed(seed)

    def step(z: torch.Tensor) -> torch.Tensor:
        z_next, _ = refine_latent(corrector, operator(z, dt), n_steps, generator=generator,
                                  solver=solver)
        return z_next

    # One dry call on a dummy batch fixes the NFE figure without touching the seeded stream.
    probe = torch.zeros(1, corrector.config.latent_tokens, corrector.config.latent_dim)
    with torch.no_grad():
        _, nfe = refine_latent(corrector, probe, n_steps, generator=torch.Generator().manual_seed(0),
                               solver=solver)
    return Variant(name, step, nfe=1 + nfe, meta={"sampler_steps": n_steps})


KEYS = ("nrmse", "nrmse_h1", "nrmse_h5", "nrmse_h10", "nrmse_last", "rmse", "crmse",
        "corr_steps_0.8", "corr_steps_0.95")


def _summary(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    summary = metrics.summarise(pred, truth)
    return {k: summary[k] for k in KEYS if k in summary}


def score_variants(variants: list[Variant], fields: np.ndarray, normaliser: dict,
                   encode, decode, initial_step: int, time_stride: int = 1,
                   batch_size: int = 64) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    """Decoded rollouts of each variant on ``fields`` [B, T, *space, C], scored the PDEBench way.

    The persistence baseline (every frame = the last given one) is always scored first.

    Returns:
        ({variant: {metric: value, "ms_per_trajectory", "nfe_per_step"}}, {variant: predictions}).
    """
    truth = np.asarray(fields)[:, scored_frames(fields.shape[1], initial_step, time_stride)]
    baseline = persistence_rollout(fields, initial_step, time_stride)
    scores = {"persistence": {**_summary(baseline, truth), "nfe_per_step": 0.0}}
    preds = {"persistence": baseline}
    for v in variants:
        # Warm-up on two trajectories so one-off costs (allocator, thread pool) are not timed.
        latent_rollout(fields[:2, :initial_step + time_stride], normaliser, encode, v.step,
                       decode, initial_step, time_stride, batch_size)
        start = time.perf_counter()
        pred = latent_rollout(fields, normaliser, encode, v.step, decode, initial_step,
                              time_stride, batch_size)
        elapsed = time.perf_counter() - start
        scores[v.name] = _summary(pred, truth)
        scores[v.name]["ms_per_trajectory"] = 1000.0 * elapsed / fields.shape[0]
        scores[v.name]["nfe_per_step"] = float(v.nfe)
        preds[v.name] = pred
    return scores, preds


def flatten_scores(prefix: str, scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """``{variant: {metric: v}}`` → ``{"<prefix>_<variant>_<metric>": v}`` for MLflow."""
    return {f"{prefix}_{name}_{k}": v for name, s in scores.items() for k, v in s.items()}
