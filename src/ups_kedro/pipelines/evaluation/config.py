"""Typed parameters of the ``evaluation`` pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ups_kedro.config import Checked, bounded
from ups_kedro.evaluation.suite import VariantParams


@dataclass(frozen=True)
class FigureParams(Checked):
    n_examples: int = bounded(3, ge=0)  # trajectories in the space-time figure
    variants: tuple[str, ...] | None = None  # null: persistence, operator and the best two others


@dataclass(frozen=True)
class EvaluationConfig(Checked):
    WHERE = "evaluation"

    split: Literal["val", "test"] = "test"
    max_trajectories: int | None = bounded(None, ge=1, note="(null: the whole split)")
    variants: VariantParams = field(default_factory=VariantParams)
    figures: FigureParams = field(default_factory=FigureParams)

