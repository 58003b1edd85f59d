"""Typed parameters of the ``inference`` pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ups_kedro.config import Checked, ConfigError, bounded
from ups_kedro.evaluation.suite import VariantParams


@dataclass(frozen=True)
class InitialConditionParams(Checked):
    path: str  # .h5/.hdf5 (PDEBench layout) or .npy on the model's grid
    samples: tuple[int, ...] | None = (0, 1, 2, 3)  # null: every sample in the file
    frame: int = 9  # HDF5 time-dependent files: the frame to start from
    space_stride: int = bounded(1, ge=1)  # HDF5: keep every k-th point (data's downsample_space)
    initial_guess: str | None = None  # steady mode: optional initial-guess field file


@dataclass(frozen=True)
class CheckpointPaths:
    """``source: checkpoints``: the stage checkpoints to use (absent optional ones: skipped)."""

    autoencoder: str = "data/06_models/autoencoder.pt"
    operator: str = "data/06_models/operator.pt"
    diff_residual: str | None = "data/06_models/diff_residual.pt"
    consistency_distill: str | None = "data/06_models/consistency_distill.pt"
    steady_autoencoder: str = "data/06_models/steady_autoencoder.pt"
    steady_prior: str = "data/06_models/steady_prior.pt"


@dataclass(frozen=True)
class InferenceConfig(Checked):
    WHERE = "inference"

    initial_condition: InitialConditionParams
    mode: Literal["transient", "steady"] = "transient"
    source: Literal["champion", "checkpoints"] = "champion"
    model_name: str = "ups_kedro_surrogate"
    alias: str = "champion"
    checkpoints: CheckpointPaths = field(default_factory=CheckpointPaths)
    variant: str | None = None  # null: the champion's promoted variant / operator
    variants: VariantParams = field(default_factory=lambda: VariantParams(solver_reference=False))
    n_steps: int = bounded(30, ge=1)  # transient: rolled-out steps
    steady_steps: int | None = None  # steady: refinements (null: all)

    def check(self, where: str) -> None:
        if self.mode == "steady" and self.source == "champion":
            raise ConfigError(f"{where}: steady mode reads the steady prior from "
                              f"{where}.checkpoints (the registry holds the transient surrogate); "
                              "set source: checkpoints")
