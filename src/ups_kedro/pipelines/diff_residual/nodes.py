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
noise into r̂ and the corrected prediction is ẑ + r̂.  See ``ups_kedro.training.diffusion``.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from ups_kedro.config import follow_data, parse
from ups_kedro.data.torch_data import LatentPairDataset, ResidualPairDataset
from ups_kedro.datasets.array_dataset import ArrayBundle
from ups_kedro.evaluation.variants import (
    corrected_variant,
    flatten_scores,
    operator_variant,
    score_variants,
)
from ups_kedro.models.corrector import RolloutCorrector
from ups_kedro.models.registry import build_model
from ups_kedro.paths import project_root
from ups_kedro.pipelines.diff_residual.config import DiffResidualStageConfig
from ups_kedro.pipelines import stage_cache
from ups_kedro.pipelines.lineage import make_lineage, require_same, tag_upstream
from ups_kedro.pipelines.tracking import epoch_logger, log_metrics
from ups_kedro.pipelines.upstream import FrozenOperator, load_operator
from ups_kedro.training.artifacts import load_module, make_checkpoint
from ups_kedro.training.checkpoint import run_fingerprint
from ups_kedro.training.diff_residual import ResidualDiffusionTask
from ups_kedro.training.teacher_cache import (
    estimate_residual_scale,
    precompute_operator_predictions,
)
from ups_kedro.training.corrector import UnrolledCorrectorTask
from ups_kedro.training.config import TrainConfig
from ups_kedro.training.launcher import fit

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


def unrolled_windows(latents: ArrayBundle, horizon: int | None, time_stride: int,
                     start_stride: int, first_start: int | None = None,
                     ) -> tuple[LatentPairDataset, int]:
    """Windows ``{"z", "z_next": [horizon, N, D]}`` from ``first_start`` (None: the frame the
    evaluation's rollouts start from, ``initial_step - 1``) at every ``start_stride``-th frame,
    and the horizon (None: every step left after ``first_start``, the evaluation's rollout).

    Raises ``ValueError`` when no window fits (the horizon is too long for the frames left).
    """
    n_frames = latents.array.shape[1]
    first = int(latents.meta["initial_step"]) - 1 if first_start is None else first_start
    if horizon is None:
        horizon = max((n_frames - 1 - first) // time_stride, 1)
    last = n_frames - 1 - horizon * time_stride
    if first > last:
        raise ValueError(f"no unrolled window of horizon {horizon} (time_stride {time_stride}) "
                         f"fits between frame {first} and the last of {n_frames} frames: lower "
                         f"the horizon or first_start (at most {max(last, 0)} here)")
    return LatentPairDataset(latents.array, horizon=horizon, time_stride=time_stride,
                             starts=range(first, n_frames, start_stride)), horizon


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
    tag_upstream(STAGE, operator_run=op.run_id, encoder_hash=op.encoder_hash)
    result = fit(model, task, train, val, train_cfg, stage=STAGE,
                 state_dir=project_root() / cfg.state_dir,
                 fingerprint=run_fingerprint(cfg, f"{op.encoder_hash}:{op.run_id}"),
                 on_epoch_end=epoch_logger(STAGE))
    return make_checkpoint(
        model, result, train_config=train_cfg, normaliser=operator_checkpoint["normaliser"],
        lineage=make_lineage(STAGE, cfg, encoder_hash=op.encoder_hash,
                             operator_run_id=op.run_id,
                             split_manifest_hash=latents_train.meta["split_manifest_hash"]),
        **checkpoint_kwargs)


def variant_name(stage: str, n_steps: int | None) -> str:
    """``<stage>_<n>step``, or ``<stage>`` for a corrector run in its trained form (None)."""
    return stage if n_steps is None else f"{stage}_{n_steps}step"


def evaluate_corrector(corrector_checkpoint: dict, operator_checkpoint: dict,
                       autoencoder_checkpoint: dict, fields_val: ArrayBundle,
                       steps: tuple[int | None, ...], stage: str, batch_size: int, seed: int,
                       solver: str = "heun", teacher: tuple[dict, int] | None = None) -> dict:
    """Decoded rollouts on validation: operator alone vs operator + corrector at each step count.

    Shared by Stages 2 and 3 (``teacher`` adds the Stage 2 model as a reference variant).
    """
    for name, ckpt in (("operator", operator_checkpoint), (stage, corrector_checkpoint)):
        require_same(f"encoder of the {name} checkpoint",
                     autoencoder_checkpoint["lineage"]["encoder_hash"],
                     ckpt["lineage"]["encoder_hash"],
                     "Stages were trained on different latents: re-run the chain.")
    ae = load_module(autoencoder_checkpoint)
    op = load_operator(operator_checkpoint)
    corrector = load_module(corrector_checkpoint)
    variants = [operator_variant(op.module, op.dt)]
    variants += [corrected_variant(variant_name(stage, n), op.module, op.dt, corrector, n, seed,
                                   solver) for n in steps]
    if teacher is not None:
        ckpt, n = teacher
        model = load_module(ckpt)
        n = None if isinstance(model, RolloutCorrector) else n  # a corrector runs its own steps
        variants.append(corrected_variant(variant_name("teacher", n), op.module, op.dt, model,
                                          n, seed, solver))
    fields = np.asarray(fields_val.array, dtype=np.float32)
    scores, _ = score_variants(variants, fields, autoencoder_checkpoint["normaliser"], ae.encode,
                               ae.decode, int(fields_val.meta["initial_step"]), op.time_stride,
                               batch_size)
    out = flatten_scores("val", scores)
    log_metrics(stage, out)
    for name, s in scores.items():
        logger.info("%s (val) %-28s nRMSE %.4g  h1 %.4g  last %.4g  NFE/step %d  %.1f ms/traj",
                    stage, name, s["nrmse"], s.get("nrmse_h1", float("nan")),
                    s.get("nrmse_last", float("nan")), s.get("nfe_per_step", 0),
                    s.get("ms_per_trajectory", 0.0))
    return out


def evaluate_diff_residual(diff_residual_checkpoint: dict, operator_checkpoint: dict,
                           autoencoder_checkpoint: dict, fields_val: ArrayBundle,
                           params: dict[str, Any]) -> dict:
    """Does the corrector make rollouts better?  Operator alone vs operator + N-step sampler."""
    cfg = _config(params)
    # A rollout corrector runs in its trained form; the EDM sampler at each listed step count.
    steps = (None,) if diff_residual_checkpoint["kind"] == "rollout_corrector" else \
        cfg.eval.sampler_steps
    return evaluate_corrector(diff_residual_checkpoint, operator_checkpoint, autoencoder_checkpoint,
                              fields_val, steps, STAGE, cfg.eval.batch_size,
                              cfg.eval.seed, cfg.sampler.solver)
