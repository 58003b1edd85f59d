"""Validation scores of one corrector stage (its own pipeline's evaluation node): no Kedro.

Decoded rollouts on the validation split: the operator alone against operator + corrector at
each step count (and, for a distilled student, the teacher it was distilled from).
"""

from __future__ import annotations

import numpy as np

from ups_kedro.checks import require_same
from ups_kedro.datasets.array_dataset import ArrayBundle
from ups_kedro.evaluation.surrogate import load_operator
from ups_kedro.evaluation.variants import corrected_variant, operator_variant, score_variants
from ups_kedro.models.corrector import RolloutCorrector
from ups_kedro.training.artifacts import load_module


def variant_name(stage: str, n_steps: int | None) -> str:
    """``<stage>_<n>step``, or ``<stage>`` for a corrector run in its trained form (None)."""
    return stage if n_steps is None else f"{stage}_{n_steps}step"


def corrector_scores(corrector_checkpoint: dict, operator_checkpoint: dict,
                     autoencoder_checkpoint: dict, fields_val: ArrayBundle,
                     steps: tuple[int | None, ...], stage: str, batch_size: int, seed: int,
                     solver: str = "heun", teacher: tuple[dict, int] | None = None,
                     ) -> dict[str, dict[str, float]]:
    """``{variant: {metric: value}}`` of decoded validation rollouts (``fields_val`` [B, T, *space,
    C]): persistence, the operator alone, operator + corrector at each of ``steps`` (None: its
    trained form), and with ``teacher = (checkpoint, steps)`` the teacher as a reference."""
    for name, ckpt in (("operator", operator_checkpoint), (stage, corrector_checkpoint)):
        require_same(f"encoder of the {name} checkpoint",
                     autoencoder_checkpoint["lineage"]["encoder_hash"],
                     ckpt["lineage"]["encoder_hash"],
                     "Stages were trained on different latents: re-run the chain.")
    ae = load_module(autoencoder_checkpoint)
    op = load_operator(operator_checkpoint)
    corrector = load_module(corrector_checkpoint)
    variants = [operator_variant(op.module, op.dt)]
    variants += [corrected_variant(variant_name(stage, n), op.module, op.dt, corrector, n, seed,
                                   solver) for n in steps]
    if teacher is not None:
        ckpt, n = teacher
        model = load_module(ckpt)
        n = None if isinstance(model, RolloutCorrector) else n  # a corrector runs its own steps
        variants.append(corrected_variant(variant_name("teacher", n), op.module, op.dt, model,
                                          n, seed, solver))
    fields = np.asarray(fields_val.array, dtype=np.float32)
    scores, _ = score_variants(variants, fields, autoencoder_checkpoint["normaliser"], ae.encode,
                               ae.decode, int(fields_val.meta["initial_step"]), op.time_stride,
                               batch_size)
    return scores
