"""The train → checkpoint → lineage block every training node shares (Kedro-side glue).

A training node builds its model, task and datasets (its own business), then calls
:func:`fit_checkpoint`, which records the upstream artifacts on the MLflow run, trains with
resumable state, and returns the self-describing checkpoint with its lineage.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from ups_kedro.pipelines.lineage import make_lineage, tag_upstream
from ups_kedro.pipelines.tracking import epoch_logger, log_effective_params
from ups_kedro.training.artifacts import make_checkpoint
from ups_kedro.training.checkpoint import run_fingerprint
from ups_kedro.training.launcher import fit
from ups_kedro.training.task import FitResult


def fit_checkpoint(stage: str, cfg: Any, model: nn.Module, task: Any, train: Any, val: Any, *,
                   train_config: Any, state_dir: Path, upstream_key: str,
                   upstream_tags: dict[str, Any], lineage: dict[str, Any],
                   normaliser: dict | None, fingerprint_config: Any = None,
                   **checkpoint: Any) -> tuple[dict, FitResult]:
    """Train ``model`` on ``task`` and return ``(checkpoint, fit result)``.

    Args:
        stage: the MLflow metric prefix and lineage stage (e.g. ``"operator"``).
        cfg: the stage's parsed parameters (hashed into the lineage).
        train_config: the loop's :class:`~ups_kedro.training.config.TrainConfig`.
        state_dir: the resumable training state; a restart resumes only when the
            fingerprint of ``fingerprint_config`` (default ``cfg``) and ``upstream_key`` (the
            identity of the upstream artifacts) matches.
        upstream_tags: ``ups.<stage>.input.<key>`` tags on the MLflow run.
        lineage: upstream ids recorded in the checkpoint's lineage.
        checkpoint: further :func:`~ups_kedro.training.artifacts.make_checkpoint` keywords
            (``metrics``, ``extra``).
    """
    tag_upstream(stage, **upstream_tags)
    log_effective_params(stage, cfg)
    result = fit(model, task, train, val, train_config, stage=stage, state_dir=state_dir,
                 fingerprint=run_fingerprint(cfg if fingerprint_config is None
                                             else fingerprint_config, upstream_key),
                 on_epoch_end=epoch_logger(stage))
    ckpt = make_checkpoint(model, result, train_config=train_config, normaliser=normaliser,
                           lineage=make_lineage(stage, cfg, **lineage), **checkpoint)
    return ckpt, result
