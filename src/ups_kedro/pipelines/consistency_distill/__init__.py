"""``consistency_distill`` pipeline (Stage 3): a few-step consistency student."""

from ups_kedro.pipelines.consistency_distill.pipeline import create_pipeline

__all__ = ["create_pipeline"]
