"""Typed parameters of the ``autoencoder`` pipeline (``parameters_autoencoder.yml``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ups_kedro.config import Checked, bounded
from ups_kedro.models.autoencoder_config import (
    AnyPointDecoderConfig,
    GridEncoderConfig,
    LatentConfig,
)
from ups_kedro.training.config import AutoencoderLossConfig, TrainConfig


@dataclass(frozen=True, kw_only=True)
class AutoencoderStageConfig(Checked):
    """``encoder``/``decoder`` are the checkpoint's :class:`GridEncoderConfig` and
    :class:`AnyPointDecoderConfig` themselves; their latent sizes follow ``latent`` and their
    grid and channels follow the data (the node fills them in)."""

    WHERE = "autoencoder"

    latent: LatentConfig = field(default_factory=LatentConfig)
    encoder: GridEncoderConfig
    decoder: AnyPointDecoderConfig
    loss: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig)
    train: TrainConfig
    val_frame_stride: int = bounded(4, ge=1)  # validate on every k-th frame (cheaper)
    encode_batch_size: int = bounded(512, ge=1)
    state_dir: str = "data/06_models/state/autoencoder"
    # true: retrain even when up to date (ups_kedro.pipelines.stage_cache); not in the fingerprint
    force: bool = False
