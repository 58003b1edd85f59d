"""Typed parameters of the ``autoencoder`` pipeline (``parameters_autoencoder.yml``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ups_kedro.training.autoencoder import AutoencoderLossConfig
from ups_kedro.training.config import TrainConfig


@dataclass(frozen=True)
class LatentConfig:
    """The latent layout every later stage uses: ``tokens`` × ``dim`` per frame."""

    dim: int = 16
    tokens: int = 32


@dataclass(frozen=True)
class EncoderParams:
    patch_size: int = 8
    stem_hidden: int = 32
    stem_layers: int = 2
    fourier_freqs: tuple[float, ...] = (1.0, 2.0)


@dataclass(frozen=True)
class DecoderParams:
    hidden_dim: int = 32
    num_layers: int = 0
    num_heads: int = 4
    fourier_freqs: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
    mlp_hidden: int = 64
    local_features: bool = True
    local_freqs: tuple[float, ...] = (1.0, 2.0, 4.0, 8.0)
    local_mode: str = "blend"    # parameters_autoencoder.yml picks "cell"; steady_prior shares this
    linear_skip: bool = False    # unpatch skip path (decoder.skip_patch_size = encoder.patch_size)


@dataclass(frozen=True)
class AutoencoderStageConfig:
    latent: LatentConfig = field(default_factory=LatentConfig)
    encoder: EncoderParams = field(default_factory=EncoderParams)
    decoder: DecoderParams = field(default_factory=DecoderParams)
    loss: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, batch_size=128))
    val_frame_stride: int = 4       # validate on every 4th frame (cheaper, same distribution)
    encode_batch_size: int = 512
    state_dir: str = "data/06_models/state/autoencoder"
    # true: retrain even when up to date (ups_kedro.pipelines.stage_cache); not in the fingerprint
    force: bool = False
