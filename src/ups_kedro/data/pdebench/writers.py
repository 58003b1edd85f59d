"""Atomic writers for the PDEBench layouts (see :mod:`ups_kedro.data.pdebench`)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ups_kedro.data.pdebench.common import (
    _MAX_BLOCK_BYTES,
    _T_KEY,
    _X_KEY,
    _Y_KEY,
    MULTIFIELD_ORDER,
    PDEBenchFormatError,
    check_finite,
)

@contextlib.contextmanager
def _atomic_h5(path: str | os.PathLike[str]) -> Iterator[h5py.File]:
    """Yield an h5py file that only appears at ``path`` once fully written.

    Writes to a temp file in the same directory (so ``os.replace`` is an atomic rename on
    the same filesystem) and removes the temp file on any error.
    """
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        with h5py.File(tmp, "w") as handle:
            yield handle
        # mkstemp creates 0600 files; make the result readable like a normal output.
        os.chmod(tmp, 0o644)
        os.replace(tmp, final)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _as_array(value: Any, name: str, path: Path) -> np.ndarray:
    """Return ``value`` as an array-like with ``shape``; memmaps/h5py datasets stay lazy."""
    if value is None:
        raise PDEBenchFormatError(f"writing {path}: {name} is None; pass an array")
    return value if hasattr(value, "shape") and hasattr(value, "__getitem__") else np.asarray(value)


def _check_coord(value: Any, name: str, expected: int, path: Path, hint: str = "") -> np.ndarray:
    """Validate a 1-D coordinate vector of length ``expected``; return it as float32."""
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim != 1 or arr.shape[0] != expected:
        raise PDEBenchFormatError(
            f"writing {path}: coordinate '{name}' has shape {arr.shape}, expected ({expected},)"
            + (f"; {hint}" if hint else "")
        )
    if not np.isfinite(arr).all():
        raise PDEBenchFormatError(f"writing {path}: coordinate '{name}' contains NaN/Inf")
    # PDEBench stores coordinates as float32; match it so code tested here works on theirs.
    return arr.astype(np.float32)


def _write_samples(
    handle: h5py.File | h5py.Group, key: str, data: Any, path: Path, sample_offset: int = 0
) -> None:
    """Write ``data`` ``[N, ...]`` as float32 dataset ``key``, block by block.

    Block-wise writing bounds memory (``data`` may be a memmap) and checks finiteness of
    each block before it lands in the file; a failure aborts the atomic write.
    """
    shape = tuple(int(s) for s in data.shape)
    dset = handle.create_dataset(key, shape=shape, dtype=np.float32)
    per_sample = max(1, int(np.prod(shape[1:], dtype=np.int64)) * 4)
    block = max(1, _MAX_BLOCK_BYTES // per_sample)
    for start in range(0, shape[0], block):
        stop = min(shape[0], start + block)
        chunk = np.asarray(data[start:stop], dtype=np.float32)
        check_finite(
            chunk,
            f"writing {path}: dataset '{key}'",
            sample_ids=np.arange(start, stop) + sample_offset,
        )
        dset[start:stop] = chunk


def _write_attrs(handle: h5py.File, attrs: Mapping[str, Any] | None, path: Path) -> None:
    for key, value in (attrs or {}).items():
        if value is None:
            raise PDEBenchFormatError(
                f"writing {path}: attribute '{key}' is None; HDF5 attributes cannot be None, "
                "drop it or give a value"
            )
        handle.attrs[key] = value


def _check_spatial_coords(
    spatial: tuple[int, ...], x: Any, y: Any, path: Path, what: str
) -> tuple[np.ndarray, np.ndarray | None]:
    """Validate x (and y for 2D) against the spatial shape ``[X(, Y)]``."""
    if len(spatial) not in (1, 2):
        raise PDEBenchFormatError(
            f"writing {path}: {what} has {len(spatial)} spatial dims {spatial}; "
            "only 1D [X] and 2D [X, Y] are supported by this writer"
        )
    x32 = _check_coord(x, "x", spatial[0], path)
    if len(spatial) == 2:
        if y is None:
            raise PDEBenchFormatError(
                f"writing {path}: {what} is 2D (spatial shape {spatial}) but y is None; pass y [Y]"
            )
        return x32, _check_coord(y, "y", spatial[1], path)
    if y is not None:
        raise PDEBenchFormatError(
            f"writing {path}: {what} is 1D (spatial shape {spatial}) but y was given; "
            "drop y or add the Y axis to the data"
        )
    return x32, None


def _write_pdebench_coords(
    handle: h5py.File, x: np.ndarray, y: np.ndarray | None, t: np.ndarray | None
) -> None:
    handle.create_dataset(_X_KEY, data=x)
    if y is not None:
        handle.create_dataset(_Y_KEY, data=y)
    if t is not None:
        handle.create_dataset(_T_KEY, data=t)


def write_tensor_file(
    path: str | os.PathLike[str],
    tensor: Any,
    x: Any,
    t: Any,
    y: Any = None,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write a PDEBench 1D/2D scalar file (layout ``tensor``), atomically.

    Args:
        path: Output file (parent directories are created).
        tensor: ``[N, T, X]`` or ``[N, T, X, Y]`` solution; stored as float32.
        x: ``[X]`` cell centres.
        t: ``[T + 1]`` times: PDEBench stores one more entry than there are frames.
        y: ``[Y]`` for 2D data, else None.
        attrs: File attributes, e.g. ``{"Nu": 0.01}`` or ``{"beta": 0.4}``.

    Returns:
        ``Path(path)``.
    """
    out = Path(path)
    tensor = _as_array(tensor, "tensor", out)
    if tensor.ndim not in (3, 4):
        raise PDEBenchFormatError(
            f"writing {out}: 'tensor' has shape {tuple(tensor.shape)}, expected [N, T, X] or "
            "[N, T, X, Y]"
        )
    n_frames = int(tensor.shape[1])
    x32, y32 = _check_spatial_coords(tuple(tensor.shape[2:]), x, y, out, "'tensor'")
    t32 = _check_coord(
        t, "t", n_frames + 1, out, "PDEBench tensor files store T+1 times; append one more"
    )
    with _atomic_h5(out) as handle:
        _write_attrs(handle, attrs, out)
        _write_pdebench_coords(handle, x32, y32, t32)
        _write_samples(handle, "tensor", tensor, out)
    return out


def write_multifield_file(
    path: str | os.PathLike[str],
    fields: Mapping[str, Any],
    x: Any,
    t: Any,
    y: Any = None,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write a compressible-NS style file (layout ``multifield``), atomically.

    Args:
        path: Output file.
        fields: Field name -> ``[N, T, X(, Y)]``; names from ``MULTIFIELD_ORDER``
            (``density``, ``pressure``, ``Vx``, ``Vy``, ``Vz``), all the same shape.
        x: ``[X]``; t: ``[T + 1]`` (PDEBench quirk); y: ``[Y]`` for 2D, else None.
        attrs: File attributes, e.g. ``{"eta": 0.1, "zeta": 0.1, "M": 1.0}``.
    """
    out = Path(path)
    if not fields:
        raise PDEBenchFormatError(f"writing {out}: fields is empty; pass e.g. {{'density': ...}}")
    unknown = [name for name in fields if name not in MULTIFIELD_ORDER]
    if unknown:
        raise PDEBenchFormatError(
            f"writing {out}: field(s) {unknown} are not PDEBench multifield names; use "
            f"{list(MULTIFIELD_ORDER)}"
        )
    arrays = {name: _as_array(value, name, out) for name, value in fields.items()}
    ref_name, ref = next(iter(arrays.items()))
    for name, arr in arrays.items():
        if tuple(arr.shape) != tuple(ref.shape):
            raise PDEBenchFormatError(
                f"writing {out}: field '{name}' has shape {tuple(arr.shape)} but '{ref_name}' "
                f"has {tuple(ref.shape)}; all fields must share [N, T, X(, Y)]"
            )
    if ref.ndim not in (3, 4):
        raise PDEBenchFormatError(
            f"writing {out}: field '{ref_name}' has shape {tuple(ref.shape)}, expected "
            "[N, T, X] or [N, T, X, Y]"
        )
    x32, y32 = _check_spatial_coords(tuple(ref.shape[2:]), x, y, out, f"field '{ref_name}'")
    t32 = _check_coord(
        t, "t", int(ref.shape[1]) + 1, out, "PDEBench multifield files store T+1 times"
    )
    with _atomic_h5(out) as handle:
        _write_attrs(handle, attrs, out)
        _write_pdebench_coords(handle, x32, y32, t32)
        for name in [n for n in MULTIFIELD_ORDER if n in arrays]:
            _write_samples(handle, name, arrays[name], out)
    return out


def write_group_file(
    path: str | os.PathLike[str],
    data: Any,
    x: Any,
    t: Any,
    y: Any = None,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write a group-per-sample file (layout ``group``), atomically.

    Args:
        path: Output file (PDEBench uses ``.h5`` for these).
        data: ``[N, T, X(, Y), C]``; sample ``i`` goes to group ``f"{i:04d}"`` as ``data``
            ``[T, X(, Y), C]`` float32.
        x: ``[X]``; t: ``[T]`` (no extra entry in this layout); y: ``[Y]`` for 2D.
        attrs: File attributes.
    """
    out = Path(path)
    data = _as_array(data, "data", out)
    if data.ndim not in (4, 5):
        raise PDEBenchFormatError(
            f"writing {out}: 'data' has shape {tuple(data.shape)}, expected [N, T, X, C] or "
            "[N, T, X, Y, C]"
        )
    x32, y32 = _check_spatial_coords(tuple(data.shape[2:-1]), x, y, out, "'data'")
    t32 = _check_coord(t, "t", int(data.shape[1]), out, "group files store exactly T times")
    n = int(data.shape[0])
    width = max(4, len(str(n - 1)))
    with _atomic_h5(out) as handle:
        _write_attrs(handle, attrs, out)
        for i in range(n):
            group = handle.create_group(f"{i:0{width}d}")
            sample = np.asarray(data[i], dtype=np.float32)
            check_finite(sample[None], f"writing {out}: 'data'", sample_ids=[i])
            group.create_dataset("data", data=sample)
            group.create_dataset("grid/x", data=x32)
            if y32 is not None:
                group.create_dataset("grid/y", data=y32)
            group.create_dataset("grid/t", data=t32)
    return out


def write_darcy_file(
    path: str | os.PathLike[str],
    solution: Any,
    nu: Any,
    x: Any,
    y: Any,
    attrs: Mapping[str, Any] | None = None,
) -> Path:
    """Write a PDEBench Darcy-flow file (layout ``darcy``), atomically.

    Args:
        path: Output file.
        solution: ``[N, 1, X, Y]`` steady-state solution (dataset ``tensor``).
        nu: ``[N, X, Y]`` diffusion coefficient field (dataset ``nu``).
        x: ``[X]``; y: ``[Y]``.
        attrs: File attributes; PDEBench sets ``{"beta": ...}`` (the forcing).
    """
    out = Path(path)
    solution = _as_array(solution, "solution", out)
    nu = _as_array(nu, "nu", out)
    if solution.ndim != 4 or solution.shape[1] != 1:
        raise PDEBenchFormatError(
            f"writing {out}: 'tensor' (solution) has shape {tuple(solution.shape)}, expected "
            "[N, 1, X, Y]"
        )
    expected_nu = (solution.shape[0], *solution.shape[2:])
    if tuple(nu.shape) != tuple(expected_nu):
        raise PDEBenchFormatError(
            f"writing {out}: 'nu' has shape {tuple(nu.shape)}, expected {tuple(expected_nu)} "
            "to match the solution [N, 1, X, Y]"
        )
    x32, y32 = _check_spatial_coords(tuple(solution.shape[2:]), x, y, out, "'tensor'")
    with _atomic_h5(out) as handle:
        _write_attrs(handle, attrs, out)
        _write_pdebench_coords(handle, x32, y32, None)
        _write_samples(handle, "tensor", solution, out)
        _write_samples(handle, "nu", nu, out)
    return out

