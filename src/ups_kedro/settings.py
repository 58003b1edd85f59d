"""Kedro project settings for ups_kedro.

Two things here matter beyond Kedro's defaults:

* Parameters from a non-base environment are *soft*-merged into ``conf/base`` so that
  ``conf/smoke`` (or ``conf/gpu``) overrides only the keys it names.
* The MLflow tracking store and artifact root are anchored at the project root whatever
  the current directory (``sqlite:///mlflow.db`` would otherwise resolve against the cwd and
  silently create a second database).  Tests point both somewhere else through the
  ``MLFLOW_TRACKING_URI`` / ``UPS_MLFLOW_ARTIFACT_ROOT`` environment variables.
* ``RunStatusHooks`` makes the MLflow run record how a run ended (Ctrl-C, SIGTERM, SIGKILL →
  ``KILLED``) and fails fast on an unreachable tracking server; ``DataTransactionHooks`` makes
  ``data_processing`` all-or-nothing and refuses mismatched prepared data downstream.
* Under ``torchrun`` (``RANK`` set) only rank 0 tracks: kedro-mlflow's hooks are disabled on
  every other rank (no MLflow run, no params, no artifacts), and ``DistributedHooks`` keeps
  those ranks' catalog outputs in memory.
* ``StageCacheHooks`` publishes a trained stage's fingerprint and status (re-run only what
  changed: :mod:`ups_kedro.pipelines.stage_cache`); ``NodeLedgerHooks`` records which nodes are
  up to date, so that ``kedro run`` (its default runner, :mod:`ups_kedro.runner`) skips them.

Every ``kedro`` command imports this module (``kedro --help``, ``kedro registry list``): the hook
modules import torch and MLflow only inside their hooks, and the pipelines are built on first
use (:mod:`ups_kedro.pipeline_registry`), so such commands start without either
(``tests/test_cli_startup.py``).
"""

from __future__ import annotations

from kedro.config import OmegaConfigLoader

from ups_kedro.data_integrity import DataTransactionHooks
from ups_kedro.hooks import DistributedHooks, LineageHooks, MlflowViewHooks
from ups_kedro.launch_env import launched_rank
from ups_kedro.paths import mlflow_artifact_root, mlflow_tracking_uri, project_root
from ups_kedro.pipelines.stage_cache import StageCacheHooks
from ups_kedro.run_status import RunStatusHooks, limit_http_retries
from ups_kedro.runner import NodeLedgerHooks

limit_http_retries()  # before kedro-mlflow's first request to an HTTP tracking server
HOOKS = (LineageHooks(), MlflowViewHooks(), DistributedHooks(), RunStatusHooks(),
         DataTransactionHooks(), StageCacheHooks(), NodeLedgerHooks())

# The plugin's module name (underscore): the hyphenated distribution name silently does nothing.
DISABLE_HOOKS_FOR_PLUGINS: tuple[str, ...] = (
    ("kedro_mlflow",) if (launched_rank() or 0) > 0 else ()
)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "merge_strategy": {"parameters": "soft", "mlflow": "soft"},
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"]},
    "custom_resolvers": {
        "ups.project_root": lambda: str(project_root()),
        "ups.tracking_uri": mlflow_tracking_uri,
        "ups.artifact_root": mlflow_artifact_root,
    },
}
