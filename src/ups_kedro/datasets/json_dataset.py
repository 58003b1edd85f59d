"""A local JSON dataset whose saves are atomic (kedro-datasets' JSONDataset is not)."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset, DatasetError

from ups_kedro.atomic import atomic_file


class AtomicJSONDataset(AbstractDataset[Any, Any]):
    """Save/load a JSON-serialisable object at ``filepath`` (local filesystem).

    Example catalog entry::

        split_manifest:
          type: ups_kedro.datasets.AtomicJSONDataset
          filepath: data/02_intermediate/split_manifest.json
    """

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = PurePosixPath(filepath)
        self.metadata = metadata

    def load(self) -> Any:
        path = Path(self._filepath)
        if not path.is_file():
            raise DatasetError(
                f"{path} does not exist: run the pipeline that produces it first"
            )
        with path.open() as f:
            return json.load(f)

    def save(self, data: Any) -> None:
        with atomic_file(self._filepath) as tmp:
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


def _jsonable(obj: Any) -> Any:
    """numpy scalars/arrays and paths → JSON values."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (Path, PurePosixPath)):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
