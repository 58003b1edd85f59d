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
    with _inside(tmp_path) as root:
        yield root


_EMPTY_STORE: list[Path] = []


def _empty_store() -> Path:
    """An empty MLflow SQLite store with its schema, created once per test process.

    Creating the schema (MLflow's migrations) takes seconds; every project copy starts from a
    copy of this file instead.
    """
    if not _EMPTY_STORE:
        import atexit
        import tempfile

        from mlflow.store.tracking.sqlalchemy_store import SqlAlchemyStore

        folder = Path(tempfile.mkdtemp(prefix="ups_mlflow_template_"))
        atexit.register(shutil.rmtree, folder, ignore_errors=True)
        store = SqlAlchemyStore(f"sqlite:///{folder / 'mlflow.db'}", str(folder / "artifacts"))
        store.engine.dispose()
        _EMPTY_STORE.append(folder / "mlflow.db")
    return _EMPTY_STORE[0]


@contextmanager
def _inside(tmp_path: Path) -> Iterator[Path]:
    """Work in the project copy ``tmp_path/project`` with its MLflow store ``tmp_path``."""
    root = tmp_path / "project"
    if not (tmp_path / "mlflow.db").exists():
        shutil.copy(_empty_store(), tmp_path / "mlflow.db")
    import mlflow

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    before = mlflow.get_tracking_uri()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("UPS_MLFLOW_ARTIFACT_ROOT", str(tmp_path / "mlartifacts"))
        mp.chdir(root)
        # kedro-mlflow sets MLflow's process-wide tracking URI in every session, and that wins
        # over the environment variable: a test reading MLflow directly (no session of its own
        # yet) would otherwise search the store of whichever session ran last in this process.
        mlflow.set_tracking_uri(uri)
        try:
            yield root
        finally:
            while mlflow.active_run() is not None:
                mlflow.end_run()
            mlflow.set_tracking_uri(before)
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


@pytest.fixture(scope="session")
def smoke_chain(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``make run`` (the smoke ``__default__`` pipeline: data → every stage → evaluation) once
    per test session, in a real KedroSession with a real MLflow store.

    The folder returned (the project copy and its MLflow store) stays pristine: a test module
    that runs further pipelines on it works in its own copy, :func:`chain_copy`.
    """
    tmp = tmp_path_factory.mktemp("smoke_chain")
    with project_copy(tmp) as root, pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "1")  # smoke runs last seconds
        run_kedro(root, "__default__")
    return tmp


@contextmanager
def chain_copy(smoke_chain: Path, tmp_path: Path) -> Iterator[Path]:
    """Work in a copy of the :func:`smoke_chain` project and its MLflow store.

    Runs the copy adds go to the copied store; MLflow keeps artifact locations absolute, so
    the chain's artifacts are read from (and new ones written beside) the original's
    ``mlartifacts`` under fresh run ids, which the copies never share.
    """
    target = tmp_path / "chain"
    shutil.copytree(smoke_chain, target, symlinks=True)
    with _inside(target) as root:
        yield root
