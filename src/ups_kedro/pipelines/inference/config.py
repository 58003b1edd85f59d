"""Typed parameters of the ``inference`` pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ups_kedro.config import Checked, ConfigError, bounded
from ups_kedro.evaluation.suite import VariantParams
from ups_kedro.stages import BASE_STAGES, CORRECTORS, default_checkpoint_path


@dataclass(frozen=True)
class InitialConditionParams(Checked):
    path: str  # .h5/.hdf5 (PDEBench layout) or .npy on the model's grid
    samples: tuple[int, ...] | None = (0, 1, 2, 3)  # null: every sample in the file
    frame: int = 9  # HDF5 time-dependent files: the frame to start from
    space_stride: int = bounded(1, ge=1)  # HDF5: keep every k-th point (data's downsample_space)
    initial_guess: str | None = None  # steady mode: optional initial-guess field file


#: Stages whose checkpoint inference can read (``inference.checkpoints.<stage>``).
STEADY_STAGES: tuple[str, ...] = ("steady_autoencoder", "steady_prior")


def default_checkpoint_paths() -> dict[str, str | None]:
    """``{stage: path}`` where the catalog writes each checkpoint in the default data folder;
    the corrector stages come from the registry (:mod:`ups_kedro.stages`)."""
    stages = (*BASE_STAGES, *(c.name for c in CORRECTORS), *STEADY_STAGES)
    return {stage: default_checkpoint_path(stage) for stage in stages}


@dataclass(frozen=True)
class InferenceConfig(Checked):
    WHERE = "inference"

    initial_condition: InitialConditionParams
    mode: Literal["transient", "steady"] = "transient"
    source: Literal["champion", "checkpoints"] = "champion"
    model_name: str = "ups_kedro_surrogate"
    alias: str = "champion"
    # source: checkpoints (and steady mode): {stage: path}; a stage left out reads its default
    # path, a corrector set to null is left out
    checkpoints: dict[str, str | None] = field(default_factory=default_checkpoint_paths)
    variant: str | None = None  # null: the champion's promoted variant / operator
    variants: VariantParams = field(default_factory=lambda: VariantParams(solver_reference=False))
    n_steps: int = bounded(30, ge=1)  # transient: rolled-out steps
    steady_steps: int | None = None  # steady: refinements (null: all)

    def check(self, where: str) -> None:
        unknown = sorted(set(self.checkpoints) - set(default_checkpoint_paths()))
        if unknown:
            raise ConfigError(f"{where}.checkpoints.{unknown[0]}: not a stage with a checkpoint; "
                              f"choose among {', '.join(default_checkpoint_paths())}")
        if self.mode == "steady" and self.source == "champion":
            raise ConfigError(f"{where}: steady mode reads the steady prior from "
                              f"{where}.checkpoints (the registry holds the transient surrogate); "
                              "set source: checkpoints")
