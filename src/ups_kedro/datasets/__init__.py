"""Custom Kedro datasets: atomic JSON, memory-mapped arrays, self-describing checkpoints.

The classes are imported on first use (PEP 562): the catalog names them as
``ups_kedro.datasets.<Class>``, and importing this package for one of them (or for
:mod:`ups_kedro.datasets.staging`, which the project's hooks need at start-up) must not import
torch, which only :class:`CheckpointDataset` needs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ups_kedro.datasets.array_dataset import ArrayBundle, ArrayDataset, ChunkedArray
    from ups_kedro.datasets.checkpoint_dataset import CheckpointDataset
    from ups_kedro.datasets.json_dataset import AtomicJSONDataset

#: Exported name → the submodule that defines it.
_HOME = {
    "ArrayBundle": "array_dataset",
    "ArrayDataset": "array_dataset",
    "ChunkedArray": "array_dataset",
    "CheckpointDataset": "checkpoint_dataset",
    "AtomicJSONDataset": "json_dataset",
}

__all__ = sorted(_HOME)


def __getattr__(name: str) -> Any:
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_HOME})
