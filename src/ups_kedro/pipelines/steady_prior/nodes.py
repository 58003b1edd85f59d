"""Nodes of the ``steady_prior`` pipeline (Stage 4).

Data come from the ``data_processing`` pipeline (block ``data_processing.steady``): a built-in
Darcy problem (or a real PDEBench Darcy file) split into prepared solutions and coefficients
with a training-only normaliser (datasets ``data_processing.steady_*``).  This stage trains a
small autoencoder of the steady solution, and the SteadyPrior to carry the mean training latent
``z0`` to the encoded solution ``z*`` given conditioning tokens (normalised ``log nu`` and the
forcing).  Evaluation decodes the prediction after every refinement and scores it against the
solver's solution on validation, beside the decoded initial guess and the training-mean field.

The stage skips (every node writes a small ``skipped`` record instead of its artifact, and the
metrics say why) when ``steady_prior.train.epochs`` is 0, or when ``data_processing`` wrote
skipped records for the steady data (``data_processing.steady.enabled: false``); the latter is
logged as a warning, since the stage was asked to train.
The predictor and its scoring (also used by evaluation and inference) are library code:
:mod:`ups_kedro.evaluation.steady`.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from ups_kedro.config import ConfigError, follow_data, parse, to_dict
from ups_kedro.data.steady import is_skipped, skip_reason, skipped_record
from ups_kedro.data.torch_data import FrameDataset, normaliser_tensors
from ups_kedro.datasets.array_dataset import ArrayBundle
from ups_kedro.evaluation.steady import (
    encode_solutions,
    score_steady,
    steady_conditioning,
    torch_threads,
)
from ups_kedro.models.builders import build_autoencoder
from ups_kedro.models.registry import build_model
from ups_kedro.paths import project_root
from ups_kedro.pipelines import stage_cache
from ups_kedro.pipelines.lineage import make_lineage, require_meta, require_same
from ups_kedro.pipelines.steady_prior.config import SteadyPriorStageConfig
from ups_kedro.pipelines.tracking import log_metrics, set_tags
from ups_kedro.pipelines.train_stage import fit_checkpoint
from ups_kedro.training.artifacts import freeze, load_module, module_hash
from ups_kedro.training.autoencoder import AutoencoderTask
from ups_kedro.training.steady import SteadyLatentDataset, SteadyPriorTask, mean_initial_guess

logger = logging.getLogger(__name__)
STAGE = "steady_prior"
AE_STAGE = f"{STAGE}/autoencoder"   # its per-epoch metrics: steady_prior/autoencoder/<name>
SKIP_REASON = "steady_prior.train.epochs is 0: Stage 4 is switched off"
NO_DATA_REASON = "no steady data: data_processing wrote skipped records for it"


def _config(params: dict[str, Any]) -> SteadyPriorStageConfig:
    if isinstance(params, dict) and "data" in params:
        raise ConfigError("steady_prior.data has moved to data_processing.steady (the steady "
                          "data are prepared by the data_processing pipeline): move the block "
                          "there")
    return parse(SteadyPriorStageConfig, params, STAGE)


# ------------------------------------------------------------------------------------------------
# skipped-stage records
# ------------------------------------------------------------------------------------------------
def _skipped(what: str, reason: str) -> dict:
    return skipped_record(STAGE, what, reason)


def _skipped_checkpoint(what: str, reason: str) -> dict:
    """A checkpoint-shaped record that says the stage was off (no weights, nothing to load)."""
    return {"kind": "skipped", "config": {}, "state_dict": {}, **_skipped(what, reason),
            "lineage": make_lineage(STAGE, {"skipped": True})}


def _skip(cfg: SteadyPriorStageConfig, data: dict[str, Any], own: dict[str, Any] | None = None,
          announce: bool = False) -> str | None:
    """Why this node skips (None: it runs).

    Args:
        data: the node's ``data_processing.steady_*`` inputs; all skipped records (the steady
            data were switched off) → skip.
        own: the node's inputs written by this stage; a skipped one while the stage is on and
            the data exist is a partial re-run of a skipped stage → ``ValueError``.
        announce: log the skip and tag the MLflow run (the first node of the stage).
    """
    if not cfg.enabled:
        reason = SKIP_REASON
        if announce:
            logger.info("steady_prior: skipped (%s)", reason)
    else:
        missing = [name for name, record in data.items() if is_skipped(record)]
        if missing and len(missing) < len(data):
            raise ValueError(
                f"steady_prior: {', '.join(missing)} are 'skipped' records but "
                f"{', '.join(sorted(set(data) - set(missing)))} are not: the steady data come "
                "from two data_processing runs; re-run `kedro run --pipeline data_processing "
                "--tags steady`")
        if not missing:
            stale = [name for name, record in (own or {}).items() if is_skipped(record)]
            if stale:
                raise ValueError(
                    f"steady_prior: {', '.join(stale)} were written by a run with the stage "
                    "skipped; re-run the whole stage: `kedro run --pipeline steady_prior`")
            return None
        reason = f"{NO_DATA_REASON} ({skip_reason(data[missing[0]]) or 'skipped records'})"
        if announce:
            logger.warning(
                "steady_prior: SKIPPED although steady_prior.train.epochs is %d: %s. Set "
                "data_processing.steady.enabled: true and run `kedro run --pipeline "
                "data_processing --tags steady`, or set steady_prior.train.epochs: 0 to switch "
                "Stage 4 off.", cfg.train.epochs, reason)
    if announce:
        set_tags({"ups.steady_prior.skipped": "true", "ups.steady_prior.skip_reason": reason})
    return reason


# ------------------------------------------------------------------------------------------------
# (2) the autoencoder of the steady solution
# ------------------------------------------------------------------------------------------------
def _check_split(normaliser: dict, *bundles: ArrayBundle) -> str:
    """The split-manifest hash every input shares (refuses a mix of two data runs)."""
    return require_meta("split_manifest_hash", normaliser["split_manifest_hash"], bundles,
                        "split manifest",
                        "Re-run `kedro run --pipeline data_processing --tags steady` so data and "
                        "normaliser agree.")


def train_steady_autoencoder(solutions_train: ArrayBundle, solutions_val: ArrayBundle,
                             normaliser: dict, params: dict[str, Any]) -> dict:
    """Train the autoencoder of the steady solution; the checkpoint carries its encoder hash."""
    cfg = _config(params)
    reason = _skip(cfg, {"solutions_train": solutions_train, "solutions_val": solutions_val,
                         "normaliser": normaliser}, announce=True)
    if reason:
        return _skipped_checkpoint("autoencoder_checkpoint", reason)
    manifest_hash = _check_split(normaliser, solutions_train, solutions_val)
    ae_cfg = cfg.autoencoder
    if (ckpt := stage_cache.reuse(AE_STAGE, ae_cfg, project_root() / cfg.state_dir / "autoencoder",
                                  {"solutions_train": solutions_train, "solutions_val":
                                   solutions_val, "normaliser": normaliser}, force=cfg.force)):
        return ckpt
    with torch_threads(cfg.torch_threads):
        torch.manual_seed(ae_cfg.train.seed)
        model = build_autoencoder(ae_cfg, solutions_train.array.shape)
        mean, std = normaliser_tensors(normaliser)
        ckpt, result = fit_checkpoint(
            AE_STAGE, ae_cfg, model, AutoencoderTask(ae_cfg.loss, mean, std),
            FrameDataset(solutions_train.array, normaliser),
            FrameDataset(solutions_val.array, normaliser), train_config=ae_cfg.train,
            state_dir=project_root() / cfg.state_dir / "autoencoder",
            upstream_key=manifest_hash, upstream_tags={"split_manifest": manifest_hash},
            lineage={"split_manifest_hash": manifest_hash,
                     "source_fingerprint": solutions_train.meta["source_fingerprint"]},
            normaliser=normaliser,
            extra={"fields_meta": {k: solutions_train.meta[k] for k in
                                   ("axes", "channels", "coords", "beta")}})
    ckpt["lineage"]["encoder_hash"] = module_hash(load_module(ckpt).encoder)
    logger.info("steady_prior autoencoder: best epoch %d, val loss %.3e, encoder hash %s",
                result.best_epoch, result.best_val_loss, ckpt["lineage"]["encoder_hash"])
    return ckpt


# ------------------------------------------------------------------------------------------------
# (3) the steady prior
# ------------------------------------------------------------------------------------------------
def build_steady_prior(cfg: SteadyPriorStageConfig, latent_tokens: int, latent_dim: int,
                       cond_dim: int):
    """An untrained SteadyPrior sized from the parameters and the latent/conditioning layout."""
    return build_model("steady_prior", follow_data(
        cfg.model, f"{STAGE}.model", latent_dim=latent_dim, latent_tokens=latent_tokens,
        cond_dim=cond_dim))


def train_steady_prior(
    autoencoder_checkpoint: dict, solutions_train: ArrayBundle, solutions_val: ArrayBundle,
    coefficients_train: ArrayBundle, coefficients_val: ArrayBundle, normaliser: dict,
    params: dict[str, Any],
) -> dict:
    """Train the prior z0 → z* on encoded steady solutions; the checkpoint stores z0."""
    cfg = _config(params)
    reason = _skip(cfg, {"solutions_train": solutions_train, "solutions_val": solutions_val,
                         "coefficients_train": coefficients_train,
                         "coefficients_val": coefficients_val, "normaliser": normaliser},
                   {"autoencoder_checkpoint": autoencoder_checkpoint})
    if reason:
        return _skipped_checkpoint("checkpoint", reason)
    if (ckpt := stage_cache.reuse(STAGE, cfg, project_root() / cfg.state_dir / "prior", {
            "autoencoder": autoencoder_checkpoint, "solutions_train": solutions_train,
            "solutions_val": solutions_val, "coefficients_train": coefficients_train,
            "coefficients_val": coefficients_val, "normaliser": normaliser})):
        return ckpt
    manifest_hash = _check_split(normaliser, solutions_train, solutions_val, coefficients_train,
                                 coefficients_val)
    lineage = autoencoder_checkpoint["lineage"]
    require_same("split manifest of the autoencoder", manifest_hash,
                 lineage.get("split_manifest_hash"),
                 "The steady autoencoder was trained on another split: re-run the pipeline.")
    encoder_hash = lineage["encoder_hash"]
    autoencoder = freeze(load_module(autoencoder_checkpoint))
    require_same("encoder", encoder_hash, module_hash(autoencoder.encoder),
                 "The steady autoencoder checkpoint is corrupt or was edited.")
    tokens = autoencoder.cfg.encoder.latent_tokens
    batch = cfg.autoencoder.encode_batch_size
    with torch_threads(cfg.torch_threads):
        z_train = encode_solutions(autoencoder, solutions_train.array, normaliser, batch)
        z_val = encode_solutions(autoencoder, solutions_val.array, normaliser, batch)
        cond_train = steady_conditioning(coefficients_train.array, coefficients_train.meta["beta"],
                                         normaliser, tokens)
        cond_val = steady_conditioning(coefficients_val.array, coefficients_val.meta["beta"],
                                       normaliser, tokens)
        z0 = mean_initial_guess(z_train)  # training split only; stored for inference
        torch.manual_seed(cfg.train.seed)
        prior = build_steady_prior(cfg, tokens, int(z_train.shape[-1]), int(cond_train.shape[-1]))
        ckpt, result = fit_checkpoint(
            STAGE, cfg, prior, SteadyPriorTask(cfg.loss.lambda_intermediate),
            SteadyLatentDataset(z_train, cond_train, z0), SteadyLatentDataset(z_val, cond_val, z0),
            train_config=cfg.train, state_dir=project_root() / cfg.state_dir / "prior",
            fingerprint_config={"model": to_dict(cfg.model), "loss": to_dict(cfg.loss)},
            upstream_key=f"{encoder_hash}|{manifest_hash}",
            upstream_tags={"encoder_hash": encoder_hash, "split_manifest": manifest_hash,
                           "autoencoder_run": lineage.get("mlflow_run_id")},
            lineage={"encoder_hash": encoder_hash, "split_manifest_hash": manifest_hash,
                     "source_fingerprint": solutions_train.meta["source_fingerprint"],
                     "autoencoder_run_id": lineage.get("mlflow_run_id")},
            normaliser=normaliser,
            extra={"z0": z0.clone(), "grid_shape": list(autoencoder.cfg.encoder.grid_shape),
                   "beta": float(coefficients_train.meta["beta"])})
    logger.info("steady_prior: best epoch %d, val loss %.3e (encoder %s)", result.best_epoch,
                result.best_val_loss, encoder_hash)
    return ckpt


def evaluate_steady_prior(checkpoint: dict, autoencoder_checkpoint: dict,
                          solutions_train: ArrayBundle, solutions_val: ArrayBundle,
                          coefficients_val: ArrayBundle, params: dict[str, Any]) -> dict:
    """Decoded val nRMSE after each refinement, beside the initial guess and the mean field."""
    cfg = _config(params)
    reason = _skip(cfg, {"solutions_train": solutions_train, "solutions_val": solutions_val,
                         "coefficients_val": coefficients_val},
                   {"checkpoint": checkpoint, "autoencoder_checkpoint": autoencoder_checkpoint})
    if reason:
        return _skipped("metrics", reason)
    scores = score_steady(checkpoint, autoencoder_checkpoint, solutions_train, solutions_val,
                          coefficients_val, cfg.eval.batch_size, cfg.torch_threads)
    by_step = scores.pop("nrmse_by_step")
    out: dict[str, Any] = {f"val_{k}": v for k, v in scores.items() if k != "n"}
    log_metrics(STAGE, out)
    for k, v in enumerate(by_step):  # the error-vs-refinement curve as one MLflow series
        log_metrics(STAGE, {"val_nrmse_by_step": v}, step=k)
    logger.info("steady_prior (val, %d samples): nRMSE %.4g after %d steps; initial guess %.4g, "
                "mean field %.4g, reconstruction floor %.4g; by step %s", scores["n"],
                by_step[-1], len(by_step) - 1, by_step[0], out["val_nrmse_mean_field"],
                out["val_recon_nrmse"],
                [round(v, 4) for v in by_step])
    return {**out, "skipped": False, "num_steps": len(by_step) - 1, "n_val": scores["n"],
            "nrmse_by_step": by_step, "encoder_hash": checkpoint["lineage"]["encoder_hash"]}
