"""Typed parameters of the ``evaluation`` pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ups_kedro.config import ConfigError
from ups_kedro.evaluation.suite import VariantParams


@dataclass(frozen=True)
class FigureParams:
    n_examples: int = 3  # trajectories in the space-time figure
    variants: tuple[str, ...] | None = None  # null: persistence, operator and the best two others


@dataclass(frozen=True)
class EvaluationConfig:
    split: Literal["val", "test"] = "test"
    max_trajectories: int | None = None  # null: the whole split
    variants: VariantParams = field(default_factory=VariantParams)
    figures: FigureParams = field(default_factory=FigureParams)

    def validate(self, where: str = "evaluation") -> None:
        if self.max_trajectories is not None and self.max_trajectories < 1:
            raise ConfigError(f"{where}.max_trajectories must be ≥ 1 or null (the whole split), "
                              f"got {self.max_trajectories}")
