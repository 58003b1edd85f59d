"""Typed parameters of the ``promotion`` pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field

from ups_kedro.config import ConfigError
from ups_kedro.evaluation.gates import GateParams
from ups_kedro.evaluation.suite import VariantParams


@dataclass(frozen=True)
class PromotionConfig:
    model_name: str = "ups_kedro_surrogate"  # MLflow Model Registry name
    alias: str = "champion"
    variant: str = "best"  # best (lowest validation nRMSE) | a variant name, e.g. operator
    val_trajectories: int = 16  # the small, fast validation evaluation
    variants: VariantParams = field(
        default_factory=lambda: VariantParams(solver_reference=False))
    validation_gate: GateParams = field(default_factory=GateParams)
    test_gate: GateParams = field(default_factory=GateParams)

    def validate(self, where: str = "promotion") -> None:
        if self.val_trajectories < 1:
            raise ConfigError(f"{where}.val_trajectories must be ≥ 1, got {self.val_trajectories}")
