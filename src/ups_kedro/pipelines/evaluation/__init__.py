"""``evaluation``: the judge of every stage — decoded PDEBench rollouts of every variant."""

from ups_kedro.pipelines.evaluation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
