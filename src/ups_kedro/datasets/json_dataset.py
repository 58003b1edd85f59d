"""A local JSON dataset whose saves are atomic (kedro-datasets' JSONDataset is not)."""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

from kedro.io import AbstractDataset

from ups_kedro.atomic import atomic_file
from ups_kedro.datasets.staging import Deferrable, producer_hint
from ups_kedro.errors import CorruptArtifactError, MissingUpstreamError


class AtomicJSONDataset(Deferrable, AbstractDataset[Any, Any]):
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
        path = self._read_path()
        if not path.is_file():
            raise MissingUpstreamError(f"{path} does not exist: {producer_hint(self)}")
        try:
            with path.open() as f:
                return json.load(f)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise CorruptArtifactError(f"{path} is not valid JSON ({exc}): the file is corrupt; "
                               f"{producer_hint(self, 're-run')}") from exc

    def save(self, data: Any) -> None:
        with atomic_file(self._write_path()) as tmp:
            tmp.write_text(json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")

    def _exists(self) -> bool:
        return self._read_path().is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


def _jsonable(obj: Any) -> Any:
    """numpy scalars/arrays and paths → JSON values."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, (Path, PurePosixPath)):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")
