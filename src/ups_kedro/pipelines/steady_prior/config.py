"""Typed parameters of the ``steady_prior`` pipeline (``parameters_steady_prior.yml``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ups_kedro.config import Checked, bounded
from ups_kedro.models.steady_prior_config import SteadyPriorConfig
from ups_kedro.models.autoencoder_config import (
    AnyPointDecoderConfig,
    GridEncoderConfig,
    LatentConfig,
)
from ups_kedro.training.config import AutoencoderLossConfig, TrainConfig


@dataclass(frozen=True, kw_only=True)
class SteadyAutoencoderParams(Checked):
    """The autoencoder of the steady solution (the same model as the ``autoencoder`` stage).

    It is passed to ``models.builders.build_autoencoder`` as is (``latent``/``encoder``/``decoder``).
    ``latent.tokens`` must be a perfect square whose root divides the grid: the conditioning
    fields are cut into the same token grid (``training.steady.conditioning_tokens``).
    """

    latent: LatentConfig = field(default_factory=LatentConfig)
    encoder: GridEncoderConfig
    decoder: AnyPointDecoderConfig
    loss: AutoencoderLossConfig = field(default_factory=AutoencoderLossConfig)
    train: TrainConfig
    encode_batch_size: int = bounded(256, ge=1)


@dataclass(frozen=True)
class SteadyPriorLossParams(Checked):
    lambda_intermediate: float = bounded(0.1, ge=0)  # deep supervision of refinements 1..S-1


@dataclass(frozen=True)
class SteadyEvalParams(Checked):
    batch_size: int = bounded(64, ge=1)


@dataclass(frozen=True, kw_only=True)
class SteadyPriorStageConfig(Checked):
    """The whole ``steady_prior`` block.  ``train.epochs: 0`` switches Stage 4 off.

    ``model`` is the checkpoint's :class:`SteadyPriorConfig` itself (``latent_dim``,
    ``latent_tokens`` and ``cond_dim`` follow the data and are set by the node).  The steady
    data are not configured here: they are ``data_processing.steady``.
    """

    WHERE = "steady_prior"

    autoencoder: SteadyAutoencoderParams
    model: SteadyPriorConfig
    loss: SteadyPriorLossParams = field(default_factory=SteadyPriorLossParams)
    train: TrainConfig
    eval: SteadyEvalParams = field(default_factory=SteadyEvalParams)
    torch_threads: int | None = bounded(1, ge=1)  # tiny models: one thread is fastest (null:
                                                  # torch's default)
    state_dir: str = "data/06_models/state/steady_prior"
    # true: retrain even when up to date (ups_kedro.pipelines.stage_cache); not in the fingerprint
    force: bool = False

    @property
    def enabled(self) -> bool:
        return self.train.epochs > 0
