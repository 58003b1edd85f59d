"""Project pipelines.

Each stage package under ``pipelines/`` is discovered with ``find_pipelines(raise_errors=True)``
so a stage that fails to import stops the run instead of silently vanishing.
``__default__`` chains the training stages end to end; ``promotion`` and ``inference`` run on
request only.
"""

from __future__ import annotations

from kedro.framework.project import find_pipelines
from kedro.pipeline import Pipeline

#: The training chain, in order; a stage joins ``__default__`` once it exists.
DEFAULT_CHAIN = (
    "data_processing",
    "autoencoder",
    "operator",
    "diff_residual",
    "consistency_distill",
    "steady_prior",
    "evaluation",
)


def register_pipelines() -> dict[str, Pipeline]:
    pipelines = find_pipelines(raise_errors=True)
    pipelines["__default__"] = sum(
        (pipelines[name] for name in DEFAULT_CHAIN if name in pipelines), Pipeline([])
    )
    return pipelines
