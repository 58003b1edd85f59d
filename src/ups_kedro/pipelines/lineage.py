"""Lineage records for checkpoints and MLflow tags (kedro-layer glue)."""

from __future__ import annotations

from typing import Any

from ups_kedro.config import to_dict
from ups_kedro.data.prepare import content_hash
from ups_kedro.checks import require_meta, require_same  # noqa: F401 - the nodes' import
from ups_kedro.hooks import git_state
from ups_kedro.pipelines.tracking import active_run_id, set_tags


def make_lineage(stage: str, config: Any, **upstream: Any) -> dict[str, Any]:
    """What produced an artifact: stage, config hash, git commit, MLflow run, upstream ids."""
    return {
        "stage": stage,
        "config_hash": content_hash(to_dict(config)),
        **git_state(),
        "mlflow_run_id": active_run_id(),
        **upstream,
    }


def tag_upstream(stage: str, **upstream: Any) -> None:
    """Record on the MLflow run which upstream artifacts this stage consumed."""
    set_tags({f"ups.{stage}.input.{k}": str(v) for k, v in upstream.items() if v is not None})
