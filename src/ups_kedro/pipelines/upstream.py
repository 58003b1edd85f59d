"""Loading upstream stage artifacts with their consistency checks (shared by stages 2–4)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ups_kedro.datasets.array_dataset import ArrayBundle
from ups_kedro.evaluation.suite import Surrogate
from ups_kedro.pipelines.lineage import require_meta, require_same
from ups_kedro.training.artifacts import freeze, load_module


#: The transient surrogate's stages (also the artifact keys of a registered model), and their
#: checkpoints as mapped into a consuming pipeline (evaluation, promotion):
#: the dataset ``<stage>.checkpoint`` becomes the input ``<stage>_checkpoint``.
STAGES = ("autoencoder", "operator", "diff_residual", "consistency_distill")
STAGE_CHECKPOINTS = {f"{stage}_checkpoint": f"{stage}.checkpoint" for stage in STAGES}


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


def load_surrogate(autoencoder_checkpoint: dict, operator_checkpoint: dict,
                   diff_residual_checkpoint: dict | None = None,
                   consistency_distill_checkpoint: dict | None = None,
                   ) -> tuple[Surrogate, list[str]]:
    """The trained stages as one :class:`~ups_kedro.evaluation.suite.Surrogate`.

    Autoencoder and operator are required and must share the encoder.  A Stage 2/3 checkpoint
    that is absent — or trained against another operator (stale after an operator re-run) — is
    left out with a note rather than evaluated on the wrong operator.
    """
    require_same("encoder of the operator checkpoint",
                 autoencoder_checkpoint["lineage"]["encoder_hash"],
                 operator_checkpoint["lineage"]["encoder_hash"],
                 "The operator was trained on another autoencoder's latents: re-run the chain.")
    op = load_operator(operator_checkpoint)
    ae = freeze(load_module(autoencoder_checkpoint))
    notes: list[str] = []

    def corrector(ckpt: dict | None, stage: str) -> nn.Module | None:
        if not is_present(ckpt):
            return None
        trained_on = ckpt["lineage"].get("operator_run_id")
        if trained_on != op.run_id:
            notes.append(f"{stage} checkpoint was trained against operator run {trained_on}, not "
                         f"the current one ({op.run_id}): left out; re-run `kedro run --pipeline "
                         f"{stage}`")
            return None
        return freeze(load_module(ckpt))

    surrogate = Surrogate(
        encode=ae.encode, decode=ae.decode, operator=op.module, dt=op.dt,
        time_stride=op.time_stride, normaliser=autoencoder_checkpoint["normaliser"],
        corrector=corrector(diff_residual_checkpoint, "diff_residual"),
        student=corrector(consistency_distill_checkpoint, "consistency_distill"))
    return surrogate, notes


def require_checkpoint(ckpt: dict | None, stage: str, consumer: str) -> dict:
    """``ckpt``, or a clear error when an optional-stage checkpoint is needed but absent."""
    if not is_present(ckpt):
        raise ValueError(f"{consumer} needs the {stage} checkpoint, which does not exist (or the "
                         f"stage was switched off): run `kedro run --pipeline {stage}` first")
    return ckpt
