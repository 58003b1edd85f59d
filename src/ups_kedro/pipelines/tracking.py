"""MLflow glue for nodes: the only place stage code talks to MLflow.

Training code never imports mlflow; nodes pass :func:`epoch_logger` as its callback.  Every
metric is named ``<stage>/<name>`` and logged to the kedro-mlflow run of this ``kedro run``
(nothing is logged when no run is active, e.g. in plain unit tests).  Under ``torchrun`` only
rank 0 logs: on other ranks these functions do nothing even if a run were active.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping

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


def epoch_logger(stage: str) -> Callable[[int, Mapping[str, float]], None]:
    """Callback for the training engine: per-epoch metrics with the epoch as MLflow step.

    Also one log line per epoch, so runs without a terminal (CI, ``nohup``) show progress.
    """

    def _log(epoch: int, metrics: Mapping[str, float]) -> None:
        log_metrics(stage, metrics, step=epoch)
        shown = ", ".join(f"{k}={metrics[k]:.4g}" for k in
                          ("loss", "val_loss", "lr", "grad_norm", "epoch_time_sec") if k in metrics)
        logger.info("%s epoch %d: %s", stage, epoch, shown)

    return _log


def set_tags(tags: Mapping[str, str]) -> None:
    """Set lineage tags on the active run, if any."""
    if _tracking():
        mlflow.set_tags(dict(tags))


def active_run_id() -> str | None:
    if (launched_rank() or 0) != 0:
        return None
    run = mlflow.active_run()
    return run.info.run_id if run else None
