"""``data_processing`` pipeline: raw data → splits, prepared fields, normaliser."""

from ups_kedro.pipelines.data_processing.pipeline import create_pipeline

__all__ = ["create_pipeline"]
