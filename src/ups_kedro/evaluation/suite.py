"""One evaluation protocol for every consumer (evaluation, promotion, inference): no Kedro.

:func:`evaluate_surrogate` rolls out every available variant of a trained surrogate from frame
``initial_step - 1`` of each trajectory (PDEBench protocol), decodes every step, and returns the
physical-space predictions with each variant's measured cost, plus — when the data came from a
built-in solver — the solver itself re-run on the same trajectories as a reference.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import torch

from ups_kedro.evaluation.rollout import scored_frames
from ups_kedro.evaluation.rollout_file import RolloutSet
from ups_kedro.evaluation.solver_reference import SolverSpec, solver_rollout
from ups_kedro.evaluation.surrogate import Surrogate
from ups_kedro.evaluation.variants import (
    Variant,
    corrected_variant,
    gated_variant,
    operator_variant,
    score_variants,
    step_residual,
)
from ups_kedro.models.corrector import RolloutCorrector
from ups_kedro.stages import CORRECTORS, GATED_DEFAULT, corrector, corrector_names

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class GatedParams:
    """The original's gated inference: correct when the step residual is large or every k steps."""

    corrector: str = GATED_DEFAULT  # a registered corrector stage (ups_kedro.stages)
    steps: int = 1
    residual_threshold: float | None = None  # relative latent change rms(Op(z) − z)/rms(z)
    #: Calibrate ``residual_threshold`` as this quantile of the validation split's relative
    #: latent change (true latents of the frames a rollout visits); exclusive with it.
    residual_quantile: float | None = None
    correct_every: int = 2  # 0: never by count

    def validate(self, where: str = "gated") -> None:
        if self.corrector not in corrector_names():
            raise ValueError(f"{where}.corrector = {self.corrector!r} is not a corrector stage; "
                             f"choose one of {', '.join(corrector_names())}")
        if self.residual_quantile is not None:
            if self.residual_threshold is not None:
                raise ValueError(f"{where}: set residual_threshold or residual_quantile (which "
                                 "calibrates it on validation data), not both")
            if not 0.0 <= self.residual_quantile <= 1.0:
                raise ValueError(f"{where}.residual_quantile must lie in [0, 1], got "
                                 f"{self.residual_quantile}")


def _default_steps() -> dict[str, tuple[int, ...]]:
    return {c.name: c.steps for c in CORRECTORS}


@dataclass(frozen=True)
class VariantParams:
    """Which variants to roll out (each one only if its checkpoint exists).

    ``steps``: ``{corrector stage: step counts}`` of its variants (an EDM model: sampler steps;
    a rollout student: corrections per step); a stage left out keeps the registry's default
    (:attr:`ups_kedro.stages.CorrectorStage.steps`).
    """

    steps: dict[str, tuple[int, ...]] = field(default_factory=_default_steps)
    gated: GatedParams | None = field(default_factory=GatedParams)
    solver_reference: bool = True
    seed: int = 0
    batch_size: int = 64

    def validate(self, where: str = "variants") -> None:
        for name, counts in self.steps.items():
            if name not in corrector_names():
                raise ValueError(f"{where}.steps.{name}: not a corrector stage; choose among "
                                 f"{', '.join(corrector_names())}")
            if (not isinstance(counts, (list, tuple)) or not counts
                    or any(isinstance(n, bool) or not isinstance(n, int) or n < 1
                           for n in counts)):
                raise ValueError(f"{where}.steps.{name} must be a non-empty list of integers "
                                 f"≥ 1, got {counts!r}")

    def steps_of(self, name: str) -> tuple[int, ...]:
        """Step counts of corrector ``name`` (configured, else the registry default)."""
        return tuple(self.steps.get(name, corrector(name).steps))

    @staticmethod
    def upgrade(values: dict) -> dict:
        """Variant parameters recorded before the corrector registry (``corrector_steps``,
        ``student_steps``, as in models registered then) → the ``steps`` mapping."""
        values = dict(values)
        legacy = {c.legacy_steps_key: c.name for c in CORRECTORS if c.legacy_steps_key}
        moved = {legacy[k]: values.pop(k) for k in list(values) if k in legacy}
        if moved:
            values["steps"] = {**moved, **values.get("steps", {})}
        return values


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


def _corrector_variants(s: Surrogate, p: VariantParams) -> tuple[list[Variant], list[str]]:
    """Every present corrector's variants, in registry order, and a note for each absent one."""
    variants, notes = [], []
    for stage in CORRECTORS:
        model = s.correctors.get(stage.name)
        if model is None:
            notes.append(f"{stage.name} checkpoint absent: {stage.label} variants skipped")
            continue
        # A rollout corrector of such a stage runs in its trained form; else each step count.
        trained_form = stage.trained_form_only and isinstance(model, RolloutCorrector)
        steps = (None,) if trained_form else p.steps_of(stage.name)
        variants += [corrected_variant(stage.name if n is None else f"{stage.name}_{n}step",
                                       s.operator, s.dt, model, n, p.seed, s.solver)
                     for n in steps]
    return variants, notes


def build_variants(s: Surrogate, p: VariantParams,
                   only: set[str] | None = None) -> tuple[list[Variant], list[str]]:
    """The variants ``s`` supports under ``p`` (those named in ``only``, if given), and a note
    for each one skipped."""
    variants, notes = _corrector_variants(s, p)
    variants.insert(0, operator_variant(s.operator, s.dt))
    g = p.gated
    if g is not None:
        model = s.correctors.get(g.corrector)
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

