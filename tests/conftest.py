"""Shared fixtures: a throw-away copy of the Kedro project with its own MLflow store."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# Telemetry off for every Kedro/MLflow call made by the tests.
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


@contextmanager
def project_copy(tmp_path: Path) -> Iterator[Path]:
    """A copy of conf/ and pyproject.toml in tmp_path, tracking to a temporary SQLite store.

    The package itself is imported from the installed (editable) source; only the files a
    run writes — data layers, checkpoints, the MLflow store — land under tmp_path.
    """
    root = tmp_path / "project"
    root.mkdir()
    shutil.copytree(REPO / "conf", root / "conf", ignore=shutil.ignore_patterns("local"))
    (root / "conf" / "local").mkdir()
    shutil.copy(REPO / "pyproject.toml", root / "pyproject.toml")
    (root / "README.md").write_text("test copy\n")
    (root / "src").mkdir()  # bootstrap_project wants src/; the package is the installed one
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
        mp.setenv("UPS_MLFLOW_ARTIFACT_ROOT", str(tmp_path / "mlartifacts"))
        mp.chdir(root)
        try:
            yield root
        finally:
            import mlflow

            while mlflow.active_run() is not None:
                mlflow.end_run()
            from ups_kedro import paths

            paths._SESSION_ROOT = None  # noqa: SLF001 - reset the process-wide root


@pytest.fixture
def project(tmp_path: Path) -> Iterator[Path]:
    """A fresh project copy per test."""
    with project_copy(tmp_path) as root:
        yield root


def run_kedro(root: Path, pipeline: str, env: str = "smoke", params: dict | None = None) -> dict:
    """Run one pipeline in a real KedroSession (kedro-mlflow hooks active)."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(root)
    with KedroSession.create(project_path=root, env=env, runtime_params=params) as session:
        return session.run(pipeline_names=[pipeline])
