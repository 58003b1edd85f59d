"""The surrogate as an MLflow pyfunc model: what the Model Registry holds and serves.

The registered model is the set of stage checkpoints (autoencoder, operator, and the registered
correctors when present, :data:`ups_kedro.stages.TRANSIENT_STAGES`) plus the variant that won
promotion.  ``mlflow.pyfunc.load_model(
"models:/<name>@champion")`` gives a model whose ``predict`` rolls out trajectories::

    model.predict(u0, params={"n_steps": 30})   # u0 [B, *space, C] physical → [B, K, *space, C]

The model is logged with a signature (a float32 tensor ``[-1, *space, C]`` in and out, and the
inference parameter ``n_steps``, default 1) and an input example, so MLflow passes
``params`` through to :meth:`SurrogateModel.predict`; the ``ups_kedro`` package itself is logged
with it (``code_paths``), so the environment MLflow rebuilds needs only pinned PyPI packages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlflow.pyfunc
import numpy as np
import torch

from ups_kedro.evaluation.rollout import latent_rollout
from ups_kedro.evaluation.suite import VariantParams, build_variants
from ups_kedro.evaluation.surrogate import load_surrogate

#: Inference parameters of ``predict`` and their defaults (part of the model signature).
PREDICT_PARAMS = {"n_steps": 1}


def signature(example: np.ndarray, n_steps: int = PREDICT_PARAMS["n_steps"]):
    """Model signature for initial frames like ``example`` [B, *space, C] (float32).

    The output has one more axis (the rolled-out steps); batch and step counts are free (-1).
    """
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    example = np.asarray(example, dtype=np.float32)
    # Unnamed tensors: predict then receives the array itself, not {"name": array}.
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *example.shape[1:]))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, *example.shape[1:]))]),
        params=ParamSchema([ParamSpec("n_steps", "long", n_steps)]))


def load_checkpoint(path: str | Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


class SurrogateModel(mlflow.pyfunc.PythonModel):
    """Rolls out the promoted variant of the surrogate from initial frames."""

    def __init__(self, variant: str = "operator", variant_params: dict | None = None) -> None:
        self.variant = variant
        self.variant_params = variant_params or {}

    def load_context(self, context: Any) -> None:
        self.checkpoints = {k: load_checkpoint(p) for k, p in context.artifacts.items()}
        self.setup(self.checkpoints)

    def setup(self, checkpoints: dict[str, dict]) -> None:
        """Build the surrogate and the promoted variant from checkpoint dicts."""
        from ups_kedro.config import parse

        self.surrogate, _ = load_surrogate(checkpoints)
        params = parse(VariantParams, VariantParams.upgrade(self.variant_params),
                       "variant_params")
        variants, _ = build_variants(self.surrogate, params)
        chosen = [v for v in variants if v.name == self.variant]
        if not chosen:
            raise ValueError(f"variant {self.variant!r} cannot be built from these checkpoints; "
                             f"available: {[v.name for v in variants]}")
        self.step = chosen[0]

    # model_input is left without a type hint: MLflow would validate it against one.
    def predict(self, context, model_input, params: dict | None = None) -> np.ndarray:
        """``model_input`` [B, *space, C] physical initial frames → [B, n_steps, *space, C]."""
        if isinstance(model_input, dict) and len(model_input) == 1:  # a named-tensor caller
            model_input = next(iter(model_input.values()))
        u0 = np.asarray(model_input, dtype=np.float32)
        n_steps = int((params or {}).get("n_steps", PREDICT_PARAMS["n_steps"]))
        if n_steps < 1:
            raise ValueError(f"params n_steps must be >= 1, got {n_steps}")
        s = self.surrogate
        # latent_rollout scores frames initial_step .. T-1: give it 1 frame + n_steps slots.
        fields = np.zeros((u0.shape[0], 1 + n_steps * s.time_stride, *u0.shape[1:]), np.float32)
        fields[:, 0] = u0
        return latent_rollout(fields, s.normaliser, s.encode, self.step.step, s.decode,
                              initial_step=1, time_stride=s.time_stride,
                              on_start=self.step.reset)
