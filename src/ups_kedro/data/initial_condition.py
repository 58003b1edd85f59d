"""Initial conditions (and steady conditioning) for inference, from HDF5 or NumPy files.

* ``.h5`` / ``.hdf5``: any PDEBench layout this project reads (``data.pdebench``): the frame
  ``frame`` of the chosen samples, or for Darcy files the coefficient field ``nu``.
* ``.npy``: an array already on the model's grid: ``[B, *space]`` or ``[B, *space, C]``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ups_kedro.data.pdebench import open_pdebench

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
        raise ValueError(f"{p}: array of shape {a.shape}; expected [B, *space] or "
                         f"[B, *space, C] with {space_dims} spatial axes")
    if not np.isfinite(a).all():
        raise ValueError(f"{p}: contains NaN or Inf")
    return a


def read_initial_condition(path: str | Path, samples: list[int] | None, frame: int,
                           space_stride: int = 1, channels: int = 1,
                           space_dims: int = 1) -> np.ndarray:
    """Initial frames ``[B, *space, C]`` (physical units) from ``path``."""
    p = _check_path(path, "initial_condition.path")
    if p.suffix == ".npy":
        a = _npy(p, channels, space_dims)
        return a if samples is None else a[samples]
    with open_pdebench(p) as reader:
        idx = list(range(reader.n_samples)) if samples is None else samples
        if not 0 <= frame < reader.n_frames:
            raise ValueError(f"inference.initial_condition.frame={frame} is outside the file's "
                             f"{reader.n_frames} frames")
        # t_stop ≥ 2: the reader insists on two frames for time-dependent layouts
        return reader.read(idx, space_stride=space_stride, t_stop=max(frame + 1, 2))[:, frame]


def read_coefficients(path: str | Path, samples: list[int] | None,
                      space_stride: int = 1) -> np.ndarray:
    """Steady conditioning: the coefficient fields ``[B, X, Y]`` (Darcy ``nu``) from ``path``."""
    p = _check_path(path, "initial_condition.path")
    if p.suffix == ".npy":
        a = _npy(p, 1, 2)[..., 0]
        return a if samples is None else a[samples]
    with open_pdebench(p) as reader:
        if reader.layout != "darcy":
            raise ValueError(f"{p}: layout {reader.layout!r}; steady mode needs a Darcy file "
                             "(datasets 'tensor' and 'nu')")
        idx = list(range(reader.n_samples)) if samples is None else samples
        return reader.read_coefficient(idx, space_stride=space_stride)[..., 0]
