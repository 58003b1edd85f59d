"""Plain containers for arrays with metadata (no Kedro): what the array datasets save and load."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ArrayBundle:
    """An array (possibly a read-only memmap) and its JSON metadata."""

    array: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ChunkedArray:
    """An array described by its shape and produced chunk by chunk along axis 0."""

    shape: tuple[int, ...]
    dtype: str
    chunks: Iterable[np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)
