"""Typed parameters of the ``operator`` pipeline (``parameters_operator.yml``)."""

from __future__ import annotations

from dataclasses import dataclass, field

from ups_kedro.training.config import TrainConfig
from ups_kedro.training.operator import OperatorLossConfig


@dataclass(frozen=True)
class OperatorModelParams:
    """LatentOperator sizes.  ``input_dim``/``tokens`` default to the latents' own layout; if
    set, they must match it (a mismatch is a configuration error before any training)."""

    input_dim: int | None = None
    tokens: int | None = None
    architecture: str = "conv_stack"
    hidden_dim: int = 64
    group_size: int = 12
    num_heads: int = 4
    attention: str = "relpos"
    window: int | None = None
    depths: tuple[int, ...] = (4,)
    mlp_ratio: float = 1.0
    time_embed_dim: int = 64
    dropout: float = 0.0
    kernel_size: int = 5     # conv_stack only


@dataclass(frozen=True)
class OperatorEvalParams:
    batch_size: int = 64


@dataclass(frozen=True)
class OperatorStageConfig:
    model: OperatorModelParams = field(default_factory=OperatorModelParams)
    loss: OperatorLossConfig = field(default_factory=OperatorLossConfig)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, batch_size=64))
    time_stride: int = 1
    val_start_stride: int = 4   # validate on every 4th start frame (cheaper, same distribution)
    train_start_stride: int = 1  # one random training window start per n frames (1: all)
    train_first_start: int | None = 0  # earliest training window start; None: where the
                                       # evaluation's rollouts start (initial_step − 1)
    select_on_rollout: bool = True  # best epoch by the decoded validation rollout nRMSE
    eval: OperatorEvalParams = field(default_factory=OperatorEvalParams)
    state_dir: str = "data/06_models/state/operator"
    # true: retrain even when up to date (ups_kedro.pipelines.stage_cache); not in the fingerprint
    force: bool = False

    def validate(self) -> None:
        if self.time_stride < 1:
            raise ValueError(f"time_stride must be ≥ 1, got {self.time_stride}")
        if self.train_start_stride < 1:
            raise ValueError(f"train_start_stride must be ≥ 1, got {self.train_start_stride}")
