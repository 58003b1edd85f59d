"""Typed parameters of the ``consistency_distill`` pipeline (Stage 3)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ups_kedro.config import Checked, bounded
from ups_kedro.models.corrector_config import Solver
from ups_kedro.training.config import TrainConfig


@dataclass(frozen=True)
class DistillEvalParams(Checked):
    student_steps: tuple[int, ...] = bounded((1, 2), ge=1)
    teacher_steps: int = bounded(16, ge=1)
    seed: int = 0
    batch_size: int = bounded(64, ge=1)


@dataclass(frozen=True, kw_only=True)
class RolloutDistillParams(Checked):
    """Distillation of a Stage 2 rollout corrector into a one-evaluation student.

    The student (initialised from the teacher) is trained through its own rollout on the truth
    plus ``lambda_teacher`` × its distance to the teacher's correction of the student's state.
    """

    horizon: int | None = bounded(None, ge=1)  # null: the whole rollout (as diff_residual)
    first_start: int | None = bounded(None, ge=0)  # null: initial_step - 1 (as diff_residual)
    train_start_stride: int = bounded(8, ge=1)
    val_start_stride: int = bounded(8, ge=1)
    relative_floor: float = bounded(0.01, ge=0)
    lambda_teacher: float = bounded(1.0, ge=0)
    train: TrainConfig


@dataclass(frozen=True, kw_only=True)
class ConsistencyDistillStageConfig(Checked):
    """``rollout``: used when the Stage 2 checkpoint is a rollout corrector (the default).
    The rest is the consistency distillation of an EDM Stage 2 model, with the original's
    names: ``distill_num_taus`` τ values per sample tiled into one forward,
    ``distill_micro_batch`` micro-batches with gradient accumulation, a per-epoch
    ``tau_schedule`` (τ values per sample in epoch e), early stop at ``train.target_loss``,
    ``train.compile`` for the distillation step."""

    WHERE = "consistency_distill"

    rollout: RolloutDistillParams
    n_levels: int = bounded(18, ge=2)
    distill_num_taus: int = bounded(3, ge=1)
    distill_micro_batch: int | None = bounded(None, ge=1)
    tau_schedule: list[int] | None = bounded(None, ge=1)
    target_ema: float = bounded(0.95, ge=0, lt=1)
    teacher_solver: Solver = "heun"
    init_from_teacher: bool = True
    train: TrainConfig
    val_start_stride: int = bounded(4, ge=1)
    eval: DistillEvalParams = field(default_factory=DistillEvalParams)
    state_dir: str = "data/06_models/state/consistency_distill"
    # true: retrain even when up to date (ups_kedro.pipelines.stage_cache); not in the fingerprint
    force: bool = False
