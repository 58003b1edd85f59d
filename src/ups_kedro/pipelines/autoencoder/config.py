"""Typed parameters of the ``autoencoder`` pipeline (``parameters_autoencoder.yml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ups_kedro.config import Checked, bounded
from ups_kedro.training.config import AutoencoderLossConfig, TrainConfig


@dataclass(frozen=True)
class LatentConfig(Checked):
    """The latent layout every later stage uses: ``tokens`` × ``dim`` per frame."""

    dim: int = bounded(16, ge=1)
    tokens: int = bounded(32, ge=1)


@dataclass(frozen=True)
class EncoderParams(Checked):
    patch_size: int = bounded(8, ge=1)
    stem_hidden: int = bounded(32, ge=1)
    stem_layers: int = bounded(2, ge=0)
    fourier_freqs: tuple[float, ...] = bounded((1.0, 2.0), gt=0)


@dataclass(frozen=True)
class DecoderParams(Checked):
    hidden_dim: int = bounded(32, ge=1)
    num_layers: int = bounded(0, ge=0)
    num_heads: int = bounded(4, ge=1)
    fourier_freqs: tuple[float, ...] = bounded((1.0, 2.0, 4.0, 8.0, 16.0, 32.0), gt=0)
    mlp_hidden: int = bounded(64, ge=1)
    local_features: bool = True
    local_freqs: tuple[float, ...] = bounded((1.0, 2.0, 4.0, 8.0), gt=0)
    local_mode: Literal["blend", "cell"] = "blend"
    linear_skip: bool = False    # unpatch skip path (decoder.skip_patch_size = encoder.patch_size)


@dataclass(frozen=True, kw_only=True)
class AutoencoderStageConfig(Checked):
    WHERE = "autoencoder"

    latent: LatentConfig = field(default_factory=LatentConfig)
    encoder: EncoderParams = field(default_factory=EncoderParams)
    decoder: DecoderParams = field(default_factory=DecoderParams)
    loss: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig)
    train: TrainConfig
    val_frame_stride: int = bounded(4, ge=1)  # validate on every k-th frame (cheaper)
    encode_batch_size: int = bounded(512, ge=1)
    state_dir: str = "data/06_models/state/autoencoder"
    # true: retrain even when up to date (ups_kedro.pipelines.stage_cache); not in the fingerprint
    force: bool = False
