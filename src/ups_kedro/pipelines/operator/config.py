"""Typed parameters of the ``operator`` pipeline (``parameters_operator.yml``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ups_kedro.config import Checked, bounded
from ups_kedro.models.operator_config import LatentOperatorConfig
from ups_kedro.training.config import OperatorLossConfig, TrainConfig


@dataclass(frozen=True)
class OperatorEvalParams(Checked):
    batch_size: int = bounded(64, ge=1)


@dataclass(frozen=True, kw_only=True)
class OperatorStageConfig(Checked):
    """``model`` is the checkpoint's :class:`LatentOperatorConfig` itself: ``latent_dim``,
    ``latent_tokens`` (null: follow the latents; if set, they must match them) and
    ``spatial_dims`` are filled in from the autoencoder by the node."""

    WHERE = "operator"

    model: LatentOperatorConfig
    loss: OperatorLossConfig = field(default_factory=OperatorLossConfig)
    train: TrainConfig  # required: how long a stage trains is always a deliberate choice
    time_stride: int = bounded(1, ge=1)
    val_start_stride: int = bounded(4, ge=1)  # validate on every k-th start frame (cheaper)
    train_start_stride: int = bounded(1, ge=1)  # one random training window start per k frames
    train_first_start: int | None = bounded(0, ge=0)  # earliest training window start; None:
                                                      # where the evaluation's rollouts start
    select_on_rollout: bool = True  # best epoch by the decoded validation rollout nRMSE
    eval: OperatorEvalParams = field(default_factory=OperatorEvalParams)
    state_dir: str = "data/06_models/state/operator"
    # true: retrain even when up to date (ups_kedro.pipelines.stage_cache); not in the fingerprint
    force: bool = False
