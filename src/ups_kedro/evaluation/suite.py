"""One evaluation protocol for every consumer (evaluation, promotion, inference): no Kedro.

:func:`evaluate_surrogate` rolls out every available variant of a trained surrogate from frame
``initial_step - 1`` of each trajectory (PDEBench protocol), decodes every step, and returns the
physical-space predictions with each variant's measured cost, plus — when the data came from a
built-in solver — the solver itself re-run on the same trajectories as a reference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import nn

from ups_kedro.evaluation.rollout import scored_frames
from ups_kedro.evaluation.rollout_file import RolloutSet
from ups_kedro.evaluation.solver_reference import SolverSpec, solver_rollout
from ups_kedro.evaluation.variants import (
    Variant,
    corrected_variant,
    gated_variant,
    operator_variant,
    score_variants,
    step_residual,
)
from ups_kedro.models.corrector import RolloutCorrector

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatedParams:
    """The original's gated inference: correct when the step residual is large or every k steps."""

    corrector: Literal["consistency_distill", "diff_residual"] = "consistency_distill"
    steps: int = 1
    residual_threshold: float | None = None  # relative latent change rms(Op(z) − z)/rms(z)
    #: Calibrate ``residual_threshold`` as this quantile of the validation split's relative
    #: latent change (true latents of the frames a rollout visits); exclusive with it.
    residual_quantile: float | None = None
    correct_every: int = 2  # 0: never by count

    def validate(self, where: str = "gated") -> None:
        if self.residual_quantile is not None:
            if self.residual_threshold is not None:
                raise ValueError(f"{where}: set residual_threshold or residual_quantile (which "
                                 "calibrates it on validation data), not both")
            if not 0.0 <= self.residual_quantile <= 1.0:
                raise ValueError(f"{where}.residual_quantile must lie in [0, 1], got "
                                 f"{self.residual_quantile}")


@dataclass(frozen=True)
class VariantParams:
    """Which variants to roll out (each one only if its checkpoint exists)."""

    corrector_steps: tuple[int, ...] = (16,)  # Stage 2 EDM sampler steps (not a corrector's)
    student_steps: tuple[int, ...] = (1, 2)  # Stage 3 student steps
    gated: GatedParams | None = field(default_factory=GatedParams)
    solver_reference: bool = True
    seed: int = 0
    batch_size: int = 64


@dataclass
class Surrogate:
    """The trained stages, ready to step: encode/decode act on normalised fields."""

    encode: Callable[[torch.Tensor], torch.Tensor]
    decode: Callable[[torch.Tensor], torch.Tensor]
    operator: nn.Module
    dt: float
    time_stride: int
    normaliser: dict
    corrector: nn.Module | None = None  # Stage 2 (diffusion residual)
    student: nn.Module | None = None  # Stage 3 (consistency student)
    solver: str = "heun"


@torch.no_grad()
def calibrate_threshold(s: Surrogate, fields_val: np.ndarray, initial_step: int,
                        quantile: float, batch_size: int = 256) -> float:
    """``quantile`` of the relative latent change rms(Op(z) − z)/rms(z) on validation data.

    ``z`` are the encoded TRUE validation frames a rollout visits (``initial_step - 1`` on, every
    ``time_stride``-th), so the gate fires on about ``1 − quantile`` of the steps of a rollout
    that stays close to the truth.  ``fields_val``: [B, T, *space, C] physical units.
    """
    from ups_kedro.data.torch_data import normaliser_tensors

    mean, std = normaliser_tensors(s.normaliser)
    frames = np.asarray(fields_val[:, initial_step - 1::s.time_stride], dtype=np.float32)
    flat = frames.reshape(-1, *frames.shape[2:])
    change = []
    for start in range(0, flat.shape[0], batch_size):
        z = s.encode((torch.from_numpy(flat[start:start + batch_size]) - mean) / std)
        change.append(step_residual(z, s.operator(z, s.dt)))
    return float(torch.quantile(torch.cat(change).double(), quantile))


def build_variants(s: Surrogate, p: VariantParams,
                   only: set[str] | None = None) -> tuple[list[Variant], list[str]]:
    """The variants ``s`` supports under ``p`` (those named in ``only``, if given), and a note
    for each one skipped."""
    variants = [operator_variant(s.operator, s.dt)]
    notes = []
    if s.corrector is None:
        notes.append("diff_residual checkpoint absent: operator + corrector variants skipped")
    else:
        # A rollout corrector runs in its trained form; the EDM sampler at each step count.
        steps = (None,) if isinstance(s.corrector, RolloutCorrector) else p.corrector_steps
        variants += [corrected_variant("diff_residual" if n is None else f"diff_residual_{n}step",
                                       s.operator, s.dt, s.corrector, n, p.seed, s.solver)
                     for n in steps]
    if s.student is None:
        notes.append("consistency_distill checkpoint absent: student variants skipped")
    else:
        variants += [corrected_variant(f"consistency_distill_{n}step", s.operator, s.dt,
                                       s.student, n, p.seed, s.solver) for n in p.student_steps]
    g = p.gated
    if g is not None:
        model = s.student if g.corrector == "consistency_distill" else s.corrector
        if model is None:
            notes.append(f"gated variant skipped: its corrector ({g.corrector}) is absent")
        else:
            variants.append(gated_variant(
                f"gated_{g.corrector}_{g.steps}step", s.operator, s.dt, model, g.steps,
                g.residual_threshold, g.correct_every, p.seed, s.solver))
    if only is not None:
        variants = [v for v in variants if v.name in only]
    return variants, notes


def evaluate_surrogate(s: Surrogate, fields: np.ndarray, meta: dict, p: VariantParams,
                       solver: tuple[SolverSpec | None, str] = (None, "not requested"),
                       only: set[str] | None = None) -> RolloutSet:
    """Decoded rollouts of every variant on ``fields`` [B, T, *space, C] (physical units).

    ``meta`` is the split's ArrayDataset metadata (``initial_step``, ``t``, ``coords``,
    ``channels``, ``split``, ``indices``); ``only`` restricts the surrogate variants.  Returns
    predictions of the scored frames with each variant's cost (``ms_per_trajectory``,
    ``nfe_per_step``) in ``variant_info``.
    """
    initial_step = int(meta["initial_step"])
    variants, notes = build_variants(s, p, only)
    torch.manual_seed(p.seed)
    scores, preds = score_variants(variants, fields, s.normaliser, s.encode, s.decode,
                                   initial_step, s.time_stride, p.batch_size, keys=())
    info = {name: {k: float(v) for k, v in sc.items()} for name, sc in scores.items()}
    spec, why = solver
    if p.solver_reference and spec is not None:
        preds["solver"], seconds = solver_rollout(fields, spec, float(meta["dt"]), initial_step,
                                                  s.time_stride)
        info["solver"] = {"ms_per_trajectory": 1000.0 * seconds / fields.shape[0],
                          "nfe_per_step": 0.0}
    elif p.solver_reference:
        notes.append(f"solver reference skipped: {why}")
    for note in notes:
        logger.info("evaluation: %s", note)
    frames = scored_frames(fields.shape[1], initial_step, s.time_stride)
    times = np.asarray(meta["t"], dtype=np.float64)
    return RolloutSet(
        given=np.asarray(fields[:, :initial_step], dtype=np.float32),
        truth=np.asarray(fields[:, frames], dtype=np.float32), predictions=preds,
        times=np.concatenate([times[:initial_step], times[frames]]),
        coords=[np.asarray(c) for c in meta.get("coords", [])],
        channels=list(meta.get("channels", [])), initial_step=initial_step,
        time_stride=s.time_stride, split=str(meta.get("split", "")),
        sample_index=np.asarray(meta["indices"]) if "indices" in meta else None,
        variant_info=info, notes=notes)

