"""Typed parameters of the ``promotion`` pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

from ups_kedro.config import Checked, bounded
from ups_kedro.evaluation.gates import GateParams
from ups_kedro.evaluation.suite import VariantParams


@dataclass(frozen=True)
class PromotionConfig(Checked):
    WHERE = "promotion"

    model_name: str = "ups_kedro_surrogate"  # MLflow Model Registry name
    alias: str = "champion"
    variant: str = "best"  # best (lowest validation nRMSE) | a variant name, e.g. operator
    val_trajectories: int = bounded(16, ge=1)  # the small, fast validation evaluation
    variants: VariantParams = field(
        default_factory=lambda: VariantParams(solver_reference=False))
    validation_gate: GateParams = field(default_factory=GateParams)
    test_gate: GateParams = field(default_factory=GateParams)

