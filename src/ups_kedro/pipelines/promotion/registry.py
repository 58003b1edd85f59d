"""MLflow Model Registry access for promotion and inference (the only registry code).

A registered version is a pyfunc model (:class:`~ups_kedro.pipelines.promotion.pyfunc.
SurrogateModel`) whose artifacts are the stage checkpoints; version tags record the promoted
variant, its scores and the data it was judged on.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from ups_kedro.pipelines.promotion.pyfunc import SurrogateModel
from ups_kedro.pipelines.upstream import STAGES
from ups_kedro.training.checkpoint import atomic_torch_save

logger = logging.getLogger(__name__)


@dataclass
class RegisteredSurrogate:
    """A registry version loaded back: its checkpoints and the variant it was promoted with."""

    version: str
    run_id: str | None
    variant: str
    variant_params: dict
    checkpoints: dict[str, dict]


def load_registered(model_name: str, alias: str) -> RegisteredSurrogate | None:
    """The version ``model_name@alias`` with its checkpoints, or None if there is none yet."""
    client = MlflowClient()
    try:
        version = client.get_model_version_by_alias(model_name, alias)
    except MlflowException as exc:  # no such model or alias: the first promotion
        logger.info("promotion: no %s@%s in the registry yet (%s)", model_name, alias,
                    str(exc).splitlines()[0])
        return None
    model = mlflow.pyfunc.load_model(f"models:/{model_name}@{alias}")
    wrapper: SurrogateModel = model.unwrap_python_model()
    return RegisteredSurrogate(version.version, version.run_id, wrapper.variant,
                               wrapper.variant_params, wrapper.checkpoints)


def register(checkpoints: dict[str, dict], variant: str, variant_params: dict, model_name: str,
             alias: str, tags: dict[str, str]) -> str:
    """Log the surrogate as a pyfunc model on the active run, register it, move ``alias``.

    Returns the new version number.
    """
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {}
        for stage in STAGES:
            if checkpoints.get(stage) is not None:
                path = Path(tmp) / f"{stage}.pt"
                atomic_torch_save(checkpoints[stage], path)
                artifacts[stage] = str(path)
        info = mlflow.pyfunc.log_model(
            name="surrogate", python_model=SurrogateModel(variant, variant_params),
            artifacts=artifacts,
            # Declared, not inferred: inference from the environment costs a pip freeze.
            pip_requirements=["torch==2.13.0", f"mlflow=={mlflow.__version__}", "ups_kedro"])
    version = mlflow.register_model(info.model_uri, model_name)
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version.version, key, value)
    client.set_registered_model_alias(model_name, alias, version.version)
    return str(version.version)
