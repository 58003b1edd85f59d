"""Typed parameters of the ``diff_residual`` pipeline (Stage 2)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ups_kedro.config import Checked, bounded
from ups_kedro.models.corrector_config import (
    DiffusionResidualConfig,
    RolloutCorrectorConfig,
    Solver,
    TauSampling,
)
from ups_kedro.training.config import TrainConfig


@dataclass(frozen=True)
class ResidualLossParams(Checked):
    lambda_spectral: float = bounded(0.0, ge=0)
    lambda_relative: float = bounded(0.0, ge=0)
    relative_floor: float = bounded(0.01, ge=0)  # the relative term's floor, residual-RMS units


@dataclass(frozen=True)
class SamplerParams(Checked):
    steps: int = bounded(16, ge=1)
    solver: Solver = "heun"


@dataclass(frozen=True)
class ResidualEvalParams(Checked):
    sampler_steps: tuple[int, ...] = bounded((4, 16), ge=1)
    seed: int = 0
    batch_size: int = bounded(64, ge=1)


@dataclass(frozen=True, kw_only=True)
class CorrectorParams(Checked):
    """The rollout corrector and its unrolled training (``method: corrector``).

    ``model`` is the checkpoint's :class:`RolloutCorrectorConfig` itself; ``latent_dim``,
    ``latent_tokens`` and ``spatial_dims`` are filled in from the latents by the node.
    """

    model: RolloutCorrectorConfig = field(default_factory=RolloutCorrectorConfig)
    #: Unrolled steps of operator + corrector per training window; null: every step left
    #: after ``first_start`` (the evaluation's whole rollout).
    horizon: int | None = bounded(None, ge=1)
    #: First start frame of the unrolled windows; null: ``initial_step - 1`` (where the
    #: evaluation's rollouts start: the given frames before it are never rolled out from).
    first_start: int | None = bounded(None, ge=0)
    train_start_stride: int = bounded(4, ge=1)  # start frames of the unrolled windows
    val_start_stride: int = bounded(8, ge=1)
    relative_floor: float = bounded(0.01, ge=0)  # latent RMS units, see training.corrector
    train: TrainConfig


@dataclass(frozen=True, kw_only=True)
class DiffResidualStageConfig(Checked):
    """``method``: ``corrector`` (trained through its own rollout, the default) or ``edm`` (the
    original's conditional residual diffusion: ``model``, ``tau_sampling``, ``loss``,
    ``sampler``, ``train``, ``val_*``).  ``model`` is the checkpoint's
    :class:`DiffusionResidualConfig` itself (``latent_*``, ``parameterisation`` and
    ``residual_scale`` are set by the node)."""

    WHERE = "diff_residual"

    method: Literal["corrector", "edm"] = "corrector"
    corrector: CorrectorParams
    model: DiffusionResidualConfig
    tau_sampling: TauSampling = field(default_factory=TauSampling)
    loss: ResidualLossParams = field(default_factory=ResidualLossParams)
    sampler: SamplerParams = field(default_factory=SamplerParams)
    train: TrainConfig
    val_start_stride: int = bounded(4, ge=1)
    val_num_sigmas: int = bounded(8, ge=2)
    eval: ResidualEvalParams = field(default_factory=ResidualEvalParams)
    state_dir: str = "data/06_models/state/diff_residual"
    # true: retrain even when up to date (ups_kedro.pipelines.stage_cache); not in the fingerprint
    force: bool = False
