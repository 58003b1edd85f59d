"""Typed parameters of the ``steady_prior`` pipeline (``parameters_steady_prior.yml``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ups_kedro.config import ConfigError
from ups_kedro.pipelines.autoencoder.config import (
    AutoencoderStageConfig,
    DecoderParams,
    EncoderParams,
    LatentConfig,
)
from ups_kedro.training.autoencoder import AutoencoderLossConfig
from ups_kedro.training.config import TrainConfig


@dataclass(frozen=True)
class SteadyAutoencoderParams:
    """The autoencoder of the steady solution (the same model as the ``autoencoder`` stage).

    ``latent.tokens`` must be a perfect square whose root divides the grid: the conditioning
    fields are cut into the same token grid (``training.steady.conditioning_tokens``).
    """

    latent: LatentConfig = field(default_factory=lambda: LatentConfig(dim=8, tokens=16))
    encoder: EncoderParams = field(default_factory=EncoderParams)
    decoder: DecoderParams = field(default_factory=DecoderParams)
    loss: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=10, batch_size=16))
    encode_batch_size: int = 256

    def stage_config(self) -> AutoencoderStageConfig:
        """As the ``autoencoder`` stage's config, for ``build_autoencoder``."""
        return AutoencoderStageConfig(latent=self.latent, encoder=self.encoder,
                                      decoder=self.decoder, loss=self.loss, train=self.train,
                                      val_frame_stride=1, encode_batch_size=self.encode_batch_size)


@dataclass(frozen=True)
class SteadyPriorModelParams:
    """SteadyPrior sizes; ``latent_dim``/``latent_tokens``/``cond_dim`` follow the data."""

    hidden_dim: int = 64
    num_steps: int = 4
    architecture: Literal["mlp", "token_mixer"] = "token_mixer"
    num_layers: int = 2
    num_heads: int = 4


@dataclass(frozen=True)
class SteadyPriorLossParams:
    lambda_intermediate: float = 0.1   # deep supervision of the refinements 1..num_steps-1


@dataclass(frozen=True)
class SteadyEvalParams:
    batch_size: int = 64


@dataclass(frozen=True)
class SteadyPriorStageConfig:
    """The whole ``steady_prior`` block.  ``train.epochs: 0`` switches Stage 4 off.

    The steady data are not configured here: they are ``data_processing.steady``.
    """

    autoencoder: SteadyAutoencoderParams = field(default_factory=SteadyAutoencoderParams)
    model: SteadyPriorModelParams = field(default_factory=SteadyPriorModelParams)
    loss: SteadyPriorLossParams = field(default_factory=SteadyPriorLossParams)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=30, batch_size=16))
    eval: SteadyEvalParams = field(default_factory=SteadyEvalParams)
    torch_threads: int | None = 1   # these models are tiny: one thread is fastest (null: torch's)
    state_dir: str = "data/06_models/state/steady_prior"
    # true: retrain even when up to date (ups_kedro.pipelines.stage_cache); not in the fingerprint
    force: bool = False

    @property
    def enabled(self) -> bool:
        return self.train.epochs > 0

    def validate(self, where: str = "steady_prior") -> None:
        if self.torch_threads is not None and self.torch_threads < 1:
            raise ConfigError(f"{where}.torch_threads must be ≥ 1 or null, got "
                              f"{self.torch_threads}")
        if self.loss.lambda_intermediate < 0:
            raise ConfigError(f"{where}.loss.lambda_intermediate must be ≥ 0, got "
                              f"{self.loss.lambda_intermediate}")
        for key, value in (("eval.batch_size", self.eval.batch_size),
                           ("autoencoder.encode_batch_size", self.autoencoder.encode_batch_size)):
            if value < 1:
                raise ConfigError(f"{where}.{key} must be ≥ 1, got {value}")
