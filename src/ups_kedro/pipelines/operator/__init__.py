"""``operator`` pipeline (Stage 1): the latent operator (conv stack or PDE-Transformer)."""

from ups_kedro.pipelines.operator.pipeline import create_pipeline

__all__ = ["create_pipeline"]
