"""Initial conditions (and steady conditioning) for inference, from HDF5 or NumPy files.

* ``.h5`` / ``.hdf5``: any PDEBench layout this project reads (``data.pdebench``): the frame
  ``frame`` of the chosen samples, or for Darcy files the coefficient field ``nu``.
* ``.npy``: an array already on the model's grid: ``[B, *space]`` or ``[B, *space, C]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ups_kedro.data.pdebench import open_pdebench
from ups_kedro.errors import InputFileError

HDF5_SUFFIXES = (".h5", ".hdf5")


def _check_path(path: str | Path, what: str) -> Path:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"inference.{what}: {p} does not exist; give an .h5/.hdf5 "
                                "(PDEBench layout) or .npy file")
    if p.suffix not in (*HDF5_SUFFIXES, ".npy"):
        raise ValueError(f"inference.{what}: {p} has suffix {p.suffix!r}; expected .h5, .hdf5 "
                         "or .npy")
    return p


def _npy(p: Path, channels: int, space_dims: int) -> np.ndarray:
    a = np.load(p, allow_pickle=False).astype(np.float32)
    if a.ndim == space_dims + 1 and channels == 1:
        a = a[..., None]
    if a.ndim != space_dims + 2:
        raise InputFileError(f"inference.initial_condition.path: {p} holds an array of shape "
                             f"{a.shape}; expected [samples, *space] or [samples, *space, "
                             f"channels] with {space_dims} spatial axes")
    if not np.isfinite(a).all():
        raise InputFileError(f"inference.initial_condition.path: {p} contains NaN or Inf")
    return a


def _pick(samples: list[int] | None, n_samples: int, p: Path) -> list[int]:
    """The sample indices to read; a clear error for indices the file does not have."""
    if samples is None:
        return list(range(n_samples))
    bad = [i for i in samples if not -n_samples <= i < n_samples]
    if bad:
        raise InputFileError(
            f"inference.initial_condition.samples asks for sample(s) {bad}, but {p} holds "
            f"{n_samples} sample(s): pick indices below {n_samples} or set samples: null")
    return list(samples)


def read_initial_condition(path: str | Path, samples: list[int] | None, frame: int,
                           space_stride: int = 1, channels: int = 1,
                           space_dims: int = 1) -> np.ndarray:
    """Initial frames ``[B, *space, C]`` (physical units) from ``path``."""
    p = _check_path(path, "initial_condition.path")
    if p.suffix == ".npy":
        a = _npy(p, channels, space_dims)
        return a[_pick(samples, len(a), p)]
    with open_pdebench(p) as reader:
        idx = _pick(samples, reader.n_samples, p)
        if not 0 <= frame < reader.n_frames:
            raise InputFileError(f"inference.initial_condition.frame={frame} is outside the file's "
                             f"{reader.n_frames} frames")
        # t_stop ≥ 2: the reader insists on two frames for time-dependent layouts
        return reader.read(idx, space_stride=space_stride, t_stop=max(frame + 1, 2))[:, frame]


def read_coefficients(path: str | Path, samples: list[int] | None,
                      space_stride: int = 1) -> np.ndarray:
    """Steady conditioning: the coefficient fields ``[B, X, Y]`` (Darcy ``nu``) from ``path``."""
    p = _check_path(path, "initial_condition.path")
    if p.suffix == ".npy":
        a = _npy(p, 1, 2)[..., 0]
        return a[_pick(samples, len(a), p)]
    with open_pdebench(p) as reader:
        if reader.layout != "darcy":
            raise ValueError(f"{p}: layout {reader.layout!r}; steady mode needs a Darcy file "
                             "(datasets 'tensor' and 'nu')")
        idx = _pick(samples, reader.n_samples, p)
        return reader.read_coefficient(idx, space_stride=space_stride)[..., 0]
