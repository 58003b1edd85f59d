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
class CorrectorModelParams:
    """:class:`~ups_kedro.models.corrector.RolloutCorrector` sizes, form and noise levels."""

    kind: Literal["deterministic", "refiner"] = "deterministic"
    hidden_dim: int = 64
    num_blocks: int = 4
    kernel_size: int = 5
    refine_steps: int = 1
    sigma_min: float = 2.0e-4
    sigma_max: float = 2.0e-3
    num_samples: int = 1


@dataclass(frozen=True)
class CorrectorParams:
    """The rollout corrector and its unrolled training (``method: corrector``)."""

    model: CorrectorModelParams = field(default_factory=CorrectorModelParams)
    #: Unrolled steps of operator + corrector per training window; null: every step left
    #: after ``first_start`` (the evaluation's whole rollout).
    horizon: int | None = None
    #: First start frame of the unrolled windows; null: ``initial_step - 1`` (where the
    #: evaluation's rollouts start: the given frames before it are never rolled out from).
    first_start: int | None = None
    train_start_stride: int = 4  # start frames of the unrolled windows (every k-th)
    val_start_stride: int = 8
    relative_floor: float = 0.01  # latent RMS units, see ups_kedro.training.corrector
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=6, batch_size=16))


@dataclass(frozen=True)
class DiffResidualStageConfig:
    """``method``: ``corrector`` (trained through its own rollout, the default) or ``edm`` (the
    original's conditional residual diffusion: ``model``, ``tau_sampling``, ``loss``,
    ``sampler``, ``train``, ``val_*``)."""

    method: Literal["corrector", "edm"] = "corrector"
    corrector: CorrectorParams = field(default_factory=CorrectorParams)
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
