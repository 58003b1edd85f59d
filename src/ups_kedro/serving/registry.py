"""MLflow Model Registry access for promotion and inference (the only registry code).

A registered version is a pyfunc model (:class:`~ups_kedro.serving.pyfunc.
SurrogateModel`) whose artifacts are the stage checkpoints; version tags record the promoted
variant, its scores and the data it was judged on.

What makes a version usable elsewhere: a signature with the ``n_steps`` inference parameter and
an input example (:func:`~ups_kedro.serving.pyfunc.signature`), the ``ups_kedro``
package logged with the model (``code_paths``) and exact pins of the packages it imports, and
the run that produced it (``run_id`` on the version).  Stage checkpoints of any run can be
loaded back by run id with :func:`load_run_checkpoint`.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

import ups_kedro
from ups_kedro.serving.pyfunc import SurrogateModel, signature
from ups_kedro.stages import TRANSIENT_STAGES
from ups_kedro.training.checkpoint import atomic_torch_save

logger = logging.getLogger(__name__)

#: PyPI distributions the logged ``ups_kedro`` code imports when the model is loaded.
MODEL_DISTRIBUTIONS = ("torch", "numpy", "mlflow", "kedro", "pandas", "scipy", "h5py")


def pinned_requirements() -> list[str]:
    """Exact pins (``name==version``) of :data:`MODEL_DISTRIBUTIONS` as installed here."""
    # A local version label (torch 2.13.0+cpu) is not on PyPI: pin the public version.
    return [f"{name}=={metadata.version(name).split('+')[0]}" for name in MODEL_DISTRIBUTIONS]


def load_run_checkpoint(run_id: str, stage: str) -> dict:
    """The checkpoint ``<stage>.pt`` that run ``run_id`` logged under ``checkpoints/``.

    Every training run logs its checkpoint there (``MlflowArtifactDataset`` in the catalog), so
    ``load_run_checkpoint(run_id, "operator")`` gives the operator that run trained.
    """
    try:
        path = mlflow.artifacts.download_artifacts(run_id=run_id,
                                                   artifact_path=f"checkpoints/{stage}.pt")
    except MlflowException as exc:
        raise FileNotFoundError(
            f"run {run_id} has no artifact checkpoints/{stage}.pt: pick a run that trained "
            f"{stage} (tag ups.pipeline) or its stage run (tag ups.stage = '{stage}')") from exc
    return torch.load(path, map_location="cpu", weights_only=True)


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
             alias: str, tags: dict[str, str], example: np.ndarray) -> str:
    """Log the surrogate as a pyfunc model on the active run, register it, move ``alias``.

    ``example``: initial frames [B, *space, C] (physical units), the input example and the
    shape of the signature.  Returns the new version number.
    """
    example = np.asarray(example, dtype=np.float32)
    run = mlflow.active_run()
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = {}
        for stage in TRANSIENT_STAGES:
            if checkpoints.get(stage) is not None:
                path = Path(tmp) / f"{stage}.pt"
                atomic_torch_save(checkpoints[stage], path)
                artifacts[stage] = str(path)
        info = mlflow.pyfunc.log_model(
            name="surrogate", python_model=SurrogateModel(variant, variant_params),
            artifacts=artifacts, signature=signature(example), input_example=example,
            # The package travels with the model; the rest is pinned, declared not inferred
            # (inference from the environment costs a pip freeze).
            code_paths=[str(Path(ups_kedro.__file__).parent)],
            pip_requirements=pinned_requirements())
    # Registered through its run (runs:/…): a models:/m-… URI would leave the version without
    # a run_id, so the registry page would not link to the training run.
    source = f"runs:/{run.info.run_id}/surrogate" if run else info.model_uri
    version = mlflow.register_model(source, model_name)
    client = MlflowClient()
    client.update_model_version(
        model_name, version.version,
        description=f"{variant} surrogate; predict(u0, params={{'n_steps': K}}) → K steps. "
                    f"Run {run.info.run_id if run else '(none)'}.")
    for key, value in tags.items():
        client.set_model_version_tag(model_name, version.version, key, value)
    client.set_registered_model_alias(model_name, alias, version.version)
    return str(version.version)

