"""Nodes of ``diff_residual`` (Stage 2): a corrector of the frozen operator's predictions.

``method: corrector`` (default): a :class:`~ups_kedro.models.corrector.RolloutCorrector` sees
the state z and Op(z) and is trained through its own rollout (frozen operator + corrector
unrolled ``horizon`` steps from a true latent, loss at every step; see
``ups_kedro.training.corrector``).  A corrector trained on one-step targets compounds its own
small errors instead.

``method: edm`` (the original's conditional diffusion of the residual): given the frozen
operator's prediction ẑ = Op(z), the model learns the distribution of
r = z_next − ẑ: at a diffusion time τ the residual is corrupted with noise of level σ(τ) and the
network (EDM preconditioning) predicts the clean residual.  A deterministic Heun sampler turns
noise into r̂ and the corrected prediction is ẑ + r̂.  See ``ups_kedro.training.diff_residual``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from ups_kedro.config import follow_data, parse
from ups_kedro.data.torch_data import ResidualPairDataset
from ups_kedro.datasets.array_dataset import ArrayBundle
from ups_kedro.evaluation.corrector_scores import corrector_scores
from ups_kedro.models.registry import build_model
from ups_kedro.paths import project_root
from ups_kedro.pipelines import stage_cache
from ups_kedro.pipelines.diff_residual.config import DiffResidualStageConfig
from ups_kedro.pipelines.train_stage import fit_checkpoint
from ups_kedro.pipelines.upstream import FrozenOperator, load_operator, log_corrector_scores
from ups_kedro.training.diff_residual import ResidualDiffusionTask
from ups_kedro.training.teacher_cache import (
    estimate_residual_scale,
    precompute_operator_predictions,
)
from ups_kedro.training.corrector import UnrolledCorrectorTask
from ups_kedro.training.config import TrainConfig
from ups_kedro.training.unrolled_windows import unrolled_windows

logger = logging.getLogger(__name__)
STAGE = "diff_residual"


def _config(params: dict[str, Any]) -> DiffResidualStageConfig:
    return parse(DiffResidualStageConfig, params, STAGE)


def _residual_scale(pairs: ResidualPairDataset, operator, limit: int = 4096) -> float:
    """RMS of z_next − Op(z) over (up to ``limit``) training pairs: the residual's unit."""
    idx = np.linspace(0, len(pairs) - 1, min(limit, len(pairs))).astype(int)
    items = [pairs[int(i)] for i in idx]
    z = torch.stack([it["z"] for it in items])
    z_next = torch.stack([it["z_next"] for it in items])
    return estimate_residual_scale(z_next, precompute_operator_predictions(operator, z))


def train_diff_residual(operator_checkpoint: dict, latents_train: ArrayBundle,
                        latents_val: ArrayBundle, params: dict[str, Any]) -> dict:
    """Train the Stage 2 corrector against the frozen operator (``method`` picks the form)."""
    cfg = _config(params)
    if (ckpt := stage_cache.reuse(STAGE, cfg, project_root() / cfg.state_dir, {
            "operator": operator_checkpoint, "latents_train": latents_train,
            "latents_val": latents_val})):
        return ckpt
    op = load_operator(operator_checkpoint, latents_train, latents_val)
    if cfg.method == "corrector":
        return _train_rollout_corrector(cfg, op, operator_checkpoint, latents_train, latents_val)
    return _train_edm(cfg, op, operator_checkpoint, latents_train, latents_val)


def _train_rollout_corrector(cfg: DiffResidualStageConfig, op: FrozenOperator,
                             operator_checkpoint: dict, latents_train: ArrayBundle,
                             latents_val: ArrayBundle) -> dict:
    """Rollout corrector trained through ``horizon`` unrolled steps of operator + corrector."""
    c = cfg.corrector
    train, horizon = unrolled_windows(latents_train, c.horizon, op.time_stride,
                                      c.train_start_stride, c.first_start)
    val, _ = unrolled_windows(latents_val, horizon, op.time_stride, c.val_start_stride,
                              c.first_start)
    tokens, dim = latents_train.array.shape[-2:]
    torch.manual_seed(c.train.seed)
    model = build_model("rollout_corrector", follow_data(
        c.model, f"{STAGE}.corrector.model", latent_dim=int(dim), latent_tokens=int(tokens),
        spatial_dims=int(operator_checkpoint["config"].get("spatial_dims", 1))))
    task = UnrolledCorrectorTask(op, horizon, c.relative_floor)
    return _fit_checkpoint(cfg, c.train, model, task, train, val, op, operator_checkpoint,
                           latents_train)


def _train_edm(cfg: DiffResidualStageConfig, op: FrozenOperator, operator_checkpoint: dict,
               latents_train: ArrayBundle, latents_val: ArrayBundle) -> dict:
    """The original's residual diffusion model (EDM) of r = z_next − Op(z)."""
    train = ResidualPairDataset(latents_train.array, op.time_stride)
    val = ResidualPairDataset(latents_val.array, op.time_stride,
                              starts=range(0, latents_val.array.shape[1], cfg.val_start_stride))
    scale = _residual_scale(train, op)
    tokens, dim = latents_train.array.shape[-2:]
    torch.manual_seed(cfg.train.seed)
    model = build_model("diffusion_residual", follow_data(
        cfg.model, f"{STAGE}.model", latent_dim=int(dim), latent_tokens=int(tokens),
        parameterisation="edm", residual_scale=scale))
    task = ResidualDiffusionTask(
        op, model.schedule, cfg.tau_sampling, cfg.loss.lambda_spectral, cfg.loss.lambda_relative,
        relative_floor=cfg.loss.relative_floor, residual_scale=scale,
        val_num_sigmas=cfg.val_num_sigmas, val_sample_steps=cfg.sampler.steps,
        val_solver=cfg.sampler.solver)
    logger.info("diff_residual: residual RMS (training pairs) %.4g", scale)
    return _fit_checkpoint(cfg, cfg.train, model, task, train, val, op, operator_checkpoint,
                           latents_train, metrics={"residual_scale": scale},
                           extra={"sampler": vars(cfg.sampler)})


def _fit_checkpoint(cfg: DiffResidualStageConfig, train_cfg: TrainConfig,
                    model: torch.nn.Module, task: Any, train: Any, val: Any, op: FrozenOperator,
                    operator_checkpoint: dict, latents_train: ArrayBundle,
                    **checkpoint_kwargs: Any) -> dict:
    """Train either Stage 2 form against the frozen operator; its checkpoint with lineage."""
    ckpt, _ = fit_checkpoint(
        STAGE, cfg, model, task, train, val, train_config=train_cfg,
        state_dir=project_root() / cfg.state_dir, upstream_key=f"{op.encoder_hash}:{op.run_id}",
        upstream_tags={"operator_run": op.run_id, "encoder_hash": op.encoder_hash},
        lineage={"encoder_hash": op.encoder_hash, "operator_run_id": op.run_id,
                 "split_manifest_hash": latents_train.meta["split_manifest_hash"]},
        normaliser=operator_checkpoint["normaliser"], **checkpoint_kwargs)
    return ckpt


def evaluate_diff_residual(diff_residual_checkpoint: dict, operator_checkpoint: dict,
                           autoencoder_checkpoint: dict, fields_val: ArrayBundle,
                           params: dict[str, Any]) -> dict:
    """Does the corrector make rollouts better?  Operator alone vs operator + N-step sampler."""
    cfg = _config(params)
    # A rollout corrector runs in its trained form; the EDM sampler at each listed step count.
    steps = (None,) if diff_residual_checkpoint["kind"] == "rollout_corrector" else \
        cfg.eval.sampler_steps
    return log_corrector_scores(STAGE, corrector_scores(
        diff_residual_checkpoint, operator_checkpoint, autoencoder_checkpoint, fields_val, steps,
        STAGE, cfg.eval.batch_size, cfg.eval.seed, cfg.sampler.solver))
