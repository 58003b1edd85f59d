"""``steady_prior`` pipeline (Stage 4): a steady-state prior trained on real steady states."""

from ups_kedro.pipelines.steady_prior.pipeline import create_pipeline

__all__ = ["create_pipeline"]
