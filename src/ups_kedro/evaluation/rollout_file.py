"""The rollout predictions of every variant in one HDF5 file anyone can re-score.

Layout (PDEBench-compatible: the file is itself a valid PDEBench ``tensor`` file of the truth)::

    tensor                  [N, T, *space]      truth, frames 0..initial_step-1 given + rolled-out
                                                 ([N, T, *space, C] when there are C > 1 channels)
    predictions/<variant>   same shape          frames < initial_step are the given truth
    x-coordinate (y-…)      [X] ([Y])           cell centres
    t-coordinate            [T + 1]             PDEBench stores one extra trailing time
    sample_index            [N]                 row of each trajectory in the source file
    attrs: initial_step, time_stride, split, channels (JSON), protocol (JSON text)
    predictions/<variant>.attrs: ms_per_trajectory, nfe_per_step, … (rollout cost)

With ``time_stride`` s > 1 only the scored frames (``initial_step-1 + k·s``) follow the given
ones.  Re-scoring: drop the first ``initial_step`` frames of both arrays and apply PDEBench's
nRMSE (``ups_kedro.evaluation.metrics.summarise`` does exactly that).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from ups_kedro.atomic import atomic_file

AXIS_NAMES = ("x-coordinate", "y-coordinate", "z-coordinate")


@dataclass
class RolloutSet:
    """Truth and predictions of one evaluation, channels-last.

    Shapes: ``given`` [N, initial_step, *space, C]; ``truth`` and each prediction [N, K, *space, C]
    (K scored frames); ``times`` [initial_step + K]; ``coords`` one [n_i] array per spatial axis.
    """

    given: np.ndarray
    truth: np.ndarray
    predictions: dict[str, np.ndarray]
    times: np.ndarray
    coords: list[np.ndarray]
    channels: list[str]
    initial_step: int
    time_stride: int = 1
    split: str = "test"
    sample_index: np.ndarray | None = None
    variant_info: dict[str, dict[str, float]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for name, pred in self.predictions.items():
            if pred.shape != self.truth.shape:
                raise ValueError(f"prediction {name!r} has shape {pred.shape}, truth "
                                 f"{self.truth.shape}: every variant must predict the same frames")


def _squeeze(a: np.ndarray, channels: int) -> np.ndarray:
    return a[..., 0] if channels == 1 else a


def write_rollouts(path: str | Path, rs: RolloutSet) -> Path:
    """Write ``rs`` atomically to ``path`` (see the module docstring for the layout)."""
    c = rs.truth.shape[-1]
    t_coord = np.append(rs.times, rs.times[-1] + (rs.times[-1] - rs.times[-2]))
    with atomic_file(Path(path)) as tmp, h5py.File(tmp, "w") as f:
        f.create_dataset("tensor", data=_squeeze(np.concatenate([rs.given, rs.truth], 1), c))
        for name, pred in rs.predictions.items():
            d = f.create_dataset(f"predictions/{name}",
                                 data=_squeeze(np.concatenate([rs.given, pred], 1), c))
            for k, v in rs.variant_info.get(name, {}).items():
                d.attrs[k] = v
        for axis, coord in zip(AXIS_NAMES, rs.coords):
            f.create_dataset(axis, data=np.asarray(coord, dtype=np.float32))
        f.create_dataset("t-coordinate", data=np.asarray(t_coord, dtype=np.float32))
        if rs.sample_index is not None:
            f.create_dataset("sample_index", data=np.asarray(rs.sample_index, dtype=np.int64))
        f.attrs.update(initial_step=rs.initial_step, time_stride=rs.time_stride, split=rs.split,
                       channels=json.dumps(rs.channels), notes=json.dumps(rs.notes))
    return Path(path)


def read_rollouts(path: str | Path) -> RolloutSet:
    """Read a file written by :func:`write_rollouts` back into a :class:`RolloutSet`."""
    with h5py.File(path, "r") as f:
        channels = json.loads(f.attrs["channels"])
        n_given = int(f.attrs["initial_step"])

        def full(name: str) -> np.ndarray:
            a = f[name][()]
            return a[..., None] if len(channels) == 1 else a

        tensor = full("tensor")
        preds = {name: full(f"predictions/{name}")[:, n_given:] for name in f["predictions"]}
        info = {name: {k: float(v) for k, v in f[f"predictions/{name}"].attrs.items()}
                for name in f["predictions"]}
        coords = [f[a][()] for a in AXIS_NAMES if a in f]
        return RolloutSet(
            given=tensor[:, :n_given], truth=tensor[:, n_given:], predictions=preds,
            times=f["t-coordinate"][()][:-1], coords=coords, channels=channels,
            initial_step=n_given, time_stride=int(f.attrs["time_stride"]),
            split=str(f.attrs["split"]),
            sample_index=f["sample_index"][()] if "sample_index" in f else None,
            variant_info=info, notes=json.loads(f.attrs.get("notes", "[]")))
