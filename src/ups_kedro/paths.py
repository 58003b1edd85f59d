"""Where the project lives on disk, and where MLflow writes, independent of the cwd."""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variables that redirect MLflow (tests use a temporary store).
TRACKING_URI_ENV = "MLFLOW_TRACKING_URI"
ARTIFACT_ROOT_ENV = "UPS_MLFLOW_ARTIFACT_ROOT"


_SESSION_ROOT: Path | None = None


def set_project_root(path: str | os.PathLike[str]) -> None:
    """Pin the project root to the running Kedro session's project path (see hooks)."""
    global _SESSION_ROOT  # noqa: PLW0603 - one process-wide session root, set by a hook
    _SESSION_ROOT = Path(path).resolve()


def project_root() -> Path:
    """The directory holding ``pyproject.toml`` and ``conf/``.

    The Kedro session's project path when a session runs (so relative paths in parameters
    resolve like the catalog's); otherwise found next to the package source first (the project is installed editable), else by
    walking up from the current directory (a non-editable install run from the project).
    """
    if _SESSION_ROOT is not None:
        return _SESSION_ROOT
    for start in (Path(__file__).resolve().parent, Path.cwd()):
        for candidate in (start, *start.parents):
            if (candidate / "pyproject.toml").is_file() and (candidate / "conf").is_dir():
                return candidate
    raise RuntimeError(
        "Cannot find the ups_kedro project root (a folder with pyproject.toml and conf/). "
        "Run from inside the project."
    )


def mlflow_tracking_uri() -> str:
    """SQLite tracking URI anchored at the project root, unless ``MLFLOW_TRACKING_URI`` is set."""
    uri = os.environ.get(TRACKING_URI_ENV)
    if uri:
        return uri
    return f"sqlite:///{project_root() / 'mlflow.db'}"


def mlflow_artifact_root() -> str:
    """Artifact root for the project's experiment (``<root>/mlartifacts`` by default)."""
    root = os.environ.get(ARTIFACT_ROOT_ENV)
    return root if root else str(project_root() / "mlartifacts")
