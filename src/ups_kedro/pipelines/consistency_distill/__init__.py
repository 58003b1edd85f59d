"""``consistency_distill`` pipeline (Stage 3): a few-step consistency student."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kedro.pipeline import Pipeline

__all__ = ["create_pipeline"]


def __getattr__(name: str) -> Callable[..., Pipeline]:
    # Lazy: importing this stage's config must not import Kedro (or torch via the nodes).
    if name == "create_pipeline":
        return importlib.import_module(f"{__name__}.pipeline").create_pipeline
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
