"""``inference``: roll out (or solve for a steady state) from a file, on request."""

from ups_kedro.pipelines.inference.pipeline import create_pipeline

__all__ = ["create_pipeline"]
