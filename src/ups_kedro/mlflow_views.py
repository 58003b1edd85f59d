"""What a reader of the MLflow UI sees of a ``kedro run`` (used by :mod:`ups_kedro.hooks`).

* **Names and descriptions**: the run is renamed ``<pipeline> · <env> · <operator> · <headline>``
  and gets a Markdown description (``mlflow.note.content``: stages, key settings, scores).
* **Stage runs**: every stage the run executed gets one run of its own in the experiment
  ``<experiment>_stages`` with that stage's params, metrics (full histories), lineage tags,
  dataset inputs and artifacts, tagged ``ups.stage`` and linked to its pipeline run
  (``ups.parent_run_id``).  A stage run alone (``kedro run --pipeline operator``) yields the same
  kind of stage run as ``__default__`` does, so MLflow's *Compare* lines up operator against
  operator whichever way the stages were run.  They live in their own experiment so that the
  main experiment keeps exactly one run per ``kedro run`` (what the leaderboard and run searches
  count on).
* **Dataset inputs**: every array bundle a run loads (fields, latents) is logged with
  ``mlflow.log_input``: source folder, split, split-manifest hash and shape.
* **Tags**: kedro-mlflow's ``runner`` (an object repr) and ``run_id`` (Kedro's session id, not
  MLflow's run id) are replaced by ``kedro.session_id``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from ups_kedro.stages import BASE_STAGES, CORRECTORS, corrector_names

logger = logging.getLogger(__name__)

#: Params shown in names/descriptions, per stage (``<stage>.<key>``), when the run logged them.
KEY_SETTINGS = {
    "autoencoder": ("latent.dim", "latent.tokens", "train.epochs"),
    "operator": ("model.architecture", "model.hidden_dim", "train.epochs"),
    **{c.name: c.key_settings for c in CORRECTORS},
    "steady_prior": ("train.epochs",),
    "evaluation": ("split", "max_trajectories"),
    "promotion": ("variant", "val_trajectories"),
}
STAGE_ORDER = ("data_processing", *BASE_STAGES, *corrector_names(), "steady_prior", "evaluation",
               "promotion", "inference")
#: Reference rows of the evaluation that are not learned surrogates.
BASELINES = ("persistence", "solver")
STAGE_EXPERIMENT_SUFFIX = "_stages"
NOISY_TAGS = ("runner", "run_id")
#: Stage runs get copies of their stage's artifacts up to this size (larger: a runs:/ link).
MAX_COPIED_ARTIFACT_BYTES = 64 * 2**20


@dataclass
class RunRecord:
    """What the hooks gather during one ``kedro run`` for its stage runs."""

    inputs: dict[str, list[Any]] = field(default_factory=dict)  # stage → mlflow datasets
    artifacts: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # (file, dir)
    logged_inputs: set[tuple[str, str]] = field(default_factory=set)  # (stage, dataset)


def stage_of(name: str) -> str:
    """Top-level namespace of a node or dataset name (``operator.train`` → ``operator``)."""
    return name.split(".", 1)[0]


def tidy_kedro_tags(client: MlflowClient, run_id: str) -> None:
    """Replace kedro-mlflow's noisy ``runner`` and ``run_id`` tags (see module docstring)."""
    tags = client.get_run(run_id).data.tags
    if "run_id" in tags:
        client.set_tag(run_id, "kedro.session_id", tags["run_id"])
    for key in NOISY_TAGS:
        if key in tags:
            client.delete_tag(run_id, key)


def array_input(name: str, bundle: Any, path: str | None) -> Any:
    """An MLflow dataset (metadata only: nothing is hashed or copied) for an array bundle."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.types.schema import Schema, TensorSpec

    array = bundle.array
    meta = bundle.meta or {}
    ident = {k: meta.get(k) for k in ("split", "split_manifest_hash", "source_fingerprint",
                                      "encoder_hash")}
    ident.update(shape=list(array.shape), dtype=str(array.dtype))
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:8]
    with warnings.catch_warnings():  # a local path resolves to two equivalent source classes
        warnings.simplefilter("ignore")
        source = resolve_dataset_source(str(Path(path).resolve()) if path else name)
    schema = Schema([TensorSpec(np.dtype(array.dtype), (-1, *array.shape[1:]), name)])
    return MetaDataset(source=source, name=name, digest=digest, schema=schema)


def _split_context(meta: Mapping | None) -> str:
    split = (meta or {}).get("split")
    return {"train": "training", "val": "validation", "test": "test"}.get(split, "input")


def log_array_input(record: RunRecord, stage: str, name: str, bundle: Any,
                    path: str | None) -> None:
    """``mlflow.log_input`` on the active run (once per dataset) and remember it for the stage
    that loaded it (once per stage)."""
    if (stage, name) in record.logged_inputs:
        return
    first = not any(n == name for _, n in record.logged_inputs)
    record.logged_inputs.add((stage, name))
    dataset = array_input(name, bundle, path)
    meta = bundle.meta or {}
    tags = {"split_manifest_hash": str(meta.get("split_manifest_hash")),
            "shape": "x".join(map(str, bundle.array.shape))}
    if first:
        mlflow.log_input(dataset, context=_split_context(meta), tags=tags)
    record.inputs.setdefault(stage, []).append((dataset, _split_context(meta), tags))


def rollout_scores(metrics: Mapping[str, float]) -> dict[str, float]:
    """``{variant: nRMSE}`` of the evaluation's rolled-out variants (those with ``nrmse_last``;
    the steady prior's field error is another kind of score)."""
    return {k.split("/")[1]: v for k, v in metrics.items()
            if k.startswith("evaluation/") and k.endswith("/nrmse") and k.count("/") == 2
            and f"evaluation/{k.split('/')[1]}/nrmse_last" in metrics}


def order_stages(names: Iterable[str]) -> list[str]:
    """Stage names in the order of the training chain (then any others, as given)."""
    names = list(dict.fromkeys(names))
    rank = {s: i for i, s in enumerate(STAGE_ORDER)}
    return sorted(names, key=lambda s: (rank.get(s, len(rank)), names.index(s)))


def headline(metrics: Mapping[str, float]) -> tuple[str, float] | None:
    """The one score to put in a run's name: best learned variant's nRMSE, else the last stage's.

    Evaluation: min over ``evaluation/<variant>/nrmse`` (not persistence/solver); promotion:
    ``promotion/test/candidate_nrmse``; a training stage: its ``val_loss``/``val_nrmse``.
    """
    learned = {k: v for k, v in rollout_scores(metrics).items()
               if k not in BASELINES and math.isfinite(v)}
    if learned:
        best = min(learned, key=learned.get)
        return f"{best} nRMSE", learned[best]
    for key in ("promotion/test/candidate_nrmse", "promotion/validation/candidate_nrmse"):
        if key in metrics:
            return "promotion nRMSE", metrics[key]
    for stage in reversed(list(KEY_SETTINGS)):
        for name in ("val_nrmse", "best_val_loss", "val_loss"):
            if f"{stage}/{name}" in metrics:
                return f"{stage} {name}", metrics[f"{stage}/{name}"]
    return None


def key_settings(params: Mapping[str, str], stages: Iterable[str]) -> dict[str, dict[str, str]]:
    """``{stage: {setting: value}}`` for the :data:`KEY_SETTINGS` the run logged."""
    out = {}
    for stage in stages:
        found = {k: params[f"{stage}.{k}"] for k in KEY_SETTINGS.get(stage, ())
                 if f"{stage}.{k}" in params}
        if found:
            out[stage] = found
    return out


def run_name(pipeline: str, env: str, params: Mapping[str, str], stages: list[str],
             metrics: Mapping[str, float]) -> str:
    """``<pipeline> · <env> · <operator arch> · +<correctors> · <headline>`` (short)."""
    parts = [pipeline, env]
    if "operator.model.architecture" in params:
        parts.append(params["operator.model.architecture"])
    correctors = [s for s in corrector_names() if s in stages]
    if correctors:
        parts.append("+" + "+".join(correctors))
    score = headline(metrics)
    if score:
        parts.append(f"{score[0]} {score[1]:.4g}")
    return " · ".join(parts)


def description(pipeline: str, env: str, tags: Mapping[str, str], params: Mapping[str, str],
                stages: list[str], metrics: Mapping[str, float],
                stage_runs: Mapping[str, str]) -> str:
    """Markdown for the run's *Description*: what ran, with which settings, and how it scored."""
    lines = [f"**`kedro run --pipeline {pipeline} --env {env}`** at commit "
             f"`{tags.get('ups.git_commit', '?')[:10]}`"
             f"{' (dirty tree)' if tags.get('ups.git_dirty') == 'true' else ''}.", ""]
    score = headline(metrics)
    if score:
        lines += [f"Headline: **{score[0]} = {score[1]:.4g}**", ""]
    lines += ["| stage | key settings | stage run |", "|---|---|---|"]
    settings = key_settings(params, stages)
    for stage in stages:
        shown = ", ".join(f"{k}={v}" for k, v in settings.get(stage, {}).items()) or "–"
        lines.append(f"| {stage} | {shown} | {stage_runs.get(stage, '–')} |")
    learned = sorted((v, k) for k, v in rollout_scores(metrics).items())
    if learned:
        lines += ["", "| variant | nRMSE |", "|---|---|"]
        lines += [f"| {name} | {value:.4g} |" for value, name in learned]
    return "\n".join(lines)


def stage_experiment_id(client: MlflowClient, parent_experiment_id: str) -> str:
    """The ``<experiment>_stages`` experiment beside the run's experiment (created once)."""
    parent = client.get_experiment(parent_experiment_id)
    name = parent.name + STAGE_EXPERIMENT_SUFFIX
    found = client.get_experiment_by_name(name)
    if found is not None:
        if found.lifecycle_stage == "deleted":
            client.restore_experiment(found.experiment_id)
        return found.experiment_id
    # Inside the experiment's artifact root (git-ignored with it; run ids are hex, no clash).
    location = parent.artifact_location.rstrip("/") + "/_stages"
    return client.create_experiment(name, artifact_location=location)


def log_stage_runs(client: MlflowClient, run_id: str, pipeline: str, env: str,
                   stages: list[str], record: RunRecord) -> dict[str, str]:
    """One run per stage in ``<experiment>_stages`` (see module docstring); ``{stage: run id}``."""
    parent = client.get_run(run_id)
    experiment = stage_experiment_id(client, parent.info.experiment_id)
    data = parent.data
    out = {}
    for stage in stages:
        tags = {"ups.stage": stage, "ups.parent_run_id": run_id, "ups.parent_pipeline": pipeline,
                "ups.config_env": env, "mlflow.source.name": f"kedro run --pipeline {pipeline}",
                **{k: v for k, v in data.tags.items()
                   if k in ("ups.git_commit", "ups.git_dirty", "kedro.session_id")
                   or k.startswith((f"ups.{stage}.", f"ups.{stage}/"))}}
        settings = key_settings(data.params, [stage]).get(stage, {})
        name = " · ".join([stage, env, *(f"{k}={v}" for k, v in settings.items())])
        child = client.create_run(experiment, start_time=parent.info.start_time,
                                  tags={**tags, "mlflow.runName": name[:250]})
        cid = child.info.run_id
        params = [Param(k, v) for k, v in data.params.items() if stage_of(k) == stage]
        history = [m for key in data.metrics if stage_of(key.replace("/", ".")) == stage
                   for m in client.get_metric_history(run_id, key)]
        for i in range(0, max(len(params), len(history)), 100):  # MLflow's batch limits
            client.log_batch(cid, metrics=[Metric(m.key, m.value, m.timestamp, m.step)
                                           for m in history[i:i + 100]],
                             params=params[i:i + 100])
        _log_stage_inputs(client, cid, record.inputs.get(stage, []))
        for local, directory in record.artifacts.get(stage, []):
            path = Path(local)
            if path.is_file() and path.stat().st_size <= MAX_COPIED_ARTIFACT_BYTES:
                client.log_artifact(cid, local, directory)
            elif path.is_file():  # too large to store twice: point at the pipeline run's copy
                client.set_tag(cid, f"ups.artifact.{path.name}",
                               f"runs:/{run_id}/{directory}/{path.name}")
        score = headline({k: v for k, v in data.metrics.items() if stage_of(k.replace("/", "."))
                          == stage})
        client.set_tag(cid, "mlflow.note.content",
                       f"Stage **{stage}** of run `{run_id}` (`{pipeline}`)"
                       + (f"; {score[0]} = {score[1]:.4g}" if score else "") + ".")
        client.set_terminated(cid, parent.info.status if parent.info.status != "RUNNING"
                              else "FINISHED")
        out[stage] = cid
    return out


def _log_stage_inputs(client: MlflowClient, run_id: str, inputs: list) -> None:
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    if not inputs:
        return
    client.log_inputs(run_id, [
        DatasetInput(dataset._to_mlflow_entity(),
                     [InputTag(MLFLOW_DATASET_CONTEXT, context),
                      *(InputTag(k, v) for k, v in tags.items())])
        for dataset, context, tags in inputs])
