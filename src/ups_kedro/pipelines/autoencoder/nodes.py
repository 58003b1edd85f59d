"""Nodes of the ``autoencoder`` pipeline: train encoder/decoder, write latent tensors."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import torch

from ups_kedro.config import parse
from ups_kedro.data.torch_data import FrameDataset, normaliser_tensors
from ups_kedro.datasets.array_dataset import ArrayBundle, ChunkedArray
from ups_kedro.evaluation import metrics
from ups_kedro.evaluation.rollout import reconstruct
from ups_kedro.models.builders import build_autoencoder
from ups_kedro.paths import project_root
from ups_kedro.pipelines.autoencoder.config import AutoencoderStageConfig
from ups_kedro.pipelines import stage_cache
from ups_kedro.pipelines.lineage import require_same
from ups_kedro.pipelines.tracking import log_metrics
from ups_kedro.pipelines.train_stage import fit_checkpoint
from ups_kedro.training.artifacts import load_module, module_hash
from ups_kedro.training.autoencoder import AutoencoderTask

logger = logging.getLogger(__name__)
STAGE = "autoencoder"


def _config(params: dict[str, Any]) -> AutoencoderStageConfig:
    return parse(AutoencoderStageConfig, params, STAGE)


def train_autoencoder(
    fields_train: ArrayBundle, fields_val: ArrayBundle, normaliser: dict, params: dict[str, Any]
) -> dict:
    """Train encoder + decoder on reconstruction and latent consistency; return the checkpoint."""
    cfg = _config(params)
    if (ckpt := stage_cache.reuse(STAGE, cfg, project_root() / cfg.state_dir, {
            "fields_train": fields_train, "fields_val": fields_val, "normaliser": normaliser})):
        return ckpt
    manifest_hash = fields_train.meta["split_manifest_hash"]
    require_same("split manifest", manifest_hash, fields_val.meta["split_manifest_hash"],
                 "Re-run data_processing so train and val come from one split.")
    require_same("normaliser", manifest_hash, normaliser["split_manifest_hash"],
                 "Re-run data_processing: the normaliser belongs to another split.")
    torch.manual_seed(cfg.train.seed)
    model = build_autoencoder(cfg, fields_train.array.shape)
    mean, std = normaliser_tensors(normaliser)
    train = FrameDataset(fields_train.array, normaliser)
    val = FrameDataset(fields_val.array, normaliser, frame_stride=cfg.val_frame_stride)
    ckpt, result = fit_checkpoint(
        STAGE, cfg, model, AutoencoderTask(cfg.loss, mean, std), train, val,
        train_config=cfg.train, state_dir=project_root() / cfg.state_dir,
        upstream_key=manifest_hash, upstream_tags={"split_manifest": manifest_hash},
        lineage={"split_manifest_hash": manifest_hash,
                 "source_fingerprint": fields_train.meta["source_fingerprint"]},
        normaliser=normaliser,
        extra={"fields_meta": {k: fields_train.meta[k] for k in
                               ("axes", "channels", "dt", "t", "coords", "initial_step")}})
    ckpt["lineage"]["encoder_hash"] = module_hash(load_module(ckpt).encoder)
    if result.epochs_run == 0:  # e.g. the skip path: the initial inverse pair is kept as is
        logger.info("autoencoder: not trained (train.epochs = 0), encoder hash %s",
                    ckpt["lineage"]["encoder_hash"])
    else:
        logger.info("autoencoder: best epoch %d, val loss %.3e, encoder hash %s",
                    result.best_epoch, result.best_val_loss, ckpt["lineage"]["encoder_hash"])
    return ckpt


def _encoded_chunks(model, fields: np.ndarray, normaliser: dict, batch: int):
    """Yield latents [n, T, N_tok, D] for consecutive chunks of trajectories."""
    mean, std = normaliser_tensors(normaliser)
    per_chunk = max(1, batch // fields.shape[1])
    with torch.no_grad():
        for start in range(0, fields.shape[0], per_chunk):
            u = torch.from_numpy(np.asarray(fields[start:start + per_chunk], dtype=np.float32))
            n, t = u.shape[:2]
            z = model.encode(((u - mean) / std).reshape(n * t, *u.shape[2:]))
            yield z.reshape(n, t, *z.shape[1:]).numpy()


def encode_latents(
    checkpoint: dict, fields_train: ArrayBundle, fields_val: ArrayBundle, fields_test: ArrayBundle,
    params: dict[str, Any],
) -> tuple[ChunkedArray, ChunkedArray, ChunkedArray]:
    """Latent tensors per split ([trajectories, time, tokens, dim]), stamped with the encoder hash."""
    cfg = _config(params)
    model = load_module(checkpoint)
    encoder_hash = checkpoint["lineage"]["encoder_hash"]
    require_same("encoder", encoder_hash, module_hash(model.encoder),
                 "The autoencoder checkpoint is corrupt or was edited.")
    encoder_config = checkpoint["config"]["encoder"]  # tokens may follow the data (latent.tokens)
    outputs = []
    for bundle in (fields_train, fields_val, fields_test):
        shape = (*bundle.array.shape[:2], encoder_config["latent_tokens"],
                 encoder_config["latent_dim"])
        meta = {**{k: bundle.meta[k] for k in ("split", "indices", "t", "dt", "initial_step",
                                               "split_manifest_hash", "source_fingerprint")},
                "axes": ["sample", "time", "token", "dim"], "encoder_hash": encoder_hash}
        outputs.append(ChunkedArray(shape, "float32", _encoded_chunks(
            model, bundle.array, checkpoint["normaliser"], cfg.encode_batch_size), meta))
    return tuple(outputs)  # type: ignore[return-value]


def evaluate_reconstruction(checkpoint: dict, fields_val: ArrayBundle) -> dict:
    """Decoded reconstruction error on the validation split, PDEBench metric definitions."""
    model = load_module(checkpoint)
    fields = np.asarray(fields_val.array)
    recon = reconstruct(fields, checkpoint["normaliser"], model.encode, model.decode)
    summary = metrics.summarise(recon, fields, horizons=())
    out = {"val_recon_nrmse": summary["nrmse"], "val_recon_rmse": summary["rmse"],
           "val_recon_max_error": summary["max_error"],
           "val_recon_frmse_high": summary.get("frmse_high", float("nan"))}
    log_metrics(STAGE, out)
    logger.info("autoencoder reconstruction (val): %s", out)
    return out
