"""Loading upstream stage artifacts with their consistency checks (shared by stages 2–4)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ups_kedro.datasets.array_dataset import ArrayBundle
from ups_kedro.pipelines.lineage import require_same
from ups_kedro.training.artifacts import freeze, load_module


@dataclass
class FrozenOperator:
    """A frozen Stage 1 operator with its step size and the encoder its latents came from."""

    module: nn.Module
    dt: float
    time_stride: int
    encoder_hash: str
    run_id: str | None

    def __call__(self, z):
        return self.module(z, self.dt)


def load_operator(operator_checkpoint: dict, *latents: ArrayBundle) -> FrozenOperator:
    """The frozen operator; refuses latents written by another encoder than it was trained on."""
    lineage = operator_checkpoint["lineage"]
    for bundle in latents:
        require_same(f"encoder of latents_{bundle.meta['split']}", lineage["encoder_hash"],
                     bundle.meta.get("encoder_hash"),
                     "The operator was trained on another autoencoder's latents: re-run "
                     "`kedro run --pipeline operator` (or the autoencoder) so they agree.")
    return FrozenOperator(freeze(load_module(operator_checkpoint)), float(operator_checkpoint["dt"]),
                          int(operator_checkpoint["time_stride"]), lineage["encoder_hash"],
                          lineage.get("mlflow_run_id"))
