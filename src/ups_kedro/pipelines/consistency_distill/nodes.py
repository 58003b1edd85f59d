"""Nodes of ``consistency_distill`` (Stage 3): distil the Stage 2 corrector into a fast student.

A Stage 2 rollout corrector (the default) is distilled into a one-evaluation student trained
through its own rollout (:func:`_distill_rollout_corrector`).  For an EDM Stage 2 model:
consistency distillation (Song et al. 2023): the student has the consistency parameterisation
(its output equals its input at σ_min), a slowly updated target copy supplies the regression
target, and one Heun step of the frozen Stage 2 model links adjacent noise levels.  The student
is saved as its own artifact; the Stage 2 checkpoint is only read.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch

from ups_kedro.config import parse
from ups_kedro.data.torch_data import ResidualPairDataset
from ups_kedro.datasets.array_dataset import ArrayBundle
from ups_kedro.evaluation.corrector_scores import corrector_scores
from ups_kedro.models.corrector import RolloutCorrector
from ups_kedro.models.diffusion_residual import make_consistency_student
from ups_kedro.paths import project_root
from ups_kedro.pipelines import stage_cache
from ups_kedro.pipelines.consistency_distill.config import ConsistencyDistillStageConfig
from ups_kedro.pipelines.lineage import require_same
from ups_kedro.pipelines.train_stage import fit_checkpoint
from ups_kedro.pipelines.upstream import (
    FrozenOperator,
    load_operator,
    log_corrector_scores,
    require_checkpoint,
)
from ups_kedro.training.artifacts import freeze, load_module
from ups_kedro.training.config import TrainConfig
from ups_kedro.training.corrector import UnrolledCorrectorTask, make_student
from ups_kedro.training.consistency_distill import ConsistencyDistillTask
from ups_kedro.training.unrolled_windows import unrolled_windows

logger = logging.getLogger(__name__)
STAGE = "consistency_distill"


def _config(params: dict[str, Any]) -> ConsistencyDistillStageConfig:
    return parse(ConsistencyDistillStageConfig, params, STAGE)


def distill_consistency(diff_residual_checkpoint: dict, operator_checkpoint: dict,
                        latents_train: ArrayBundle, latents_val: ArrayBundle,
                        params: dict[str, Any]) -> dict:
    """Train the consistency student from the frozen Stage 2 teacher."""
    cfg = _config(params)
    require_checkpoint(diff_residual_checkpoint, "diff_residual", STAGE)
    if (ckpt := stage_cache.reuse(STAGE, cfg, project_root() / cfg.state_dir, {
            "diff_residual": diff_residual_checkpoint, "operator": operator_checkpoint,
            "latents_train": latents_train, "latents_val": latents_val})):
        return ckpt
    op = load_operator(operator_checkpoint, latents_train, latents_val)
    require_same("operator behind the Stage 2 teacher", op.run_id,
                 diff_residual_checkpoint["lineage"].get("operator_run_id"),
                 "Re-run `kedro run --pipeline diff_residual` on the current operator.")
    teacher = freeze(load_module(diff_residual_checkpoint))
    if isinstance(teacher, RolloutCorrector):
        return _distill_rollout_corrector(cfg, teacher, op, diff_residual_checkpoint,
                                          operator_checkpoint, latents_train, latents_val)
    torch.manual_seed(cfg.train.seed)
    student = make_consistency_student(teacher, init_from_teacher=cfg.init_from_teacher)
    task = ConsistencyDistillTask(
        teacher, teacher.schedule, operator=op, n_levels=cfg.n_levels,
        distill_num_taus=cfg.distill_num_taus, distill_micro_batch=cfg.distill_micro_batch,
        teacher_solver=cfg.teacher_solver, tau_schedule=cfg.tau_schedule,
        target_ema=cfg.target_ema, val_teacher_steps=cfg.eval.teacher_steps,
        val_student_steps=min(cfg.eval.student_steps))
    train = ResidualPairDataset(latents_train.array, op.time_stride)
    val = ResidualPairDataset(latents_val.array, op.time_stride,
                              starts=range(0, latents_val.array.shape[1], cfg.val_start_stride))
    return _fit_student(cfg, cfg.train, student, task, train, val, op, diff_residual_checkpoint,
                        operator_checkpoint, latents_train)


def _distill_rollout_corrector(cfg: ConsistencyDistillStageConfig, teacher: RolloutCorrector,
                               op: FrozenOperator, diff_residual_checkpoint: dict,
                               operator_checkpoint: dict, latents_train: ArrayBundle,
                               latents_val: ArrayBundle) -> dict:
    """One-evaluation student of a rollout corrector, trained through its own rollout.

    No target network: the frozen teacher supplies the targets, so the loop's own state
    (student, optimiser, EMA) is the whole training state and a killed run resumes exactly.
    A teacher that already takes one evaluation per step is copied (nothing to distil: further
    training is Stage 2's job, with its own schedule).
    """
    r = cfg.rollout
    train_cfg = r.train
    if teacher.nfe == 1:
        logger.info("consistency_distill: the Stage 2 corrector already takes one network "
                    "evaluation per step; the student is its copy (no training)")
        train_cfg = dataclasses.replace(train_cfg, epochs=0)
    torch.manual_seed(train_cfg.seed)
    student = make_student(teacher)
    train, horizon = unrolled_windows(latents_train, r.horizon, op.time_stride,
                                      r.train_start_stride, r.first_start)
    val, _ = unrolled_windows(latents_val, horizon, op.time_stride, r.val_start_stride,
                              r.first_start)
    task = UnrolledCorrectorTask(op, horizon, r.relative_floor, teacher=teacher,
                                 lambda_teacher=r.lambda_teacher)
    return _fit_student(cfg, train_cfg, student, task, train, val, op, diff_residual_checkpoint,
                        operator_checkpoint, latents_train)


def _fit_student(cfg: ConsistencyDistillStageConfig, train_cfg: TrainConfig,
                 student: torch.nn.Module, task: Any, train: Any, val: Any, op: FrozenOperator,
                 diff_residual_checkpoint: dict, operator_checkpoint: dict,
                 latents_train: ArrayBundle) -> dict:
    """Train either student form against the frozen teacher; its checkpoint with lineage."""
    teacher_run = diff_residual_checkpoint["lineage"].get("mlflow_run_id")
    ckpt, _ = fit_checkpoint(
        STAGE, cfg, student, task, train, val, train_config=train_cfg,
        state_dir=project_root() / cfg.state_dir,
        upstream_key=f"{op.encoder_hash}:{teacher_run}",
        upstream_tags={"diff_residual_run": teacher_run, "operator_run": op.run_id},
        lineage={"encoder_hash": op.encoder_hash, "operator_run_id": op.run_id,
                 "diff_residual_run_id": teacher_run,
                 "split_manifest_hash": latents_train.meta["split_manifest_hash"]},
        normaliser=operator_checkpoint["normaliser"])
    return ckpt


def evaluate_consistency_distill(student_checkpoint: dict, diff_residual_checkpoint: dict,
                                 operator_checkpoint: dict, autoencoder_checkpoint: dict,
                                 fields_val: ArrayBundle, params: dict[str, Any]) -> dict:
    """Student with 1 and 2 steps against the Stage 2 teacher with N steps (accuracy and NFE)."""
    cfg = _config(params)
    require_checkpoint(diff_residual_checkpoint, "diff_residual", STAGE)
    return log_corrector_scores(STAGE, corrector_scores(
        student_checkpoint, operator_checkpoint, autoencoder_checkpoint, fields_val,
        cfg.eval.student_steps, STAGE, cfg.eval.batch_size, cfg.eval.seed, cfg.teacher_solver,
        teacher=(diff_residual_checkpoint, cfg.eval.teacher_steps)))
