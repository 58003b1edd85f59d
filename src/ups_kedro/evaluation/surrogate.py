"""The trained transient surrogate rebuilt from its stage checkpoints (no Kedro, no MLflow).

:func:`load_surrogate` takes ONE dict of checkpoints keyed by stage
(:data:`ups_kedro.stages.TRANSIENT_STAGES`) and returns a :class:`Surrogate` whose
``correctors`` hold every registered corrector whose checkpoint is present and was trained
against the current operator.  Evaluation, promotion, the registered pyfunc model and inference
all go through it, so none of them names a corrector stage.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from ups_kedro.checks import require_meta, require_same
from ups_kedro.stages import BASE_STAGES, CORRECTORS
from ups_kedro.training.artifacts import freeze, load_module


@dataclass
class Surrogate:
    """The trained stages, ready to step: encode/decode act on normalised fields.

    ``correctors``: ``{stage name: frozen module}`` of the registered correctors present, in
    registry order (:data:`ups_kedro.stages.CORRECTORS`).
    """

    encode: Callable[[torch.Tensor], torch.Tensor]
    decode: Callable[[torch.Tensor], torch.Tensor]
    operator: nn.Module
    dt: float
    time_stride: int
    normaliser: dict
    correctors: dict[str, nn.Module] = field(default_factory=dict)
    solver: str = "heun"


@dataclass
class FrozenOperator:
    """A frozen Stage 1 operator with its step size and the encoder its latents came from."""

    module: nn.Module
    dt: float
    time_stride: int
    encoder_hash: str
    run_id: str | None

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        return self.module(z, self.dt)


def load_operator(operator_checkpoint: dict, *latents) -> FrozenOperator:
    """The frozen operator; refuses latents (ArrayBundles) written by another encoder than it
    was trained on."""
    lineage = operator_checkpoint["lineage"]
    require_meta("encoder_hash", lineage["encoder_hash"], latents, "encoder of latents",
                 "The operator was trained on another autoencoder's latents: re-run "
                 "`kedro run --pipeline operator` (or the autoencoder) so they agree.")
    return FrozenOperator(freeze(load_module(operator_checkpoint)),
                          float(operator_checkpoint["dt"]),
                          int(operator_checkpoint["time_stride"]), lineage["encoder_hash"],
                          lineage.get("mlflow_run_id"))


def is_present(ckpt: dict | None) -> bool:
    """A real checkpoint (not absent, not the record of a switched-off stage)."""
    return isinstance(ckpt, dict) and not ckpt.get("skipped") and bool(ckpt.get("state_dict"))


def present_checkpoints(checkpoints: Mapping[str, dict | None]) -> dict[str, dict]:
    """The checkpoints of ``checkpoints`` that are real (absent/skipped optional ones dropped)."""
    return {stage: ckpt for stage, ckpt in checkpoints.items() if is_present(ckpt)}


def load_surrogate(checkpoints: Mapping[str, dict | None]) -> tuple[Surrogate, list[str]]:
    """The trained stages as one :class:`Surrogate`, and notes on correctors left out.

    Args:
        checkpoints: ``{stage: checkpoint dict or None}``; ``autoencoder`` and ``operator`` are
            required and must share the encoder.  A corrector checkpoint that is absent — or
            trained against another operator (stale after an operator re-run) — is left out
            with a note rather than evaluated on the wrong operator.
    """
    missing = [s for s in BASE_STAGES if not is_present(checkpoints.get(s))]
    if missing:
        raise ValueError(f"the surrogate needs the {' and '.join(missing)} checkpoint(s): run "
                         f"`kedro run --pipeline {missing[0]}` first")
    autoencoder_checkpoint, operator_checkpoint = (checkpoints[s] for s in BASE_STAGES)
    require_same("encoder of the operator checkpoint",
                 autoencoder_checkpoint["lineage"]["encoder_hash"],
                 operator_checkpoint["lineage"]["encoder_hash"],
                 "The operator was trained on another autoencoder's latents: re-run the chain.")
    op = load_operator(operator_checkpoint)
    ae = freeze(load_module(autoencoder_checkpoint))
    notes: list[str] = []
    correctors: dict[str, nn.Module] = {}
    for stage in CORRECTORS:
        ckpt = checkpoints.get(stage.name)
        if not is_present(ckpt):
            continue
        trained_on = ckpt["lineage"].get("operator_run_id")
        if trained_on != op.run_id:
            notes.append(f"{stage.name} checkpoint was trained against operator run "
                         f"{trained_on}, not the current one ({op.run_id}): left out; re-run "
                         f"`kedro run --pipeline {stage.name}`")
            continue
        correctors[stage.name] = freeze(load_module(ckpt))
    surrogate = Surrogate(
        encode=ae.encode, decode=ae.decode, operator=op.module, dt=op.dt,
        time_stride=op.time_stride, normaliser=autoencoder_checkpoint["normaliser"],
        correctors=correctors)
    return surrogate, notes
