"""Project hooks: lineage tags on every MLflow run.

kedro-mlflow starts one MLflow run per ``kedro run``; these hooks add what a reader of the
MLflow UI needs to reproduce it: the git commit (and whether the tree was dirty), the Kedro
configuration environment and the pipeline names.  Stage nodes add their own lineage tags
(the upstream checkpoints they consumed).

:class:`MlflowViewHooks` makes the run readable in the MLflow UI (:mod:`ups_kedro.mlflow_views`):
a meaningful name and description, one comparable run per stage, dataset inputs, system metrics
(CPU, memory; needs ``psutil``) and no noisy kedro-mlflow tags.

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

from kedro.framework.hooks import hook_impl

from ups_kedro.launch_env import launched_rank, launched_world_size
from ups_kedro.paths import project_root, set_project_root
from ups_kedro.training.seeds import base_seed, base_seed_from, set_base_seed

# MLflow, the run views and torch are imported inside the hooks that use them: settings.py
# imports this module for every `kedro` command, and `kedro registry list` or `kedro --help`
# must not pay for them.

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
        import mlflow

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


def _pipeline_name(run_params: dict[str, Any]) -> str:
    return "+".join(run_params.get("pipeline_names") or [
        run_params.get("pipeline_name") or "__default__"])


class MlflowViewHooks:
    """Names, descriptions, stage runs, dataset inputs and system metrics of each run."""

    def __init__(self) -> None:
        self._catalog: Any = None
        self._record: Any = None  # a views.RunRecord from before_pipeline_run on
        self._stages: list[str] = []
        self._ran: set[str] = set()  # stages with a node that ran (not skipped as up to date)
        self._run_params: dict[str, Any] = {}

    @hook_impl
    def after_context_created(self, context: Any) -> None:
        # Before kedro-mlflow starts the run: MLflow then samples CPU/memory in a thread.
        try:
            import psutil  # noqa: F401
        except ImportError:
            logger.warning("psutil is not installed: no system metrics on the MLflow run "
                           "(pip install -r requirements.txt)")
            return
        import mlflow

        mlflow.enable_system_metrics_logging()

    @hook_impl
    def after_catalog_created(self, catalog: Any) -> None:
        self._catalog = catalog

    @hook_impl(trylast=True)  # after kedro-mlflow started the run and set its tags
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any) -> None:
        import mlflow
        from mlflow.tracking import MlflowClient

        from ups_kedro import mlflow_views as views

        self._record = views.RunRecord()
        self._run_params = run_params
        self._stages = views.order_stages(views.stage_of(n.name) for n in pipeline.nodes)
        self._ran = set()
        run = mlflow.active_run()
        if run is not None:
            views.tidy_kedro_tags(MlflowClient(), run.info.run_id)

    def _dataset(self, name: str) -> Any:
        try:
            return self._catalog.get(name) if self._catalog is not None else None
        except Exception:  # noqa: BLE001 - a name the catalog cannot resolve: no path then
            return None

    @hook_impl
    def after_dataset_loaded(self, dataset_name: str, data: Any, node: Any) -> None:
        import mlflow

        from ups_kedro import mlflow_views as views
        from ups_kedro.data.arrays import ArrayBundle

        if (self._record is None or mlflow.active_run() is None
                or not isinstance(data, ArrayBundle)):
            return
        path = getattr(self._dataset(dataset_name), "_filepath", None)
        views.log_array_input(self._record, views.stage_of(node.name), dataset_name, data,
                              str(path) if path else None)

    @hook_impl
    def after_node_run(self, node: Any) -> None:
        self._ran.add(node.name.split(".", 1)[0])

    @hook_impl
    def after_dataset_saved(self, dataset_name: str) -> None:
        import mlflow

        from ups_kedro import mlflow_views as views

        dataset = self._dataset(dataset_name)
        directory = getattr(dataset, "artifact_path", None)  # an MlflowArtifactDataset
        path = getattr(dataset, "_filepath", None)
        if (self._record is not None and mlflow.active_run() is not None
                and directory is not None and path is not None):
            self._record.artifacts.setdefault(views.stage_of(dataset_name), []).append(
                (str(path), directory))

    @hook_impl(tryfirst=True)  # before kedro-mlflow ends the run
    def after_pipeline_run(self, run_params: dict[str, Any]) -> None:
        import mlflow
        from mlflow.exceptions import MlflowException
        from mlflow.tracking import MlflowClient

        from ups_kedro import mlflow_views as views

        run = mlflow.active_run()
        if run is None or self._record is None:
            return
        client = MlflowClient()
        pipeline, env = _pipeline_name(run_params), run_params.get("env") or "local"
        # A stage skipped as up to date (ups_kedro.runner) gets no stage run of its own: its
        # stage run is the one of the run it was reused from (tag ups.<stage>.reused_from).
        ran = [stage for stage in self._stages if stage in self._ran]
        try:
            stage_runs = views.log_stage_runs(client, run.info.run_id, pipeline, env,
                                              ran, self._record)
            data = client.get_run(run.info.run_id).data
            eid = views.stage_experiment_id(client, run.info.experiment_id)
            links = {stage: f"[{cid[:8]}](#/experiments/{eid}/runs/{cid})"  # UI-relative
                     for stage, cid in stage_runs.items()}
            for stage in self._stages:
                source = data.tags.get(f"ups.{stage}.reused_from")
                if stage not in links and source:
                    links[stage] = f"reused from run {source[:8]}"
            client.set_tag(run.info.run_id, "mlflow.runName", views.run_name(
                pipeline, env, data.params, self._stages, data.metrics)[:250])
            client.set_tag(run.info.run_id, "mlflow.note.content", views.description(
                pipeline, env, data.tags, data.params, self._stages, data.metrics, links))
            client.set_tag(run.info.run_id, "ups.stages", ",".join(self._stages))
        except (MlflowException, OSError) as exc:  # the run's results are already saved
            logger.error("MLflow run views (name, stage runs) not written: %s", exc)


class DistributedHooks:
    """Under ``torchrun``: ranks ≠ 0 write no catalog output; all ranks exit cleanly."""

    @hook_impl(tryfirst=True)
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline: Any, catalog: Any) -> None:
        rank = launched_rank()
        if rank is None or launched_world_size() <= 1:
            return
        if rank == 0:
            logger.info("torchrun rank 0 of %d: tracking and writing outputs",
                        launched_world_size())
            return
        from kedro.io import MemoryDataset

        outputs = sorted(pipeline.all_outputs())
        for name in outputs:
            catalog[name] = MemoryDataset(copy_mode="assign")
        logger.info("torchrun rank %d: outputs kept in memory, not written: %s", rank,
                    ", ".join(outputs))

    @hook_impl(trylast=True)  # after kedro-mlflow has ended its run
    def after_pipeline_run(self) -> None:
        if launched_rank() is not None:
            from ups_kedro.training import distributed

            distributed.set_exit_status(0)

    @hook_impl(trylast=True)
    def on_pipeline_error(self) -> None:
        if launched_rank() is not None:
            from ups_kedro.training import distributed

            distributed.set_exit_status(1)
