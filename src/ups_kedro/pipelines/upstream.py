"""Upstream stage artifacts for the stage pipelines (shared by stages 2–4 and the consumers).

The loading itself is library code (:mod:`ups_kedro.evaluation.surrogate`); this module adds
the Kedro-side wiring: the one checkpoint dict that evaluation and promotion nodes take as
``**checkpoints`` (its keyword inputs and dataset mapping come from the corrector registry,
:mod:`ups_kedro.stages`), and the error for a needed optional checkpoint.
"""

from __future__ import annotations

import logging

from ups_kedro.evaluation.surrogate import (  # noqa: F401 - the stage nodes' entry points
    FrozenOperator,
    is_present,
    load_operator,
    load_surrogate,
)
from ups_kedro.evaluation.variants import flatten_scores
from ups_kedro.pipelines.tracking import log_metrics
from ups_kedro.stages import checkpoint_datasets, checkpoint_inputs

logger = logging.getLogger(__name__)

#: Node keyword inputs ``{stage: "<stage>_checkpoint"}`` of the transient surrogate's stages.
CHECKPOINT_INPUTS = checkpoint_inputs()
#: The pipeline ``inputs=`` mapping ``{"<stage>_checkpoint": "<stage>.checkpoint"}``.
CHECKPOINT_DATASETS = checkpoint_datasets()


def require_checkpoint(ckpt: dict | None, stage: str, consumer: str) -> dict:
    """``ckpt``, or a clear error when an optional-stage checkpoint is needed but absent."""
    if not is_present(ckpt):
        raise ValueError(f"{consumer} needs the {stage} checkpoint, which does not exist (or the "
                         f"stage was switched off): run `kedro run --pipeline {stage}` first")
    return ckpt


def log_corrector_scores(stage: str, scores: dict[str, dict[str, float]]) -> dict[str, float]:
    """Log a corrector stage's validation scores (``val_<variant>_<metric>``) and return them."""
    out = flatten_scores("val", scores)
    log_metrics(stage, out)
    for name, s in scores.items():
        logger.info("%s (val) %-28s nRMSE %.4g  h1 %.4g  last %.4g  NFE/step %d  %.1f ms/traj",
                    stage, name, s["nrmse"], s.get("nrmse_h1", float("nan")),
                    s.get("nrmse_last", float("nan")), s.get("nfe_per_step", 0),
                    s.get("ms_per_trajectory", 0.0))
    return out
