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

from ups_kedro.launch_env import launched_rank
from ups_kedro.training import stage_status

# mlflow is imported by the functions that log: the stage-cache hooks import this module at
# start-up of every `kedro` command.

logger = logging.getLogger(__name__)


def _tracking() -> bool:
    """An active run exists and this process may log to it (not a torchrun rank ≠ 0)."""
    import mlflow

    return (launched_rank() or 0) == 0 and mlflow.active_run() is not None


def log_metrics(stage: str, metrics: Mapping[str, float], step: int | None = None) -> None:
    """Log finite numeric metrics as ``<stage>/<name>`` on the active run, if any."""
    if not _tracking():
        return
    clean = {f"{stage}/{k}": float(v) for k, v in metrics.items()
             if isinstance(v, (int, float)) and math.isfinite(float(v))}
    if clean:
        import mlflow

        mlflow.log_metrics(clean, step=step)


def _flatten(prefix: str, value: object) -> dict[str, str]:
    if isinstance(value, Mapping):
        out: dict[str, str] = {}
        for k, v in value.items():
            out.update(_flatten(f"{prefix}.{k}", v))
        return out
    return {prefix: str(value)}


def log_effective_params(stage: str, cfg: object) -> None:
    """Log the stage's *effective* parameters — every key of its parsed config, defaults included
    — as ``<stage>.<key>`` params, so runs compare in the MLflow UI on keys that ``conf/base``
    leaves at their default (kedro-mlflow logs only the keys written in YAML).

    Keys already on the run (the YAML ones kedro-mlflow logged) are left as they are: MLflow
    params are write-once.  One batched call.
    """
    if not _tracking():
        return
    import mlflow
    from mlflow.entities import Param
    from mlflow.tracking import MlflowClient

    from ups_kedro.config import to_dict

    run_id = mlflow.active_run().info.run_id
    client = MlflowClient()
    present = set(client.get_run(run_id).data.params)
    values = {k: v[:6000] for k, v in _flatten(stage, to_dict(cfg)).items() if k not in present}
    params = [Param(k, v) for k, v in sorted(values.items())]
    for i in range(0, len(params), 100):  # MLflow's batch limit
        client.log_batch(run_id, params=params[i:i + 100])


class EpochLogger:
    """Callback for the training engine (:func:`epoch_logger`).

    ``__call__(epoch, metrics)``: per-epoch metrics with the epoch as MLflow step, one log line
    per epoch (so runs without a terminal, CI or ``nohup``, show progress), and the gradient
    health flags as tags: ``ups.<stage>.grad_vanishing`` / ``ups.<stage>.grad_exploding``
    list the flagged epochs (absent: never flagged).  ``set_tags(mapping)``: run-level facts
    from the engine (``seed``, ``num_threads``, ``resumed_from``, ``initial_val_loss``) as
    ``ups.<stage>.<key>``.  ``run_id``: the MLflow run, recorded in the stage's lock file.

    Each epoch also goes to the stage's status file and one line of its JSONL log
    (``<data_dir>/08_reporting/logs/<stage>.jsonl``, :mod:`ups_kedro.training.stage_status`):
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
            stage_status.epoch_done(self.stage, epoch, metrics,
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
        import mlflow

        mlflow.set_tags(dict(tags))


def active_run_id() -> str | None:
    if (launched_rank() or 0) != 0:
        return None
    import mlflow

    run = mlflow.active_run()
    return run.info.run_id if run else None


def log_artifact(path: Path, directory: str) -> None:
    """Copy a local file to the active run's ``directory``, if any."""
    if _tracking():
        import mlflow

        mlflow.log_artifact(str(path), directory)


def copy_stage_metrics(sources: Mapping[str, str]) -> None:
    """Copy each stage's latest ``<stage>/…`` metrics from the run its reused outputs come from
    (``{stage: run id}``) to the active run, if any (step 0: the values are not a history)."""
    if not _tracking() or not sources:
        return
    import mlflow
    from mlflow.entities import Metric
    from mlflow.exceptions import MlflowException

    client = mlflow.MlflowClient()
    target = mlflow.active_run().info.run_id
    latest: dict[str, dict[str, float]] = {}
    now = int(time.time() * 1000)
    copied: list[Metric] = []
    for stage, source in sources.items():
        if source == target:
            continue
        try:
            if source not in latest:
                latest[source] = client.get_run(source).data.metrics
        except MlflowException as err:  # the source run was deleted: nothing to copy
            logger.warning("%s: metrics of run %s not copied (%s)", stage, source, err)
            latest[source] = {}
        copied += [Metric(key, value, now, 0) for key, value in latest[source].items()
                   if key.startswith(f"{stage}/")]
    for i in range(0, len(copied), 1000):  # MLflow's batch limit
        client.log_batch(target, metrics=copied[i:i + 1000])
