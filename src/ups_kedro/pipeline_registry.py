"""Project pipelines, built on first use.

Each stage package under ``pipelines/`` is a pipeline of the same name; ``__default__`` chains
the training stages end to end; ``promotion`` and ``inference`` run on request only.

The registry lists the stage folders without importing them: each value is a
:class:`LazyPipeline` that imports its stage (and so torch) the first time Kedro touches its
nodes.  ``kedro registry list`` and ``kedro --help`` therefore start in about a second, while
``kedro run`` builds exactly the pipelines it runs.  A stage that fails to import still stops
the run that needs it, with an :class:`ImportError` naming the stage and chained to the cause
(as ``find_pipelines(raise_errors=True)`` did); the other commands and stages keep working.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib import resources
from typing import Any

from kedro.pipeline import Pipeline

from ups_kedro.stages import BASE_STAGES, corrector_names

PACKAGE = "ups_kedro.pipelines"

#: The training chain, in order; a stage joins ``__default__`` once it exists.
DEFAULT_CHAIN = (
    "data_processing",
    *BASE_STAGES,
    *corrector_names(),  # the corrector stages, in training order (ups_kedro.stages)
    "steady_prior",
    "evaluation",
)


class LazyPipeline(Pipeline):
    """A :class:`Pipeline` whose nodes are built by ``build()`` on first attribute access.

    It is a real ``Pipeline`` to every consumer (``isinstance``, ``+``, ``.nodes``, kedro-viz):
    ``Pipeline.__init__`` is deferred, and ``__getattr__`` (Python calls it only for attributes
    the instance does not have yet, i.e. every ``Pipeline`` attribute before the build) builds
    the pipeline once and adopts its state.
    """

    def __init__(self, name: str, build: Callable[[], Pipeline]) -> None:  # noqa: D107
        # No super().__init__(): that is the expensive part, done by _materialise.
        self.__dict__["_lazy"] = (name, build)

    def __getattr__(self, attr: str) -> Any:
        lazy = self.__dict__.get("_lazy")
        if lazy is None or attr.startswith("__"):
            raise AttributeError(f"{type(self).__name__!r} object has no attribute {attr!r}")
        name, build = lazy
        built = build()
        # A built pipeline's state is its instance __dict__ (no __slots__ in Pipeline).
        self.__dict__.update(built.__dict__)
        del self.__dict__["_lazy"]
        return getattr(self, attr)

    @property
    def is_built(self) -> bool:
        return "_lazy" not in self.__dict__


def stage_names() -> list[str]:
    """The stage packages under ``ups_kedro/pipelines`` (sorted), found without importing them."""
    root = resources.files(PACKAGE)
    return sorted(entry.name for entry in root.iterdir()
                  if entry.is_dir() and not entry.name.startswith(("_", "."))
                  and entry.joinpath("__init__.py").is_file())


def build_stage(name: str) -> Pipeline:
    """Import ``ups_kedro.pipelines.<name>`` and return its ``create_pipeline()``.

    Raises:
        ImportError: the stage does not import or has no ``create_pipeline`` returning a
            ``Pipeline``; the message names the stage, the cause is chained.  (Never an
            ``AttributeError``: :meth:`LazyPipeline.__getattr__` would turn that into a
            misleading "no attribute".)
    """
    module_name = f"{PACKAGE}.{name}"
    try:
        module = importlib.import_module(module_name)
        create = getattr(module, "create_pipeline", None)
        if not callable(create):
            raise ImportError(f"{module_name} has no create_pipeline() function")
        pipeline = create()
    except Exception as exc:
        raise ImportError(f"pipeline {name!r} could not be built: {module_name} failed "
                          f"({type(exc).__name__}: {exc}); fix the stage or move its folder "
                          f"out of ups_kedro/pipelines") from exc
    if not isinstance(pipeline, Pipeline):
        raise ImportError(f"{module_name}.create_pipeline() returned {type(pipeline).__name__}, "
                          "not a kedro Pipeline")
    return pipeline


def _chain(stages: dict[str, Pipeline]) -> Pipeline:
    return sum((stages[name] for name in DEFAULT_CHAIN if name in stages), Pipeline([]))


def register_pipelines() -> dict[str, Pipeline]:
    """Every stage and ``__default__``, each built when Kedro first uses it."""
    stages: dict[str, Pipeline] = {
        name: LazyPipeline(name, lambda name=name: build_stage(name)) for name in stage_names()
    }
    return {**stages, "__default__": LazyPipeline("__default__", lambda: _chain(stages))}
