"""Re-run only what changed: a training node reuses its published checkpoint when up to date.

Each training node calls :func:`reuse` first thing::

    if (ckpt := stage_cache.reuse(STAGE, cfg, state_dir, inputs={...})) is not None:
        return ckpt

It computes the stage's fingerprint (:mod:`ups_kedro.training.stage_status`: parameters,
inputs, code version, seed) and compares it with the stage's status file
(``<state_dir>/status.json``).  **Up to date** (the last run *finished* with this fingerprint and
its published checkpoint is still the one it wrote): one log line
``operator: up to date (fingerprint ab12…, trained in run <id>) — reused``, the tag
``ups.<stage>.reused_from`` = that run on the MLflow run, its final metrics copied, and the
checkpoint returned (seconds).  Otherwise the reason is logged (which parameter or input
changed, ``<stage>.force``, a killed run that will resume) and the status becomes ``running``.

:class:`StageCacheHooks` completes the cycle: when Kedro saves the checkpoint of a stage that
trained, it stamps ``lineage.stage_fingerprint`` / ``lineage.training_id`` into it first and
marks the status ``finished`` with the checkpoint's path only after the save (so *finished*
always means *published*); a failing node marks it ``failed``.  A kill leaves ``running`` with a
free lock, read as ``killed``; the next run resumes from ``last.pt``.

A new ``training_id`` per fresh training (kept across resumes) goes into the checkpoint's
lineage, so every consumer's input fingerprint changes when a stage retrains, even with the
same fingerprint (``force``): everything downstream retrains too.

:func:`dry_run` (``kedro status``) runs each training node up to this check only.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from kedro.framework.hooks import hook_impl

from ups_kedro.launch_env import launched_rank
from ups_kedro.paths import project_root
from ups_kedro.pipelines.tracking import active_run_id, log_artifact, log_metrics, set_tags
from ups_kedro.training import stage_status as st

logger = logging.getLogger(__name__)


@dataclass
class Verdict:
    """What :func:`reuse` decided (``state``: ``up to date`` / ``train`` / ``resume``)."""

    stage: str
    state: str
    reason: str
    fingerprint: str = ""


class DryRunVerdict(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by :func:`reuse` in dry-run mode, carrying the verdict (nothing is trained)."""

    def __init__(self, verdict: Verdict) -> None:
        super().__init__(verdict.reason)
        self.verdict = verdict


_dry_run = False


def set_dry_run(on: bool) -> None:
    global _dry_run  # noqa: PLW0603 - a process-wide mode of the `kedro status` command
    _dry_run = on


def _rank0() -> bool:
    """Under torchrun only rank 0 writes the status (the other ranks hold no lock either)."""
    return (launched_rank() or 0) == 0


def short(fp: str) -> str:
    return f"{fp[:8]}…"


def reuse(stage: str, cfg: Any, state_dir: Path, inputs: Mapping[str, Any],
          force: bool | None = None) -> dict | None:
    """The published checkpoint when ``stage`` is up to date, else ``None`` (train it).

    Args:
        stage: the stage name (``lineage.stage`` of its checkpoint).
        cfg: the parsed parameter block (its ``train.seed`` is resolved by parsing).
        state_dir: the stage's state folder (``last.pt``, ``.lock``, ``status.json``).
        inputs: the node's inputs that determine the result (checkpoints, array bundles,
            normalisers), by name.
        force: retrain even when up to date (default: ``cfg.force``).
    """
    force = bool(getattr(cfg, "force", False)) if force is None else force
    train = getattr(cfg, "train", None)
    parts = st.components(stage, cfg, inputs, getattr(train, "seed", None))
    fp = st.fingerprint(parts)
    verdict, ckpt, status = _decide(stage, fp, parts, Path(state_dir), force)
    if _dry_run:
        raise DryRunVerdict(verdict)
    st.note_checked(stage, Path(state_dir))
    if ckpt is not None:
        _announce_reuse(stage, fp, status, ckpt)
        return ckpt
    logger.info("%s: %s (fingerprint %s): %s", stage,
                "resuming" if verdict.state == "resume" else "training", short(fp),
                verdict.reason)
    _begin(stage, fp, parts, Path(state_dir), status if verdict.state == "resume" else None)
    return None


def _decide(stage: str, fp: str, parts: dict, state_dir: Path, force: bool
            ) -> tuple[Verdict, dict | None, st.StageStatus | None]:
    """(verdict, checkpoint to reuse or None, previous status)."""
    try:
        status = st.read_status(state_dir)
    except st.StatusFileError as err:
        logger.warning("%s: %s — it is not trusted: the stage retrains (and writes a new one)",
                       stage, err)
        return Verdict(stage, "train", f"{err}", fp), None, None
    if status is None:
        return Verdict(stage, "train", "no previous run here", fp), None, None
    state = st.effective_state(status, state_dir)
    if status.fingerprint != fp:
        why = f"changed since run {status.run_id}: {st.explain(status.components, parts)}"
        return Verdict(stage, "train", why, fp), None, status
    if state in (st.KILLED, st.FAILED, st.RUNNING):
        return (Verdict(stage, "resume", f"the previous run ({status.run_id}) was {state} after "
                        f"epoch {status.epochs_done}: continuing from its last completed epoch",
                        fp), None, status)
    if force:
        return Verdict(stage, "train", f"{stage}.force is true", fp), None, status
    ckpt, problem = _published(status, fp)
    if ckpt is None:
        return Verdict(stage, "train", problem, fp), None, status
    return (Verdict(stage, "up to date", f"trained in run {status.run_id}", fp), ckpt, status)


def _published(status: st.StageStatus, fp: str) -> tuple[dict | None, str]:
    """The finished run's checkpoint, if it is still the one that run published."""
    from ups_kedro.datasets.checkpoint_dataset import load_checkpoint_file
    from ups_kedro.errors import CorruptArtifactError

    path = project_root() / (status.checkpoint or "")  # relative: the project may move
    if not status.checkpoint or not path.is_file():
        return None, f"its published checkpoint {status.checkpoint} is gone"
    if _dry_run:
        return {}, ""
    try:
        ckpt = load_checkpoint_file(path, "re-run the stage")
    except CorruptArtifactError as err:
        return None, f"its published checkpoint is unusable ({err})"
    lineage = ckpt.get("lineage") or {}
    if (lineage.get("stage_fingerprint") != fp
            or lineage.get("training_id") != status.checkpoint_id):
        return None, f"the checkpoint at {path} was replaced by another run's"
    return ckpt, ""


def announce_skipped(stage: str, state_dir: Path) -> bool:
    """Say and record that ``stage`` is up to date when its node was not even run.

    The node ledger (:mod:`ups_kedro.runner`) skipped the node because nothing it reads
    changed; the stage's status file still tells which run trained it.  Same log line, tags
    and metrics as a reuse decided inside the node; ``False`` when the status is unusable (the
    caller then only says that the node was skipped).
    """
    try:
        status = st.read_status(Path(state_dir))
    except st.StatusFileError:
        return False
    if status is None or status.state != st.FINISHED:
        return False
    _announce_reuse(stage, status.fingerprint, status, {})
    return True


def _announce_reuse(stage: str, fp: str, status: st.StageStatus | None, ckpt: dict) -> None:
    source = status.run_id if status else None
    logger.info("%s: up to date (fingerprint %s, trained in run %s) — reused", stage, short(fp),
                source)
    set_tags({f"ups.{stage}.reused_from": str(source), f"ups.{stage}.fingerprint": fp})
    final = {**(status.final_metrics if status else {}), **_scalars(ckpt.get("metrics") or {})}
    log_metrics(stage, final, step=status.epochs_done if status else None)


def _begin(stage: str, fp: str, parts: dict, state_dir: Path,
           resumed: st.StageStatus | None) -> None:
    """Status ``running`` (unless another live run holds the stage: fit then says so)."""
    if st.lock_is_held(state_dir) or not _rank0():
        return
    status = st.StageStatus(
        stage=stage, fingerprint=fp, state=st.RUNNING, components=parts,
        epochs_done=resumed.epochs_done if resumed else 0, started=st.now(),
        run_id=active_run_id(), pid=os.getpid(), host=socket.gethostname(),
        checkpoint_id=(resumed.checkpoint_id if resumed and resumed.checkpoint_id
                       else uuid.uuid4().hex[:16]))
    st.write_status(state_dir, status)
    st.begin_pending(stage, state_dir, status)


# --------------------------------------------------------------------------------------------
# hooks


class StageCacheHooks:
    """Stamp and publish: the status of a trained stage becomes ``finished`` once saved."""

    def __init__(self) -> None:
        self._catalog: Any = None

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        data_dir = context.config_loader["globals"].get("data_dir", "data")
        st.set_log_dir(Path(context.project_path) / data_dir / "08_reporting" / "logs")

    @hook_impl
    def after_catalog_created(self, catalog: Any) -> None:
        self._catalog = catalog

    @hook_impl
    def before_dataset_saved(self, dataset_name: str, data: Any) -> None:
        pending = st.pending(_stage_of(data))
        if pending is not None:
            data["lineage"]["stage_fingerprint"] = pending.status.fingerprint
            data["lineage"]["training_id"] = pending.status.checkpoint_id

    @hook_impl
    def after_dataset_saved(self, dataset_name: str, data: Any) -> None:
        stage = _stage_of(data)
        pending = st.pop_pending(stage)
        if pending is None:
            return
        status = pending.status
        try:
            dataset = self._catalog.get(dataset_name) if self._catalog is not None else None
        except Exception:  # noqa: BLE001 - unresolvable name: no path, so never reused
            dataset = None
        path = getattr(dataset, "_filepath", None)
        status.state = st.FINISHED
        status.finished = st.now()
        status.checkpoint = _relative(Path(path)) if path else None
        status.epochs_done = int((data.get("metrics") or {}).get("epochs_run", status.epochs_done))
        # The checkpoint's own summary (best_val_loss, ...) too: a stage skipped without loading
        # its checkpoint (ups_kedro.runner) reports it from here.
        status.final_metrics = {**status.final_metrics, **_scalars(data.get("metrics") or {})}
        st.write_status(pending.state_dir, status)
        _log_jsonl_artifact(stage)

    @hook_impl
    def on_node_error(self) -> None:
        for stage, pending in st.all_pending().items():
            pending.status.state = st.FAILED
            pending.status.finished = st.now()
            st.write_status(pending.state_dir, pending.status)
            _log_jsonl_artifact(stage)
            st.pop_pending(stage)


def _scalars(metrics: Mapping[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)}


def _relative(path: Path) -> str:
    """``path`` relative to the project root when inside it (a copied project still finds its
    own checkpoints), else absolute."""
    path = path.resolve()
    try:
        return str(path.relative_to(project_root().resolve()))
    except ValueError:
        return str(path)


def _stage_of(data: Any) -> str | None:
    if isinstance(data, dict) and isinstance(data.get("lineage"), dict):
        return data["lineage"].get("stage")
    return None


def _log_jsonl_artifact(stage: str) -> None:
    path = st.jsonl_path(stage)
    if path is not None and path.is_file():
        log_artifact(path, "logs")
