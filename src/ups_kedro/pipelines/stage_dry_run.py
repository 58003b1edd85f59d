"""``kedro status``: what the next ``kedro run`` would retrain, and why, without training.

Every training node of the pipeline is called with its real inputs (loaded from the catalog)
in dry-run mode: it stops at :func:`ups_kedro.pipelines.stage_cache.reuse`, which reports
its verdict instead of training.  A stage downstream of one that retrains retrains too (its
inputs will change); a stage whose inputs do not exist yet will train.

:func:`dry_run_nodes` also gives the node plan of :mod:`ups_kedro.runner`: which nodes
``kedro run`` would skip as up to date and which it would run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ups_kedro.pipelines import stage_cache
from ups_kedro.pipelines.stage_cache import DryRunVerdict, Verdict



def is_training_node(node: Any) -> bool:
    """A node that trains writes a checkpoint dataset (``<stage>.checkpoint``,
    ``steady_prior.autoencoder_checkpoint``) and calls ``stage_cache.reuse`` first; no list of
    stage names to keep in step with the stage registry."""
    return any(out.endswith("checkpoint") for out in node.outputs)


def dry_run(project: Path, env: str | None, params: Mapping[str, Any] | None = None,
            pipeline: str = "__default__") -> list[Verdict]:
    """The verdict of every training node of ``pipeline``, in run order."""
    return dry_run_nodes(project, env, params, pipeline)[0]


def dry_run_nodes(project: Path, env: str | None, params: Mapping[str, Any] | None = None,
                  pipeline: str = "__default__") -> tuple[list[Verdict], list[str], list[str]]:
    """(:func:`dry_run`'s verdicts, nodes ``kedro run`` would run, nodes it would skip)."""
    from kedro.framework.project import pipelines
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    from ups_kedro.runner import plan

    bootstrap_project(project)
    with KedroSession.create(project_path=project, env=env,
                             runtime_params=dict(params or {})) as session:
        catalog = session.load_context().catalog
        pipe = pipelines[pipeline]
        to_run, skipped = plan(pipe, catalog)
        training = [n for n in pipe.nodes if is_training_node(n)]
        retrains: set[str] = set()
        out: list[Verdict] = []
        stage_cache.set_dry_run(True)
        try:
            for node in training:
                verdict = _verdict(node, pipe, catalog, retrains)
                if verdict.state != "up to date":
                    retrains.add(node.name)
                out.append(verdict)
        finally:
            stage_cache.set_dry_run(False)
    return out, [n.name for n in to_run], [n.name for n, _ in skipped]


def _verdict(node: Any, pipe: Any, catalog: Any, retrains: set[str]) -> Verdict:
    label = node.name.split(".", 1)[0]
    if node.name.endswith("train_steady_autoencoder"):
        label = "steady_prior/autoencoder"
    upstream = [n.name for n in pipe.to_nodes(node.name).nodes
                if n.name in retrains and n.name != node.name]
    if upstream:
        names = ", ".join(n.rsplit(".", 1)[-1] for n in upstream)
        return Verdict(label, "train", f"upstream retrains ({names})")
    args = []
    for name in node.inputs:
        try:
            args.append(catalog.load(name))
        except Exception:  # noqa: BLE001 - not built yet (or unreadable): it will train
            return Verdict(label, "train", f"input {name} is not built yet (or unreadable)")
    try:
        node.func(*args)
    except DryRunVerdict as signal:
        return signal.verdict
    except Exception as err:  # noqa: BLE001 - the run would fail here: say so
        return Verdict(label, "error", _first_line(err))
    return Verdict(label, "skipped", "the stage is switched off (nothing to train)")


def _first_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:200] or type(err).__name__


def format_table(verdicts: list[Verdict]) -> str:
    """One line per stage: ``operator  up to date  ab12cd34…  trained in run <id>``."""
    width = max((len(v.stage) for v in verdicts), default=5)
    lines = []
    for v in verdicts:
        state = {"train": "would retrain", "resume": "would resume"}.get(v.state, v.state)
        fp = stage_cache.short(v.fingerprint) if v.fingerprint else "-"
        lines.append(f"{v.stage:<{width}}  {state:<13}  {fp:<9}  {v.reason}")
    return "\n".join(lines)
