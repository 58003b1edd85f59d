"""Typed parameters of the ``diff_residual`` pipeline (Stage 2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ups_kedro.models.schedules import TauSampling
from ups_kedro.training.config import TrainConfig


@dataclass(frozen=True)
class ResidualModelParams:
    """DiffusionResidual sizes and the noise schedule (in units of the residual's RMS)."""

    architecture: Literal["mlp", "token_mixer"] = "mlp"
    hidden_dim: int = 64
    num_layers: int = 3
    num_heads: int = 4
    noise_embed_dim: int = 16
    mlp_ratio: float = 2.0
    sigma_min: float = 1.0e-4
    sigma_max: float = 1.0
    rho: float = 7.0


@dataclass(frozen=True)
class ResidualLossParams:
    lambda_spectral: float = 0.0
    lambda_relative: float = 0.0
    relative_floor: float = 0.01  # the relative term's floor, in residual-RMS units


@dataclass(frozen=True)
class SamplerParams:
    steps: int = 16
    solver: Literal["heun", "euler"] = "heun"


@dataclass(frozen=True)
class ResidualEvalParams:
    sampler_steps: tuple[int, ...] = (4, 16)
    seed: int = 0
    batch_size: int = 64


@dataclass(frozen=True)
class DiffResidualStageConfig:
    model: ResidualModelParams = field(default_factory=ResidualModelParams)
    tau_sampling: TauSampling = field(default_factory=TauSampling)
    loss: ResidualLossParams = field(default_factory=ResidualLossParams)
    sampler: SamplerParams = field(default_factory=SamplerParams)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=30, batch_size=128))
    val_start_stride: int = 4
    val_num_sigmas: int = 8
    eval: ResidualEvalParams = field(default_factory=ResidualEvalParams)
    state_dir: str = "data/06_models/state/diff_residual"
    # true: retrain even when up to date (ups_kedro.pipelines.stage_cache); not in the fingerprint
    force: bool = False
