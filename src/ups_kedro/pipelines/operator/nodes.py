"""Nodes of the ``operator`` pipeline (Stage 1): train the latent operator, score it."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ups_kedro.config import follow_data, parse
from ups_kedro.data.torch_data import LatentPairDataset, normaliser_tensors
from ups_kedro.data.windows import JitteredWindowDataset
from ups_kedro.datasets.array_dataset import ArrayBundle
from ups_kedro.evaluation import metrics
from ups_kedro.evaluation.rollout import latent_rollout, one_step_rollout, scored_frames
from ups_kedro.evaluation.variants import flatten_scores, operator_variant, score_variants
from ups_kedro.models.registry import build_model
from ups_kedro.paths import project_root
from ups_kedro.pipelines import stage_cache
from ups_kedro.pipelines.lineage import require_meta, require_same
from ups_kedro.pipelines.operator.config import OperatorStageConfig
from ups_kedro.pipelines.tracking import log_metrics
from ups_kedro.pipelines.train_stage import fit_checkpoint
from ups_kedro.training.artifacts import freeze, load_module
from ups_kedro.training.operator import OperatorTask

logger = logging.getLogger(__name__)
STAGE = "operator"


def _config(params: dict[str, Any]) -> OperatorStageConfig:
    return parse(OperatorStageConfig, params, STAGE)


def check_latents(autoencoder_ckpt: dict, *latents: ArrayBundle) -> str:
    """Refuse latents that another encoder produced; returns the encoder hash."""
    return require_meta("encoder_hash", autoencoder_ckpt["lineage"]["encoder_hash"], latents,
                        "encoder of latents",
                        "These latents were written by another autoencoder: re-run "
                        "`kedro run --pipeline autoencoder` so checkpoint and latents agree.")


def build_operator(cfg: OperatorStageConfig, latents_shape: tuple[int, ...],
                   spatial_dims: int = 1):
    """LatentOperator sized from the parameters and the latents' [.., tokens, dim] layout.

    ``spatial_dims``: the autoencoder's (1: a row of tokens, 2: a square token grid)."""
    tokens, dim = int(latents_shape[-2]), int(latents_shape[-1])
    return build_model("latent_operator", follow_data(
        cfg.model, f"{STAGE}.model", latent_dim=dim, latent_tokens=tokens,
        spatial_dims=spatial_dims))


@torch.no_grad()
def latent_origin(autoencoder: torch.nn.Module, normaliser: dict) -> torch.Tensor:
    """``[N, D]``: the latent of the all-zero physical field (the operator's "no signal" state)."""
    mean, std = normaliser_tensors(normaliser)
    enc = autoencoder.cfg.encoder
    zero = ((torch.zeros(1, *enc.grid_shape, enc.in_channels) - mean) / std).float()
    return autoencoder.encode(zero)[0]


@dataclass
class RolloutSelectionMetric:
    """``metric(operator) -> float``: decoded validation rollout nRMSE (PDEBench protocol).

    The same rollout and metric as evaluation, so the epoch kept is the one that rolls out best;
    the one-step loss saturates at the autoencoder's floor and cannot tell drifting epochs apart.
    A plain object (not a closure) so that data-parallel workers can receive it pickled.
    ``fields``: validation fields [N, T, *space, C]; ``truth``: their scored frames.
    """

    autoencoder: torch.nn.Module
    fields: np.ndarray
    truth: np.ndarray
    normaliser: dict
    dt: float
    initial_step: int
    time_stride: int
    batch_size: int

    def __call__(self, operator: torch.nn.Module) -> float:
        device = next(operator.parameters()).device  # the autoencoder stays on the CPU

        def step(z: torch.Tensor) -> torch.Tensor:
            return operator(z.to(device), self.dt).float().to(z.device)

        pred = latent_rollout(self.fields, self.normaliser, self.autoencoder.encode, step,
                              self.autoencoder.decode, self.initial_step, self.time_stride,
                              self.batch_size)
        return float(metrics.nrmse(pred, self.truth).mean())


def rollout_selection_metric(autoencoder: torch.nn.Module, fields_val: ArrayBundle,
                             normaliser: dict, dt: float, time_stride: int,
                             batch_size: int) -> RolloutSelectionMetric:
    """The validation rollout metric of :class:`RolloutSelectionMetric` for ``fields_val``."""
    fields = np.asarray(fields_val.array, dtype=np.float32)
    initial_step = int(fields_val.meta["initial_step"])
    truth = fields[:, scored_frames(fields.shape[1], initial_step, time_stride)]
    return RolloutSelectionMetric(autoencoder, fields, truth, normaliser, dt, initial_step,
                                  time_stride, batch_size)


def train_operator(
    latents_train: ArrayBundle, latents_val: ArrayBundle, autoencoder_checkpoint: dict,
    fields_train: ArrayBundle, fields_val: ArrayBundle, params: dict[str, Any],
) -> dict:
    """Train the LatentOperator on latent transitions; the checkpoint carries its lineage."""
    cfg = _config(params)
    if (ckpt := stage_cache.reuse(STAGE, cfg, project_root() / cfg.state_dir, {
            "latents_train": latents_train, "latents_val": latents_val, "fields_train":
            fields_train, "fields_val": fields_val, "autoencoder": autoencoder_checkpoint})):
        return ckpt
    encoder_hash = check_latents(autoencoder_checkpoint, latents_train, latents_val)
    torch.manual_seed(cfg.train.seed)
    ae_module = freeze(load_module(autoencoder_checkpoint))
    model = build_operator(cfg, latents_train.array.shape, ae_module.cfg.encoder.spatial_dims)
    autoencoder = ae_module if cfg.loss.needs_fields else None
    normaliser = autoencoder_checkpoint["normaliser"]
    origin = latent_origin(ae_module, normaliser)
    dt = cfg.time_stride * float(latents_train.meta["dt"])

    def pairs(latents: ArrayBundle, fields: ArrayBundle, starts=None) -> LatentPairDataset:
        return LatentPairDataset(
            latents.array, horizon=cfg.loss.horizon, time_stride=cfg.time_stride,
            fields=fields.array if cfg.loss.needs_fields else None,
            normaliser=normaliser if cfg.loss.needs_fields else None, starts=starts)

    if cfg.loss.needs_fields:  # the physical losses need the target fields: all start frames
        train = pairs(latents_train, fields_train)
    else:
        first = (cfg.train_first_start if cfg.train_first_start is not None
                 else int(fields_val.meta["initial_step"]) - 1)
        train = JitteredWindowDataset(latents_train.array, cfg.loss.horizon, cfg.time_stride,
                                      cfg.train_start_stride, first_start=first)
    val = pairs(latents_val, fields_val,
                starts=range(0, latents_val.array.shape[1], cfg.val_start_stride))
    selection = (rollout_selection_metric(ae_module, fields_val, normaliser, dt, cfg.time_stride,
                                          cfg.eval.batch_size)
                 if cfg.select_on_rollout else None)
    task = OperatorTask(cfg.loss, dt, autoencoder, origin, rollout_metric=selection)
    autoencoder_run = autoencoder_checkpoint["lineage"].get("mlflow_run_id")
    ckpt, _ = fit_checkpoint(
        STAGE, cfg, model, task, train, val, train_config=cfg.train,
        state_dir=project_root() / cfg.state_dir, upstream_key=encoder_hash,
        upstream_tags={"encoder_hash": encoder_hash, "autoencoder_run": autoencoder_run},
        lineage={"encoder_hash": encoder_hash,
                 "split_manifest_hash": latents_train.meta["split_manifest_hash"],
                 "autoencoder_run_id": autoencoder_run},
        normaliser=normaliser, extra={"dt": dt, "time_stride": cfg.time_stride})
    return ckpt


def evaluate_operator(operator_checkpoint: dict, autoencoder_checkpoint: dict,
                      fields_val: ArrayBundle, params: dict[str, Any]) -> dict:
    """Decoded one-step and full-rollout nRMSE on validation, beside persistence (PDEBench)."""
    cfg = _config(params)
    require_same("encoder", autoencoder_checkpoint["lineage"]["encoder_hash"],
                 operator_checkpoint["lineage"]["encoder_hash"],
                 "The operator was trained on another autoencoder's latents: re-run the operator.")
    operator, ae = load_module(operator_checkpoint), load_module(autoencoder_checkpoint)
    dt, stride = operator_checkpoint["dt"], operator_checkpoint["time_stride"]
    fields = np.asarray(fields_val.array, dtype=np.float32)
    initial_step = int(fields_val.meta["initial_step"])
    normaliser = autoencoder_checkpoint["normaliser"]
    scores, _ = score_variants([operator_variant(operator, dt)], fields, normaliser, ae.encode,
                               ae.decode, initial_step, stride, cfg.eval.batch_size)
    # The original's only metric (one teacher-forced step), decoded and in physical units, as a
    # diagnostic: the gap to the rollout is the error accumulated through feedback.
    one_step = one_step_rollout(fields, normaliser, ae.encode, lambda z: operator(z, dt),
                                ae.decode, initial_step, stride, cfg.eval.batch_size)
    truth = fields[:, scored_frames(fields.shape[1], initial_step, stride)]
    scores["operator_one_step"] = {"nrmse": float(metrics.summarise(one_step, truth)["nrmse"])}
    out = flatten_scores("val", scores)
    out["val_rollout_gain_vs_persistence"] = (
        scores["persistence"]["nrmse"] / max(scores["operator"]["nrmse"], 1e-12))
    log_metrics(STAGE, out)
    logger.info("operator (val): rollout nRMSE %.4g, one-step %.4g, persistence %.4g (%.1fx)",
                scores["operator"]["nrmse"], scores["operator_one_step"]["nrmse"],
                scores["persistence"]["nrmse"], out["val_rollout_gain_vs_persistence"])
    return out
