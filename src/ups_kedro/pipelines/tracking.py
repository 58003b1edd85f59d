"""MLflow glue for nodes: the only place stage code talks to MLflow.

Training code never imports mlflow; nodes pass :func:`epoch_logger` as its callback.  Every
metric is named ``<stage>/<name>`` and logged to the kedro-mlflow run of this ``kedro run``
(nothing is logged when no run is active, e.g. in plain unit tests).  Under ``torchrun`` only
rank 0 logs: on other ranks these functions do nothing even if a run were active.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path

import mlflow

from ups_kedro.training.distributed import launched_rank

logger = logging.getLogger(__name__)


def _tracking() -> bool:
    """An active run exists and this process may log to it (not a torchrun rank ≠ 0)."""
    return (launched_rank() or 0) == 0 and mlflow.active_run() is not None


def log_metrics(stage: str, metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log finite numeric metrics as ``<stage>/<name>`` on the active run, if any."""
    if not _tracking():
        return
    clean = {f"{stage}/{k}": float(v) for k, v in metrics.items()
             if isinstance(v, (int, float)) and math.isfinite(float(v))}
    if clean:
        mlflow.log_metrics(clean, step=step)


class EpochLogger:
    """Callback for the training engine (:func:`epoch_logger`).

    ``__call__(epoch, metrics)``: per-epoch metrics with the epoch as MLflow step, one log line
    per epoch (so runs without a terminal, CI or ``nohup``, show progress), and the gradient
    health flags as tags: ``ups.<stage>.grad_vanishing`` / ``ups.<stage>.grad_exploding``
    list the flagged epochs (absent: never flagged).  ``set_tags(mapping)``: run-level facts
    from the engine (``seed``, ``num_threads``, ``resumed_from``, ``initial_val_loss``) as
    ``ups.<stage>.<key>``.  ``run_id``: the MLflow run, recorded in the stage's lock file.

    Each epoch also goes to the stage's status file and one line of its JSONL log
    (``<data_dir>/08_reporting/logs/<stage>.jsonl``, :mod:`ups_kedro.pipelines.stage_cache`):
    losses and components, val loss, lr, pre-clip gradient norm, health flags, samples/s,
    epoch seconds and the wall-clock time.
    """

    def __init__(self, stage: str) -> None:
        self.stage = stage
        self._flagged: dict[str, list[int]] = {}

    @property
    def run_id(self) -> str | None:
        return active_run_id()

    def __call__(self, epoch: int, metrics: Mapping[str, float]) -> None:
        log_metrics(self.stage, metrics, step=epoch)
        for flag in ("grad_vanishing", "grad_exploding"):
            epochs = self._flagged.setdefault(flag, [])
            if metrics.get(flag, 0.0) > 0 and epoch not in epochs:
                epochs.append(epoch)
                self.set_tags({flag: _epoch_list(epochs)})
        shown = ", ".join(f"{k}={metrics[k]:.4g}" for k in
                          ("loss", "val_loss", "lr", "grad_norm", "epoch_time_sec") if k in metrics)
        logger.info("%s epoch %d: %s", self.stage, epoch, shown)
        if (launched_rank() or 0) == 0:
            from ups_kedro.pipelines import stage_cache  # it imports this module

            stage_cache.epoch_done(self.stage, epoch, metrics,
                                   time.strftime("%Y-%m-%dT%H:%M:%S%z"))

    def set_tags(self, tags: Mapping[str, str]) -> None:
        set_tags({f"ups.{self.stage}.{k}": str(v) for k, v in tags.items()})


def _epoch_list(epochs: list[int]) -> str:
    """``[1, 2, 3, 7]`` → ``"1-3,7"`` (MLflow tag values are short strings)."""
    parts: list[str] = []
    start = prev = epochs[0]
    for e in [*epochs[1:], None]:
        if e is not None and e == prev + 1:
            prev = e
            continue
        parts.append(str(start) if start == prev else f"{start}-{prev}")
        if e is not None:
            start = prev = e
    return ",".join(parts)


def epoch_logger(stage: str) -> EpochLogger:
    """The training engine's callback for ``stage`` (see :class:`EpochLogger`)."""
    return EpochLogger(stage)


def set_tags(tags: Mapping[str, str]) -> None:
    """Set lineage tags on the active run, if any."""
    if _tracking():
        mlflow.set_tags(dict(tags))


def active_run_id() -> str | None:
    if (launched_rank() or 0) != 0:
        return None
    run = mlflow.active_run()
    return run.info.run_id if run else None


def log_artifact(path: Path, directory: str) -> None:
    """Copy a local file to the active run's ``directory``, if any."""
    if _tracking():
        mlflow.log_artifact(str(path), directory)
