"""Memory-mappable array datasets: a folder holding ``data.npy`` and ``meta.json``.

Prepared fields ([trajectories, time, *space, channels]) and latent tensors
([trajectories, time, tokens, dim]) are stored this way so training streams them from disk
through ``np.load(mmap_mode="r")``: a data set larger than RAM still trains.  Saving accepts
either a whole array (:class:`ArrayBundle`) or a stream of chunks along the first axis
(:class:`ChunkedArray`), so producers never need the whole array in memory either.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
from kedro.io import AbstractDataset, DatasetError

from ups_kedro.atomic import atomic_dir
from ups_kedro.data.arrays import ArrayBundle, ChunkedArray
from ups_kedro.datasets.json_dataset import _jsonable
from ups_kedro.datasets.staging import Deferrable, producer_hint
from ups_kedro.errors import CorruptArtifactError, MissingUpstreamError


class ArrayDataset(Deferrable, AbstractDataset[ArrayBundle | ChunkedArray, ArrayBundle]):
    """Folder dataset ``<filepath>/data.npy`` + ``<filepath>/meta.json`` (local, atomic).

    Example catalog entry::

        "autoencoder.latents_{split}":
          type: ups_kedro.datasets.ArrayDataset
          filepath: data/05_model_input/latents_{split}
    """

    def __init__(self, filepath: str, mmap: bool = True, metadata: dict[str, Any] | None = None):
        self._filepath = PurePosixPath(filepath)
        self._mmap = mmap
        self.metadata = metadata

    def load(self) -> ArrayBundle:
        folder = self._read_path()
        data, meta = folder / "data.npy", folder / "meta.json"
        if not data.is_file() or not meta.is_file():
            raise MissingUpstreamError(
                f"{folder} is missing data.npy or meta.json: {producer_hint(self)}")
        try:
            array = np.load(data, mmap_mode="r" if self._mmap else None)
            return ArrayBundle(array=array, meta=json.loads(meta.read_text()))
        except (ValueError, OSError, EOFError) as exc:  # truncated .npy, bad header, bad JSON
            raise CorruptArtifactError(
                f"{folder} is corrupt ({exc}): {producer_hint(self, 're-run')}") from exc

    def save(self, data: ArrayBundle | ChunkedArray) -> None:
        with atomic_dir(self._write_path()) as tmp:
            if isinstance(data, ArrayBundle):
                np.save(tmp / "data.npy", np.ascontiguousarray(data.array))
                meta = data.meta
            elif isinstance(data, ChunkedArray):
                _write_chunks(tmp / "data.npy", data)
                meta = data.meta
            else:
                raise DatasetError(
                    f"ArrayDataset({self._filepath}) can save ArrayBundle or ChunkedArray, "
                    f"got {type(data).__name__}"
                )
            (tmp / "meta.json").write_text(json.dumps(meta, indent=2, default=_jsonable) + "\n")

    def _exists(self) -> bool:
        return (self._read_path() / "data.npy").is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "mmap": self._mmap}


def _write_chunks(path: Path, data: ChunkedArray) -> None:
    """Fill a new .npy memmap of ``data.shape`` from consecutive chunks along axis 0."""
    out = np.lib.format.open_memmap(path, mode="w+", dtype=np.dtype(data.dtype), shape=data.shape)
    start = 0
    for chunk in data.chunks:
        stop = start + chunk.shape[0]
        if stop > data.shape[0] or chunk.shape[1:] != tuple(data.shape[1:]):
            raise DatasetError(
                f"chunk of shape {chunk.shape} at row {start} does not fit declared shape {data.shape}"
            )
        out[start:stop] = chunk
        start = stop
    if start != data.shape[0]:
        raise DatasetError(f"chunks filled {start} rows, declared shape {data.shape}")
    out.flush()
    del out
