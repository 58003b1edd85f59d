"""The data store stays true: all-or-nothing data preparation, consistent sets downstream.

:class:`DataTransactionHooks` does three things for every ``kedro run``:

* **All or nothing.**  The outputs of ``data_processing`` describe one data set per branch
  (transient: ``raw_source`` → ``split_manifest`` → ``fields_*`` → ``normaliser``; steady: the
  ``steady_*`` counterparts).  They are written to staged copies (see
  :mod:`ups_kedro.datasets.staging`) and renamed into place only when every node of their branch
  in this run has succeeded; a failure (a NaN found while the fields stream to disk, a bad
  layout, too few samples) discards the staged copies and leaves the store exactly as it was.
* **Consistent sets downstream.**  Before a node of another pipeline consumes a branch's data,
  the records of that branch in the store must agree: the manifest was split from the raw file
  the raw-source record describes (fingerprint), the fields were prepared from that raw file and
  that manifest, and the normaliser was fitted on that manifest's training split.  A mismatched
  set (a hand edit, a copy, an interrupted older version) is refused, naming what to re-run.
* **Which pipeline produces a missing input.**  The run's free inputs learn the registered
  pipeline that produces them, so "does not exist" names the ``kedro run --pipeline`` to run.
"""

from __future__ import annotations

import logging
import os
import uuid
from typing import Any

from kedro.framework.hooks import hook_impl

from ups_kedro.datasets.staging import Deferrable
from ups_kedro.errors import LineageError

logger = logging.getLogger(__name__)

STAGE = "data_processing"
RERUN = f"re-run `kedro run --pipeline {STAGE}`"
#: Branch → (raw record, manifest, prepared arrays, normaliser) without the namespace.
BRANCHES = {
    "transient": ("raw_source", "split_manifest",
                  tuple(f"fields_{s}" for s in ("train", "val", "test")), "normaliser"),
    "steady": ("steady_raw_source", "steady_split_manifest",
               tuple(f"steady_{k}_{s}" for k in ("solutions", "coefficients")
                     for s in ("train", "val", "test")), "steady_normaliser"),
}


def _branch(name: str) -> str | None:
    """The data_processing branch a dataset name belongs to (``None`` when it is not ours)."""
    if not name.startswith(f"{STAGE}."):
        return None
    return "steady" if name.split(".", 1)[1].startswith("steady_") else "transient"


def _dataset(catalog: Any, name: str) -> Any:
    try:
        return catalog.get(name)
    except Exception:  # noqa: BLE001 - a name the catalog cannot build is not ours to stage
        return None


class DataTransactionHooks:
    """Stage ``data_processing`` outputs; commit per branch; check sets before they are used."""

    def __init__(self) -> None:
        self._pending: dict[str, set[str]] = {}       # branch → outputs still to be saved
        self._staged: dict[str, list[Deferrable]] = {}  # branch → datasets writing staged copies
        self._checked: set[str] = set()
        self._nodes: list[Any] = []
        self._pruned = False

    @hook_impl
    def before_pipeline_run(self, pipeline: Any, catalog: Any) -> None:
        self._pending, self._staged, self._checked = {}, {}, set()
        self._nodes, self._pruned = list(pipeline.nodes), False
        token = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        for node in pipeline.nodes:
            for name in node.outputs:
                branch, dataset = _branch(name), _dataset(catalog, name)
                if branch is None or not isinstance(dataset, Deferrable):
                    continue
                dataset.defer(token)
                self._pending.setdefault(branch, set()).add(name)
                self._staged.setdefault(branch, []).append(dataset)
        _name_producers(pipeline, catalog)

    @hook_impl
    def before_node_run(self, node: Any, catalog: Any) -> None:
        if not self._pruned:
            self._prune_skipped()
        if node.namespace == STAGE:
            return
        for branch in {_branch(name) for name in node.inputs} - {None} - self._checked:
            self._checked.add(branch)
            check_consistent(catalog, branch)

    def _prune_skipped(self) -> None:
        """A branch commits once its outputs *of this run* are staged: outputs of the nodes the
        runner skips as up to date (:mod:`ups_kedro.runner`) are not awaited."""
        from ups_kedro.runner import skipped_outputs

        self._pruned = True
        skipped = skipped_outputs(self._nodes)
        for branch in list(self._pending):
            self._pending[branch] -= skipped
            if not self._pending[branch]:  # nothing of this branch runs: nothing is staged
                del self._pending[branch]

    @hook_impl
    def after_dataset_saved(self, dataset_name: str) -> None:
        branch = _branch(dataset_name)
        pending = self._pending.get(branch or "")
        if pending and dataset_name in pending:
            pending.discard(dataset_name)
            if not pending:  # the branch's last output of this run is staged: swap them all in
                self._commit(branch)

    @hook_impl
    def on_pipeline_error(self) -> None:
        discarded = [branch for branch, datasets in self._staged.items() if datasets]
        for datasets in self._staged.values():
            for dataset in datasets:
                dataset.discard()
        if discarded:
            logger.warning("data_processing: run failed; its outputs (%s) were not written, the "
                           "data store is unchanged", ", ".join(discarded))
        self._staged = {}

    def _commit(self, branch: str) -> None:
        datasets = self._staged.pop(branch, [])
        committed = sum(dataset.commit() for dataset in datasets)
        logger.info("data_processing (%s): %d outputs written together", branch, committed)


def _name_producers(pipeline: Any, catalog: Any) -> None:
    """Tell each free input of this run which registered pipeline produces it."""
    import importlib
    import pkgutil

    import ups_kedro.pipelines as stages

    try:
        producers: dict[str, str] = {}
        # Kedro builds only the pipelines a run asks for: build every stage's here (cheap)
        for info in pkgutil.iter_modules(stages.__path__):
            module = importlib.import_module(f"{stages.__name__}.{info.name}")
            if info.ispkg and hasattr(module, "create_pipeline"):
                for output in module.create_pipeline().all_outputs():
                    producers.setdefault(output, info.name)
    except Exception:  # noqa: BLE001 - outside a configured project: generic hints remain
        return
    for name in pipeline.inputs():
        dataset = _dataset(catalog, name) if name in producers else None
        if dataset is not None:
            dataset._ups_producer = producers[name]  # noqa: SLF001 - read by producer_hint


def _load(catalog: Any, name: str) -> Any:
    """The stored record, or ``None`` when it does not exist (the consumer reports that)."""
    if not catalog.exists(name):
        return None
    return catalog.load(name)


def check_consistent(catalog: Any, branch: str) -> None:
    """Refuse a branch whose stored records do not describe one data set (see module doc)."""
    raw_name, manifest_name, array_names, norm_name = BRANCHES[branch]
    raw = _load(catalog, f"{STAGE}.{raw_name}")
    manifest = _load(catalog, f"{STAGE}.{manifest_name}")
    if not isinstance(raw, dict) or not isinstance(manifest, dict) or raw.get("skipped") \
            or manifest.get("skipped"):
        return
    fingerprint, manifest_hash = raw.get("fingerprint"), manifest.get("hash")
    problems = []
    if manifest.get("source_fingerprint") != fingerprint:
        problems.append(f"{manifest_name} was split from raw data "
                        f"{manifest.get('source_fingerprint')}, but {raw_name} describes "
                        f"{fingerprint}")
    for name in array_names:
        bundle = _load(catalog, f"{STAGE}.{name}")
        meta = getattr(bundle, "meta", None) or {}
        if bundle is None or meta.get("skipped"):
            continue
        if meta.get("source_fingerprint", fingerprint) != fingerprint:
            problems.append(f"{name} was prepared from raw data {meta.get('source_fingerprint')}, "
                            f"not {fingerprint}")
        if meta.get("split_manifest_hash") != manifest_hash:
            problems.append(f"{name} belongs to split manifest {meta.get('split_manifest_hash')}, "
                            f"not {manifest_hash}")
    normaliser = _load(catalog, f"{STAGE}.{norm_name}")
    if isinstance(normaliser, dict) and not normaliser.get("skipped") \
            and normaliser.get("split_manifest_hash") != manifest_hash:
        problems.append(f"{norm_name} was fitted on split manifest "
                        f"{normaliser.get('split_manifest_hash')}, not {manifest_hash}")
    if problems:
        shown = "; ".join(problems[:2]) + (f"; and {len(problems) - 2} more"
                                           if len(problems) > 2 else "")
        raise LineageError(
            f"the prepared data in the store do not belong together ({shown}): "
            f"{RERUN}" + (" --tags steady" if branch == "steady" else "") + " to rebuild them")
