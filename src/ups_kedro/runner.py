"""Re-run only what changed, node by node: ``kedro run`` skips the nodes that are up to date.

Training stages already reuse their checkpoint when their fingerprint matches
(:mod:`ups_kedro.pipelines.stage_cache`), but a run that retrains nothing would still load every
checkpoint, re-score every stage, redraw every figure and re-log every artifact.  This module
skips such nodes before they start, the way ``make`` skips a target whose prerequisites did not
change:

* **The node ledger** (``<data_dir>/06_models/state/nodes.json``, written by
  :class:`NodeLedgerHooks` at the end of every successful run) records, for each node that ran,
  a *signature* (the node's name, the package's code version and a token for each input: the
  size and modification time of a file or folder, the content of a parameter block), a token
  for each of its outputs, the MLflow run it ran in, and the training stages it checked with
  a token of each one's status file.
* **The plan** (:func:`plan`, used by :class:`ReuseRunner`, the project's default runner for
  ``kedro run``): in topological order, a node runs when it is not in the ledger, its
  signature changed (a parameter, an input file or a file a parameter names, the code), one of
  its outputs or the status file of a stage it trains was changed or removed since, one of its
  inputs is re-made by a node that runs, one of its outputs is not a local file (nothing to
  reuse), or it is tagged ``always_run`` (it reads the model registry).  Every other node is
  skipped.
* **What a skipped node leaves on the MLflow run**: each training stage it checked says
  ``<stage>: up to date (fingerprint …, trained in run <id>) — reused`` and gets the tags and
  final metrics :mod:`~ups_kedro.pipelines.stage_cache` gives a reused stage; every skipped
  stage gets ``ups.<stage>.reused_from`` = the run its outputs come from, whose ``<stage>/…``
  metrics are copied (latest values), so the run's name, description and metric columns stay
  complete.  Artifacts stay on the run that made them (the tag names it).

A changed parameter therefore re-runs its node and, because that node rewrites its outputs,
every node downstream of it; ``--params <stage>.force=true`` changes the parameter block too.
Programmatic sessions (``KedroSession.run()``) keep Kedro's plain ``SequentialRunner`` unless
they pass ``runner=ReuseRunner()``; they still write the ledger.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl
from kedro.pipeline import Pipeline
from kedro.runner import SequentialRunner

from ups_kedro.atomic import atomic_file
from ups_kedro.paths import project_root
from ups_kedro.training import stage_status as st

logger = logging.getLogger(__name__)

#: Nodes tagged so read state outside the catalog (the MLflow Model Registry: promotion gates
#: against the current champion, inference may roll it out): they are never skipped.
ALWAYS_RUN_TAG = "always_run"

LEDGER_NAME = "nodes.json"
LEDGER_FORMAT = 1

_ledger_dir: Path | None = None      # <data_dir>/06_models/state (set by the hooks)
_planned: set[str] | None = None     # nodes the current ReuseRunner run executes (None: all)


def ledger_path() -> Path | None:
    return None if _ledger_dir is None else _ledger_dir / LEDGER_NAME


def planned_nodes() -> set[str] | None:
    """The names of the nodes this run executes, while a :class:`ReuseRunner` runs (else None)."""
    return None if _planned is None else set(_planned)


# --------------------------------------------------------------------------------------------
# tokens and signatures


def _sha(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _local_path(dataset: Any) -> Path | None:
    """The local file or folder behind a dataset (``None``: in memory, remote, unknown)."""
    path = getattr(dataset, "_filepath", None)
    if path is None or getattr(dataset, "_protocol", "file") not in ("file", "local"):
        return None
    return Path(str(path))


def path_token(path: Path) -> str:
    """``absent``, or the size and modification time of a file / of every file in a folder."""
    if path.is_file():
        stat = path.stat()
        return f"f{stat.st_size}:{stat.st_mtime_ns}"
    if path.is_dir():
        entries = sorted((str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
                         for p in path.rglob("*") if p.is_file())
        return f"d{_sha(entries)}"
    return "absent"


def _named_files(value: Any) -> dict[str, str]:
    """Tokens of the existing files a parameter block names (``data_processing.file.path``,
    ``inference.initial_condition.path``, checkpoint paths): a file rewritten under the same
    path changes the block's token, so the node that reads it is not skipped."""
    found: dict[str, str] = {}

    def walk(item: Any) -> None:
        if isinstance(item, dict):
            for sub in item.values():
                walk(sub)
        elif isinstance(item, (list, tuple)):
            for sub in item:
                walk(sub)
        elif isinstance(item, str) and 0 < len(item) < 1024 and ("/" in item or "." in item):
            path = Path(item) if Path(item).is_absolute() else project_root() / item
            try:
                if path.is_file():
                    found[item] = path_token(path)
            except OSError:
                pass

    walk(value)
    return found


def dataset_token(catalog: Any, name: str) -> str | None:
    """A token that changes whenever the dataset's content may have changed (``None``: the
    dataset has no local file, so a node reading or writing it is never skipped)."""
    if name == "parameters" or name.startswith("params:"):
        value = catalog.load(name)
        return f"p{_sha([value, _named_files(value)])}"
    try:
        dataset = catalog.get(name)
    except Exception:  # noqa: BLE001 - a name the catalog cannot build: not reusable
        return None
    path = _local_path(dataset)
    return None if path is None else path_token(path)


def signature(node: Any, catalog: Any) -> tuple[str | None, dict[str, str | None]]:
    """(the node's signature or ``None`` when an input has no token, the input tokens)."""
    inputs = {name: dataset_token(catalog, name) for name in node.inputs}
    if any(token is None for token in inputs.values()):
        return None, inputs
    return _sha({"node": node.name, "code": st.code_version(), "inputs": inputs}), inputs


# --------------------------------------------------------------------------------------------
# the ledger


def read_ledger() -> dict[str, dict]:
    """``{node name: entry}``; a missing or unreadable ledger is empty (everything runs)."""
    path = ledger_path()
    if path is None or not path.is_file():
        return {}
    try:
        body = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        logger.warning("node ledger %s is unreadable (%s): every node runs", path, err)
        return {}
    if not isinstance(body, dict) or body.get("format") != LEDGER_FORMAT:
        return {}
    return body.get("nodes") or {}


def _write_ledger(nodes: dict[str, dict]) -> None:
    path = ledger_path()
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(path) as tmp:
        Path(tmp).write_text(json.dumps({"format": LEDGER_FORMAT, "nodes": nodes}, indent=1,
                                        sort_keys=True))


def _why_run(node: Any, catalog: Any, entry: dict | None, remade: set[str]) -> str | None:
    """Why ``node`` must run (``None``: it is up to date)."""
    if ALWAYS_RUN_TAG in node.tags:
        return "it reads the model registry"
    remade_inputs = sorted(set(node.inputs) & remade)
    if remade_inputs:
        return f"input {remade_inputs[0]} is re-made in this run"
    outputs = {name: dataset_token(catalog, name) for name in node.outputs}
    if not outputs or any(token is None for token in outputs.values()):
        return "its outputs are not files"
    if entry is None:
        return "it has not run here before"
    sig, inputs = signature(node, catalog)
    if sig is None:
        return "an input is not a file"
    if sig != entry.get("signature"):
        old = entry.get("inputs") or {}
        changed = sorted(k for k in set(old) | set(inputs) if old.get(k) != inputs.get(k))
        return f"input {changed[0]} changed" if changed else "the code changed"
    for name, token in outputs.items():
        if (entry.get("outputs") or {}).get(name) != token:
            return f"output {name} was changed or removed since run {entry.get('run_id')}"
    for stage, token in _state_tokens(entry.get("stages") or {}).items():
        if (entry.get("state") or {}).get(stage) != token:
            return f"the status file of stage {stage} changed since run {entry.get('run_id')}"
    return None


def _state_tokens(stages: dict[str, str]) -> dict[str, str]:
    """A token of each checked stage's status file: a killed, failed, edited or retrained stage
    changes it, and then its node runs (and the stage cache says why)."""
    return {stage: path_token(st.status_path(project_root() / state_dir))
            for stage, state_dir in stages.items()}


def plan(pipeline: Pipeline, catalog: Any) -> tuple[list[Any], list[tuple[Any, dict]]]:
    """(nodes to run, [(skipped node, its ledger entry)]) in topological order."""
    ledger = read_ledger()
    remade: set[str] = set()
    run, skipped = [], []
    for node in pipeline.nodes:
        entry = ledger.get(node.name)
        reason = _why_run(node, catalog, entry, remade)
        if reason is None:
            skipped.append((node, entry))
            continue
        run.append(node)
        remade.update(node.outputs)
        if entry is not None:  # a node that ran before: say what changed
            logger.info("%s: runs (%s)", node.name, reason)
    return run, skipped


# --------------------------------------------------------------------------------------------
# the runner


def _stage(node: Any) -> str:
    return node.namespace.split(".")[0] if node.namespace else node.name.split(".")[0]


def announce(skipped: list[tuple[Any, dict]]) -> None:
    """Log and record on the MLflow run what the skipped nodes reuse (module docstring)."""
    from ups_kedro.pipelines import stage_cache, tracking

    sources: dict[str, str] = {}
    announced: set[str] = set()  # stages whose reused_from names the run that trained them
    for node, entry in skipped:
        for stage, state_dir in (entry.get("stages") or {}).items():
            if stage_cache.announce_skipped(stage, project_root() / state_dir):
                announced.add(stage)
        logger.debug("%s: up to date (inputs, parameters and code unchanged since run %s) — "
                     "skipped", node.name, entry.get("run_id"))
        if entry.get("run_id"):
            sources.setdefault(_stage(node), entry["run_id"])
    tracking.set_tags({f"ups.{stage}.reused_from": run for stage, run in sources.items()
                       if stage not in announced})
    tracking.copy_stage_metrics(sources)


class ReuseRunner(SequentialRunner):
    """``SequentialRunner`` that skips the nodes that are up to date (module docstring)."""

    def run(self, pipeline: Pipeline, catalog: Any, hook_manager: Any = None,
            run_id: str | None = None, only_missing_outputs: bool = False) -> dict[str, Any]:
        global _planned  # noqa: PLW0603 - one pipeline run at a time per process
        if ledger_path() is None:  # no project hooks (a bare runner): nothing to compare with
            return super().run(pipeline, catalog, hook_manager, run_id, only_missing_outputs)
        to_run, skipped = plan(pipeline, catalog)
        if skipped:
            runs = sorted({entry.get("run_id") or "?" for _, entry in skipped})
            logger.info("Re-run only what changed: %d of %d nodes are up to date and skipped "
                        "(their outputs come from run %s): %s", len(skipped), len(pipeline.nodes),
                        ", ".join(runs), ", ".join(node.name for node, _ in skipped))
            announce(skipped)
        names = [node.name for node in to_run]
        _planned = set(names)
        try:
            return super().run(pipeline.filter(node_names=names) if names else Pipeline([]),
                               catalog, hook_manager, run_id, only_missing_outputs)
        finally:
            _planned = None


# --------------------------------------------------------------------------------------------
# the hooks that write the ledger


class NodeLedgerHooks:
    """Record every node of a successful run in the node ledger (module docstring)."""

    def __init__(self) -> None:
        self._ran: list[Any] = []
        self._stages: dict[str, dict[str, str]] = {}
        self._mark = 0

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        global _ledger_dir  # noqa: PLW0603 - one project per process
        data_dir = context.config_loader["globals"].get("data_dir", "data")
        _ledger_dir = Path(context.project_path) / data_dir / "06_models" / "state"

    @hook_impl
    def before_pipeline_run(self) -> None:
        self._ran, self._stages = [], {}

    @hook_impl
    def before_node_run(self) -> None:
        self._mark = len(st.checked())

    @hook_impl
    def after_node_run(self, node: Any) -> None:
        self._ran.append(node)
        checked = st.checked()[self._mark:]
        if checked:
            self._stages[node.name] = {stage: _relative(path) for stage, path in checked}

    @hook_impl(tryfirst=True)  # the MLflow run is still active
    def after_pipeline_run(self, catalog: Any) -> None:
        if ledger_path() is None or not self._ran:
            return
        from ups_kedro.pipelines.tracking import active_run_id

        nodes = read_ledger()
        for node in self._ran:
            nodes.pop(node.name, None)
            entry = _entry(node, catalog, active_run_id(), self._stages.get(node.name, {}))
            if entry is not None:
                nodes[node.name] = entry
        try:
            _write_ledger(nodes)
        except OSError as err:  # the run's results are saved; only the next run's skip is lost
            logger.warning("node ledger %s not written (%s): the next run re-runs every node",
                           ledger_path(), err)


def _entry(node: Any, catalog: Any, run_id: str | None, stages: dict[str, str]) -> dict | None:
    sig, inputs = signature(node, catalog)
    outputs = {name: dataset_token(catalog, name) for name in node.outputs}
    if sig is None or not outputs or any(t in (None, "absent") for t in outputs.values()):
        return None
    return {"signature": sig, "inputs": inputs, "outputs": outputs, "run_id": run_id,
            "finished": st.now(), "stages": stages, "state": _state_tokens(stages)}


def _relative(path: Path) -> str:
    path = Path(path).resolve()
    try:
        return str(path.relative_to(project_root().resolve()))
    except ValueError:
        return str(path)


def skipped_outputs(pipeline_nodes: Iterable[Any]) -> set[str]:
    """Outputs of ``pipeline_nodes`` that the running :class:`ReuseRunner` will not produce."""
    planned = planned_nodes()
    if planned is None:
        return set()
    return {name for node in pipeline_nodes if node.name not in planned for name in node.outputs}
