"""Measurements that call the project's code directly, run as a child inside a project copy.

    python -m benchmarks.worker <task> --env <env> --args '<json>'

Prints one JSON line (last line of stdout).  Tasks:

* ``train``   — each stage's training node called directly (no ``kedro run``), ``fit`` wrapped
  to read the per-epoch history: samples/s of the last epoch;
* ``caching`` — Stage 3 epochs with the frozen operator's predictions cached vs recomputed;
* ``h2h``     — Stage 1 architectures at equal wall-clock (:mod:`benchmarks.head_to_head`).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

#: the training node of each stage (namespace.name)
TRAIN_NODES = {
    "autoencoder": "autoencoder.train_autoencoder",
    "operator": "operator.train_operator",
    "diff_residual": "diff_residual.train_diff_residual",
    "consistency_distill": "consistency_distill.distill_consistency",
    "steady_prior": "steady_prior.train_steady_prior",
}


class Project:
    """The copy's catalog and parameters, with the project root pinned to the copy."""

    def __init__(self, env: str) -> None:
        from kedro.framework.session import KedroSession
        from kedro.framework.startup import bootstrap_project

        from ups_kedro import paths

        root = Path.cwd()
        bootstrap_project(root)
        paths.set_project_root(root)  # state_dir etc. resolve inside the copy, never the repo
        self.session = KedroSession.create(project_path=root, env=env)
        context = self.session.load_context()
        self.catalog, self.params = context.catalog, dict(context.params)
        self.params["_data_dir"] = "data/smoke" if env == "smoke" else "data"

    def load(self, name: str, max_items: int | None = None, overrides: dict | None = None):
        if name.startswith("params:"):
            value = self.params
            for key in name.removeprefix("params:").split("."):
                value = value[key]
            return _override(value, overrides or {})
        return _subset(self.catalog.load(name), max_items)


def _override(params: dict, overrides: dict) -> dict:
    """A copy of ``params`` with dotted keys set (``{"train.epochs": 2}``)."""
    import copy

    out = copy.deepcopy(params)
    for dotted, value in overrides.items():
        *parents, last = dotted.split(".")
        node = out
        for key in parents:
            if key not in node:  # a section this configuration does not have: nothing to set
                break
            node = node[key]
        else:
            node[last] = value
    return out


#: every ``train`` section a stage may use (Stage 2/3 train their rollout corrector under
#: ``corrector``/``rollout``, the EDM form under ``train``)
TRAIN_SECTIONS = ("train", "corrector.train", "rollout.train")


def _train_overrides(epochs: int) -> dict:
    """``epochs`` epochs in every train section, no progress bar and no divergence guard: a
    throughput probe of a few epochs is not a quality run (an exact-at-init autoencoder only
    gets worse by training, which the guard would refuse)."""
    out: dict = {}
    for section in TRAIN_SECTIONS:
        out.update({f"{section}.epochs": epochs, f"{section}.progress": False,
                    f"{section}.divergence": {"max_ratio_to_best": None,
                                              "max_ratio_to_initial": None}})
    return out


def _subset(value: Any, max_items: int | None) -> Any:
    """The first ``max_items`` trajectories (samples) of an array bundle; anything else as is."""
    from ups_kedro.data.arrays import ArrayBundle

    if max_items is None or not isinstance(value, ArrayBundle):
        return value
    return ArrayBundle(value.array[:max_items], value.meta)


def _find_node(stage: str):
    from kedro.framework.project import pipelines

    name = TRAIN_NODES[stage]
    for node in pipelines[stage].nodes:
        if node.name == name:
            return node
    raise KeyError(f"no node {name!r} in pipeline {stage!r}")


def _call_with_history(node, inputs: list) -> tuple[Any, list[dict], float]:
    """Call the node function with ``fit`` wrapped to keep every history (every training node
    trains through :func:`ups_kedro.pipelines.train_stage.fit_checkpoint`)."""
    from ups_kedro.pipelines import train_stage as module
    original = module.fit
    histories: list[list[dict]] = []

    def fit(*args, **kwargs):
        result = original(*args, **kwargs)
        histories.append(list(result.history))
        return result

    module.fit = fit
    try:
        start = time.perf_counter()
        out = node.func(*inputs)
        elapsed = time.perf_counter() - start
    finally:
        module.fit = original
    return out, (histories[-1] if histories else []), elapsed


#: checkpoints the ``train`` task may write back (not the autoencoder: the copy's latents
#: would no longer match it)
SAVABLE = {"operator": "operator.pt", "diff_residual": "diff_residual.pt",
           "consistency_distill": "consistency_distill.pt", "steady_prior": "steady_prior.pt"}


def train(project: Project, stages: list[str], epochs: int, max_items: int | None,
          save: bool = False) -> dict:
    """Throughput per stage; a failing stage is reported and the others still run.

    ``save``: write the checkpoints in :data:`SAVABLE` to the copy's ``06_models``, so the
    later stages (and later sections) train and roll out on one consistent chain."""
    out: dict[str, dict] = {}
    for stage in stages:
        try:
            out[stage] = _train_stage(project, stage, epochs, max_items, save)
        except Exception as exc:  # noqa: BLE001 - reported per stage
            print(f"{stage}: {type(exc).__name__}: {exc}", file=sys.stderr)
            out[stage] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0]}"}
    return out


def _train_stage(project: Project, stage: str, epochs: int, max_items: int | None,
                 save: bool) -> dict:
    node = _find_node(stage)
    inputs = [project.load(name, max_items, _train_overrides(epochs)) for name in node.inputs]
    ckpt, history, elapsed = _call_with_history(node, inputs)
    if save and stage in SAVABLE:
        from ups_kedro.datasets.checkpoint_dataset import CheckpointDataset

        path = Path.cwd() / project.params["_data_dir"] / "06_models" / SAVABLE[stage]
        CheckpointDataset(filepath=str(path)).save(ckpt)
    if not history:  # e.g. Stage 3 copies a one-evaluation Stage 2 corrector: nothing trained
        return {"samples_per_sec": None, "epoch_time_sec": None, "epochs": 0,
                "node_sec": elapsed}
    last = history[-1]
    return {"samples_per_sec": last["samples_per_sec"], "epoch_time_sec": last["epoch_time_sec"],
            "epochs": len(history), "node_sec": elapsed}


def caching(project: Project, epochs: int, max_items: int | None) -> dict:
    """Stage 3 epoch times with the teacher's operator predictions cached vs recomputed."""
    return {"cached": _distill_epoch_times(project, True, epochs, max_items),
            "recomputed": _distill_epoch_times(project, False, epochs, max_items)}


def _edm_teacher(project: Project, max_items: int | None) -> dict:
    """A Stage 2 EDM checkpoint: the project's own if Stage 2 is ``method: edm``, else one
    trained for one epoch here (teacher caching concerns the EDM distillation only)."""
    ckpt = project.load("diff_residual.checkpoint")
    if ckpt.get("kind") != "rollout_corrector":
        return ckpt
    node = _find_node("diff_residual")
    overrides = {**_train_overrides(1), "method": "edm"}
    inputs = [project.load(name, max_items, overrides) for name in node.inputs]
    return node.func(*inputs)


def _distill_epoch_times(project: Project, cache: bool, epochs: int,
                         max_items: int | None) -> list[float]:
    from ups_kedro.config import parse
    from ups_kedro.data.torch_data import ResidualPairDataset
    from ups_kedro.models.diffusion_residual import make_consistency_student
    from ups_kedro.pipelines.consistency_distill.config import ConsistencyDistillStageConfig
    from ups_kedro.pipelines.upstream import load_operator
    from ups_kedro.training.artifacts import freeze, load_module
    from ups_kedro.training.consistency_distill import ConsistencyDistillTask
    from ups_kedro.training.launcher import fit

    params = project.load("params:consistency_distill", overrides={
        "train.epochs": epochs, "train.progress": False})
    cfg = parse(ConsistencyDistillStageConfig, params, "consistency_distill")
    latents = project.load("autoencoder.latents_train", max_items)
    op = load_operator(project.load("operator.checkpoint"), latents)
    teacher = freeze(load_module(_edm_teacher(project, max_items)))
    task = ConsistencyDistillTask(
        teacher, teacher.schedule, operator=op, n_levels=cfg.n_levels,
        distill_num_taus=cfg.distill_num_taus, distill_micro_batch=cfg.distill_micro_batch,
        tau_schedule=cfg.tau_schedule, target_ema=cfg.target_ema, cache=cache)
    times: list[float] = []
    fit(make_consistency_student(teacher), task,
        ResidualPairDataset(latents.array, op.time_stride), None, cfg.train,
        stage="benchmark", on_epoch_end=lambda e, m: times.append(m["epoch_time_sec"]))
    return times


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("task", choices=["train", "caching", "h2h"])
    parser.add_argument("--env", default="base")
    parser.add_argument("--args", default="{}")
    ns = parser.parse_args()
    kwargs = json.loads(ns.args)
    project = Project(ns.env)
    if ns.task == "h2h":
        from benchmarks.head_to_head import head_to_head

        result = head_to_head(project, **kwargs)
    else:
        result = train(project, **kwargs) if ns.task == "train" else caching(project, **kwargs)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
