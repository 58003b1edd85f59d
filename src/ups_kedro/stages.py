"""The registry of corrector stages: the ONE place that lists them (torch-free, Kedro-free).

A *corrector stage* trains a model that refines the frozen Stage 1 operator's prediction
ẑ = Op(z) at every rollout step (Stage 2 ``diff_residual``, Stage 3 ``consistency_distill``).
Everything downstream of training — the evaluation variants, the promotion gates, the registered
MLflow model, inference — iterates over :data:`CORRECTORS`; no node signature, surrogate field
or variant builder names a corrector.  Adding one = its pipeline folder, one
:class:`CorrectorStage` entry here, and its config/catalog files (``docs/architecture.md``).

How every corrector is loaded is the same: its checkpoint (the catalog dataset
``<name>.checkpoint``, a self-describing dict) is rebuilt by
:func:`ups_kedro.training.artifacts.load_module` from the model kind it records, and it is used
only when its lineage says it was trained against the current operator
(``lineage["operator_run_id"]``); otherwise it is left out with a note.
"""

from __future__ import annotations

from dataclasses import dataclass


def default_checkpoint_path(stage: str) -> str:
    """Where the base catalog writes a stage's checkpoint, relative to the project root."""
    return f"data/06_models/{stage}.pt"


@dataclass(frozen=True)
class CorrectorStage:
    """One corrector stage and the facts the consumers (evaluation, promotion, inference) need.

    Attributes:
        name: the pipeline, stage, artifact and variant-name prefix (``<name>_<n>step``).
        steps: default step counts of its evaluation variants (sampler steps of an EDM model,
            corrections per step of a rollout model); ``evaluation.variants.steps.<name>``
            overrides them.
        trained_form_only: a rollout corrector (``RolloutCorrector``) of this stage is run in
            its trained form only — one variant named ``<name>`` — instead of at each step count.
        label: what its variants are, in the note written when its checkpoint is absent.
        legacy_steps_key: the ``VariantParams`` key that held its step counts before this
            registry (read back from models registered then); None for new stages.
        key_settings: its parameters (``<name>.<key>``) shown in MLflow run names and
            descriptions when the run logged them.
    """

    name: str
    steps: tuple[int, ...]
    trained_form_only: bool = False
    label: str = "corrector"
    legacy_steps_key: str | None = None
    key_settings: tuple[str, ...] = ("train.epochs",)

    @property
    def checkpoint(self) -> str:
        """Its catalog dataset (a :class:`~ups_kedro.datasets.checkpoint_dataset.
        CheckpointDataset`)."""
        return f"{self.name}.checkpoint"

    @property
    def default_path(self) -> str:
        """Where the catalog writes its checkpoint (inference's default ``checkpoints`` path)."""
        return default_checkpoint_path(self.name)


#: Corrector stages in training order (a later one may read an earlier one's checkpoint, e.g.
#: Stage 3 distils Stage 2); variants are built and reported in this order.
CORRECTORS: tuple[CorrectorStage, ...] = (
    CorrectorStage("diff_residual", steps=(16,), trained_form_only=True,
                   label="operator + corrector", legacy_steps_key="corrector_steps",
                   key_settings=("method", "corrector.train.epochs", "train.epochs")),
    CorrectorStage("consistency_distill", steps=(1, 2), label="student",
                   legacy_steps_key="student_steps", key_settings=("train.epochs",)),
)

#: The corrector the gated variant uses unless ``variants.gated.corrector`` says otherwise.
GATED_DEFAULT = "consistency_distill"

#: The stages every transient surrogate needs (required checkpoints).
BASE_STAGES: tuple[str, ...] = ("autoencoder", "operator")

#: All stages of the transient surrogate: the keys of the one checkpoint dict that evaluation,
#: promotion and inference consume, and the artifact names of a registered model.
TRANSIENT_STAGES: tuple[str, ...] = (*BASE_STAGES, *(c.name for c in CORRECTORS))


def corrector_names() -> tuple[str, ...]:
    return tuple(c.name for c in CORRECTORS)


def corrector(name: str) -> CorrectorStage:
    """The registry entry ``name``; a clear error naming the registered ones otherwise."""
    for c in CORRECTORS:
        if c.name == name:
            return c
    raise ValueError(f"{name!r} is not a registered corrector stage; registered: "
                     f"{', '.join(corrector_names())} (ups_kedro.stages.CORRECTORS)")


def checkpoint_inputs() -> dict[str, str]:
    """``{stage: "<stage>_checkpoint"}``: a node's keyword inputs for the checkpoint dict.

    A consuming pipeline maps ``<stage>_checkpoint`` to the dataset ``<stage>.checkpoint``
    (:func:`checkpoint_datasets`) and its node takes them as ``**checkpoints``.
    """
    return {stage: f"{stage}_checkpoint" for stage in TRANSIENT_STAGES}


def checkpoint_datasets() -> dict[str, str]:
    """``{"<stage>_checkpoint": "<stage>.checkpoint"}`` for a pipeline's ``inputs=`` mapping."""
    return {f"{stage}_checkpoint": f"{stage}.checkpoint" for stage in TRANSIENT_STAGES}
