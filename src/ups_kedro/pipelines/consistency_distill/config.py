"""Typed parameters of the ``consistency_distill`` pipeline (Stage 3)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ups_kedro.training.config import TrainConfig


@dataclass(frozen=True)
class DistillEvalParams:
    student_steps: tuple[int, ...] = (1, 2)
    teacher_steps: int = 16
    seed: int = 0
    batch_size: int = 64


@dataclass(frozen=True)
class RolloutDistillParams:
    """Distillation of a Stage 2 rollout corrector into a one-evaluation student.

    The student (initialised from the teacher) is trained through its own rollout on the truth
    plus ``lambda_teacher`` × its distance to the teacher's correction of the student's state.
    """

    horizon: int | None = None  # null: the whole rollout (see diff_residual.corrector)
    first_start: int | None = None  # null: initial_step - 1 (see diff_residual.corrector)
    train_start_stride: int = 8
    val_start_stride: int = 8
    relative_floor: float = 0.01
    lambda_teacher: float = 1.0
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=1, batch_size=16))


@dataclass(frozen=True)
class ConsistencyDistillStageConfig:
    """``rollout``: used when the Stage 2 checkpoint is a rollout corrector (the default).
    The rest is the consistency distillation of an EDM Stage 2 model, with the original's
    names: ``distill_num_taus`` τ values per sample tiled into one forward,
    ``distill_micro_batch`` micro-batches with gradient accumulation, a per-epoch
    ``tau_schedule`` (τ values per sample in epoch e), early stop at ``train.target_loss``,
    ``train.compile`` for the distillation step."""

    rollout: RolloutDistillParams = field(default_factory=RolloutDistillParams)
    n_levels: int = 18
    distill_num_taus: int = 3
    distill_micro_batch: int | None = None
    tau_schedule: list[int] | None = None
    target_ema: float = 0.95
    teacher_solver: Literal["heun", "euler"] = "heun"
    init_from_teacher: bool = True
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=4, batch_size=128))
    val_start_stride: int = 4
    eval: DistillEvalParams = field(default_factory=DistillEvalParams)
    state_dir: str = "data/06_models/state/consistency_distill"
    # true: retrain even when up to date (ups_kedro.pipelines.stage_cache); not in the fingerprint
    force: bool = False
