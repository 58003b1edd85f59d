"""Project hooks: lineage tags on every MLflow run.

kedro-mlflow starts one MLflow run per ``kedro run``; these hooks add what a reader of the
MLflow UI needs to reproduce it: the git commit (and whether the tree was dirty), the Kedro
configuration environment and the pipeline names.  Stage nodes add their own lineage tags
(the upstream checkpoints they consumed).

:class:`DistributedHooks` makes ``torchrun ... kedro run`` safe: on ranks ≠ 0 (kedro-mlflow
is switched off there in ``settings.py``) every dataset the run *produces* is replaced by an
in-memory dataset, so downstream nodes still get their inputs but nothing is written to disk
or logged; every rank leaves through the training engine's clean-exit path so gloo's
occasional abort at exit cannot fail a finished run.
"""

from __future__ import annotations

import logging
import subprocess
from typing import Any

import mlflow
from kedro.framework.hooks import hook_impl
from kedro.io import MemoryDataset

from ups_kedro.paths import project_root, set_project_root
from ups_kedro.training import distributed
from ups_kedro.training.seeds import base_seed, base_seed_from, set_base_seed

logger = logging.getLogger(__name__)


def git_state() -> dict[str, str]:
    """Commit hash and dirty flag of the project checkout ('unknown' outside git)."""
    root = project_root()

    def _git(*args: str) -> str:
        out = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
        )
        if out.returncode != 0:
            raise RuntimeError(out.stderr.strip())
        return out.stdout.strip()

    try:
        commit = _git("rev-parse", "HEAD")
        dirty = bool(_git("status", "--porcelain", "--untracked-files=no"))
    except (OSError, RuntimeError, subprocess.SubprocessError):
        return {"git_commit": "unknown", "git_dirty": "unknown"}
    return {"git_commit": commit, "git_dirty": str(dirty).lower()}


class LineageHooks:
    """Pin the project root, and tag each kedro-mlflow run with git commit, env and pipeline."""

    # tryfirst: kedro-mlflow reads mlflow.yml (whose resolvers need the root) in its own
    # after_context_created.
    @hook_impl(tryfirst=True)
    def after_context_created(self, context: Any) -> None:
        set_project_root(context.project_path)
        # Every stage without its own train.seed derives it from this one (training.seeds).
        set_base_seed(base_seed_from(context.config_loader["globals"], context.params))

    # trylast: kedro-mlflow's own before_pipeline_run must have started the run first.
    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params: dict[str, Any]) -> None:
        if mlflow.active_run() is None:
            return
        pipelines = run_params.get("pipeline_names") or [
            run_params.get("pipeline_name") or "__default__"
        ]
        tags = {
            **{f"ups.{k}": v for k, v in git_state().items()},
            "ups.config_env": run_params.get("env") or "local",
            "ups.pipeline": "+".join(pipelines),
            "ups.seed": str(base_seed()),
        }
        mlflow.set_tags(tags)
        logger.info("MLflow lineage tags: %s", tags)


class DistributedHooks:
    """Under ``torchrun``: ranks ≠ 0 write no catalog output; all ranks exit cleanly."""

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        rank = distributed.launched_rank()
        if rank is None or distributed.launched_world_size() <= 1:
            return
        if rank == 0:
            logger.info("torchrun rank 0 of %d: tracking and writing outputs",
                        distributed.launched_world_size())
            return
        outputs = sorted(pipeline.all_outputs())
        for name in outputs:
            catalog[name] = MemoryDataset(copy_mode="assign")
        logger.info("torchrun rank %d: outputs kept in memory, not written: %s", rank,
                    ", ".join(outputs))

    @hook_impl(trylast=True)  # after kedro-mlflow has ended its run
    def after_pipeline_run(self) -> None:
        if distributed.launched_rank() is not None:
            distributed.set_exit_status(0)

    @hook_impl(trylast=True)
    def on_pipeline_error(self) -> None:
        if distributed.launched_rank() is not None:
            distributed.set_exit_status(1)
