"""Datasets for evaluation and inference outputs: rollout/trajectory HDF5 files, tables and text
reports, all written atomically.

kedro-datasets' ``pandas.CSVDataset`` and ``text.TextDataset`` write in place, so a crash mid-write
would leave half a leaderboard; these write beside the target and rename.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

import pandas as pd
from kedro.io import AbstractDataset, DatasetError

from ups_kedro.atomic import atomic_file
from ups_kedro.data.pdebench import open_pdebench, write_darcy_file, write_tensor_file
from ups_kedro.evaluation.rollout_file import RolloutSet, read_rollouts, write_rollouts


class _LocalFile(AbstractDataset):
    """Common part: one local file at ``filepath``, a clear error when it is missing."""

    def __init__(self, filepath: str, metadata: dict[str, Any] | None = None) -> None:
        self._filepath = PurePosixPath(filepath)
        self.metadata = metadata

    def _path(self) -> Path:
        path = Path(self._filepath)
        if not path.is_file():
            raise DatasetError(f"{path} does not exist: run the pipeline that produces it first")
        return path

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath)}


class RolloutDataset(_LocalFile):
    """A :class:`~ups_kedro.evaluation.rollout_file.RolloutSet` as a PDEBench-layout HDF5 file."""

    def load(self) -> RolloutSet:
        return read_rollouts(self._path())

    def save(self, data: RolloutSet) -> None:
        write_rollouts(self._filepath, data)


class AtomicCSVDataset(_LocalFile):
    """A pandas DataFrame as CSV (index kept when it is named, e.g. ``variant``)."""

    def load(self) -> pd.DataFrame:
        frame = pd.read_csv(self._path())
        return frame

    def save(self, data: pd.DataFrame) -> None:
        with atomic_file(self._filepath) as tmp:
            data.to_csv(tmp, index=data.index.name is not None)


class AtomicTextDataset(_LocalFile):
    """A text file (Markdown, HTML)."""

    def load(self) -> str:
        return self._path().read_text(encoding="utf-8")

    def save(self, data: str) -> None:
        with atomic_file(self._filepath) as tmp:
            tmp.write_text(data, encoding="utf-8")


class TrajectoryFileDataset(_LocalFile):
    """Inference output in PDEBench layout, written atomically by ``data.pdebench`` writers.

    Saves a dict: ``layout`` ``tensor`` (``tensor`` [N, T, *space], ``x``, ``t`` [T+1], optional
    ``y``) or ``darcy`` (``tensor`` [N, 1, X, Y], ``nu`` [N, X, Y], ``x``, ``y``), plus ``attrs``.
    Loads the file back with :func:`~ups_kedro.data.pdebench.open_pdebench` (channels-last).
    """

    def load(self) -> dict[str, Any]:
        with open_pdebench(self._path()) as reader:
            out = {"layout": reader.layout, "tensor": reader.read(slice(None)),
                   "x": reader.x, "attrs": reader.attrs}
            if reader.layout == "darcy":
                out["nu"] = reader.read_coefficient(slice(None))
            return out

    def save(self, data: dict[str, Any]) -> None:
        if data["layout"] == "darcy":
            write_darcy_file(self._filepath, data["tensor"], data["nu"], data["x"], data["y"],
                             attrs=data.get("attrs"))
        else:
            write_tensor_file(self._filepath, data["tensor"], data["x"], data["t"],
                              y=data.get("y"), attrs=data.get("attrs"))
