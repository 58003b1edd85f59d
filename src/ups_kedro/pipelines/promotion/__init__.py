"""``promotion``: gate a trained surrogate against the champion and register it (on request)."""

from ups_kedro.pipelines.promotion.pipeline import create_pipeline

__all__ = ["create_pipeline"]
