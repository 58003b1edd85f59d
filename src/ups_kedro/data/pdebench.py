"""Write and lazily read PDEBench-format HDF5 files.

Four layouts are supported, matching the files PDEBench publishes (see
``shared/docs/data-and-metrics.md``):

``tensor``
    1D/2D scalar files (Burgers, advection, reaction-diffusion): dataset ``tensor``
    float32 ``[N, T, X(, Y)]``, ``x-coordinate`` ``[X]``, ``y-coordinate`` ``[Y]`` (2D),
    ``t-coordinate`` with ``T + 1`` entries (a PDEBench quirk), file attrs such as ``Nu``.
``multifield``
    Compressible Navier-Stokes files: datasets ``density``, ``pressure``, ``Vx`` (``Vy``,
    ``Vz``) each ``[N, T, X(, Y)]`` plus the same coordinates as ``tensor``.
``group``
    Group-per-sample ``.h5`` files: groups ``0000``, ``0001``, ... each holding ``data``
    ``[T, X(, Y), C]`` and ``grid/x``, ``grid/y``, ``grid/t`` (``T`` entries).
``darcy``
    Steady Darcy flow: ``tensor`` ``[N, 1, X, Y]`` (solution), ``nu`` ``[N, X, Y]``
    (coefficient), ``x-coordinate``, ``y-coordinate``, attr ``beta``.

Real files are ~8 GB, so the reader never loads a whole dataset: it reads contiguous runs
of samples with strided h5py hyperslabs. The writers are atomic (temp file + ``os.replace``)
so an interrupted generator never leaves a truncated file that a later run would trust.

This module is pure numpy/h5py on purpose: it is used by the data pipeline, by tests and by
standalone scripts, none of which should pay for importing kedro or torch.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ups_kedro.errors import UserError

__all__ = [
    "LAYOUTS",
    "MULTIFIELD_ORDER",
    "PDEBenchFileNotFoundError",
    "PDEBenchFormatError",
    "PDEBenchReader",
    "check_finite",
    "detect_layout",
    "open_pdebench",
    "write_darcy_file",
    "write_group_file",
    "write_multifield_file",
    "write_tensor_file",
]

#: Layout names accepted by :func:`open_pdebench` (plus ``"auto"``).
LAYOUTS: tuple[str, ...] = ("tensor", "multifield", "group", "darcy")
#: Field datasets of the compressible-NS layout, in PDEBench's channel order.
MULTIFIELD_ORDER: tuple[str, ...] = ("density", "pressure", "Vx", "Vy", "Vz")

_X_KEY, _Y_KEY, _T_KEY = "x-coordinate", "y-coordinate", "t-coordinate"
_COORD_KEYS = (_X_KEY, _Y_KEY, "z-coordinate", _T_KEY)
# Upper bound on the bytes one h5py read (and its temporary copy) may take. Keeps peak
# memory near the size of the requested output even for reads of thousands of samples.
_MAX_BLOCK_BYTES = 64 * 2**20
_LAYOUT_HINT = "set data_processing.file.layout to one of 'auto', " + ", ".join(
    repr(name) for name in LAYOUTS
)


class PDEBenchFormatError(UserError, ValueError):
    """A file, array or read request does not fit the PDEBench layout it claims."""


class PDEBenchFileNotFoundError(PDEBenchFormatError, FileNotFoundError):
    """The requested PDEBench file does not exist (also a ``FileNotFoundError``)."""


# --------------------------------------------------------------------------------------
# Small helpers
# --------------------------------------------------------------------------------------


def check_finite(
    array: np.ndarray, what: str, sample_ids: Sequence[int] | np.ndarray | None = None
) -> np.ndarray:
    """Raise if ``array`` holds NaN or Inf, naming the samples that do.

    Args:
        array: ``[n, ...]``; axis 0 is the sample axis.
        what: Human description of the array, e.g. ``"file a.h5, dataset 'tensor'"``.
        sample_ids: ``[n]`` sample indices to report instead of positions along axis 0
            (e.g. the file indices a read asked for).

    Returns:
        ``array`` unchanged, so calls can be chained.
    """
    arr = np.asarray(array)
    if arr.size == 0 or np.isfinite(arr).all():
        return array
    flat = arr.reshape(arr.shape[0], -1) if arr.ndim > 0 else arr.reshape(1, 1)
    bad_pos = np.nonzero(~np.isfinite(flat).all(axis=1))[0]
    ids = np.asarray(sample_ids)[bad_pos] if sample_ids is not None else bad_pos
    shown = ", ".join(str(int(i)) for i in ids[:10]) + (" ..." if len(ids) > 10 else "")
    raise PDEBenchFormatError(
        f"{what} contains NaN/Inf in {len(ids)} sample(s) (sample index: {shown}); "
        "regenerate those samples or exclude them from the split"
    )


def _plain(value: Any) -> Any:
    """Convert an HDF5 attribute value to a plain python value (for logging/YAML)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return [_plain(v) for v in value.tolist()] if value.ndim else _plain(value.item())
    if isinstance(value, np.generic):
        return _plain(value.item())
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def _sorted_keys(keys: Sequence[str]) -> list[str]:
    """Sort group names numerically when they are all digits ('2' before '10')."""
    if all(k.isdigit() for k in keys):
        return sorted(keys, key=int)
    return sorted(keys)


def _fmt_keys(keys: Sequence[str], limit: int = 12) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:limit]) + (f", ... ({len(keys)} in all)" if len(keys) > limit else "")
    return shown or "nothing"


# --------------------------------------------------------------------------------------
# Writers
# --------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------
# Reader
# --------------------------------------------------------------------------------------


def detect_layout(handle: h5py.File) -> str | None:
    """Guess the layout of an open file from its top-level keys; None when unknown."""
    keys = list(handle.keys())
    if "tensor" in keys:
        return "darcy" if "nu" in keys else "tensor"
    if any(name in keys for name in MULTIFIELD_ORDER):
        return "multifield"
    if keys:
        # Group files have thousands of groups; looking at the first one is enough to tell.
        first = handle[_sorted_keys(keys)[0]]
        if isinstance(first, h5py.Group) and "data" in first:
            return "group"
    return None


def _check_stride(value: int, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise PDEBenchFormatError(f"{name}={value!r} is invalid; use a positive integer")
    return int(value)


class PDEBenchReader:
    """Lazy reader over one PDEBench HDF5 file (see :func:`open_pdebench`).

    Holds the h5py file open; use as a context manager or call :meth:`close`. Pickling
    stores only the path and options and reopens the file, so a reader can be handed to
    data-loader worker processes.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        layout: str = "auto",
        fields: Sequence[str] | None = None,
    ) -> None:
        self._path = Path(path)
        self._requested_layout = layout
        self._requested_fields = list(fields) if fields is not None else None
        self._file: h5py.File | None = None
        if layout != "auto" and layout not in LAYOUTS:
            raise PDEBenchFormatError(
                f"cannot open {self._path}: unknown layout {layout!r}; {_LAYOUT_HINT}"
            )
        self._file = self._open_file()
        try:
            self._inspect(layout)
        except BaseException:
            self.close()
            raise

    # ---- opening and validation -----------------------------------------------------

    def _open_file(self) -> h5py.File:
        if not self._path.exists():
            raise PDEBenchFileNotFoundError(
                f"PDEBench file {self._path} does not exist; check data_processing paths or "
                "download/generate the file first"
            )
        if self._path.is_dir() or not h5py.is_hdf5(self._path):
            raise PDEBenchFormatError(
                f"{self._path} is not an HDF5 file; point the data path at a PDEBench "
                ".hdf5/.h5 file (a partial download also looks like this)"
            )
        return h5py.File(self._path, "r")

    def _missing(self, key: str, where: h5py.Group | None = None, extra: str = "") -> None:
        where = self._file if where is None else where
        found = _fmt_keys(list(where.keys()))
        guessed = detect_layout(self._file)
        hint = (
            f"the keys look like layout {guessed!r}; set data_processing.file.layout to {guessed!r}"
            if guessed and guessed != self._layout
            else _LAYOUT_HINT
        )
        loc = f"group '{where.name}' of " if where.name != "/" else ""
        raise PDEBenchFormatError(
            f"{loc}file {self._path} has no dataset '{key}' (found: {found}){extra}; {hint}"
        )

    def _dataset(self, key: str, where: h5py.Group | None = None) -> h5py.Dataset:
        where = self._file if where is None else where
        if key not in where or not isinstance(where[key], h5py.Dataset):
            self._missing(key, where)
        return where[key]

    def _inspect(self, layout: str) -> None:
        assert self._file is not None
        if layout == "auto":
            detected = detect_layout(self._file)
            if detected is None:
                raise PDEBenchFormatError(
                    f"cannot detect the layout of {self._path} (found keys: "
                    f"{_fmt_keys(list(self._file.keys()))}); expected 'tensor', density/"
                    f"pressure/Vx..., 'tensor'+'nu' or groups with 'data'; {_LAYOUT_HINT}"
                )
            layout = detected
        self._layout = layout
        self._attrs = {k: _plain(v) for k, v in self._file.attrs.items()}
        getattr(self, f"_inspect_{layout}")()
        self._select_fields()

    def _check_rank(self, dset: h5py.Dataset, min_rank: int, max_rank: int, expect: str) -> None:
        if not min_rank <= dset.ndim <= max_rank:
            raise PDEBenchFormatError(
                f"file {self._path}: dataset '{dset.name.lstrip('/')}' has shape {dset.shape} "
                f"(rank {dset.ndim}); layout {self._layout!r} expects {expect}; {_LAYOUT_HINT}"
            )

    def _read_coord(
        self, key: str, expected: Sequence[int], where: h5py.Group | None = None
    ) -> np.ndarray:
        dset = self._dataset(key, where)
        arr = np.asarray(dset[()], dtype=np.float64).reshape(-1)
        if dset.ndim != 1 or arr.shape[0] not in expected:
            exp = " or ".join(str(e) for e in expected)
            raise PDEBenchFormatError(
                f"file {self._path}: coordinate '{dset.name.lstrip('/')}' has shape "
                f"{dset.shape} but the data needs {exp} entries; the file is inconsistent "
                "(regenerate it, or check that it is the file you meant)"
            )
        return arr

    def _inspect_pdebench_coords(self, n_frames: int, spatial: tuple[int, ...]) -> None:
        """x/y/t for tensor & multifield: t-coordinate may hold T+1 entries (PDEBench)."""
        self._x = self._read_coord(_X_KEY, [spatial[0]])
        self._y = self._read_coord(_Y_KEY, [spatial[1]]) if len(spatial) >= 2 else None
        # PDEBench saves T+1 times for T frames; frame k is at t[k], so drop the last entry.
        self._t = self._read_coord(_T_KEY, [n_frames + 1, n_frames])[:n_frames]

    def _inspect_tensor(self) -> None:
        dset = self._dataset("tensor")
        self._check_rank(dset, 3, 5, "[N, T, X(, Y(, Z))]")
        self._datasets = [dset]
        self._all_channels = ["u"]
        self._n, self._n_frames = int(dset.shape[0]), int(dset.shape[1])
        self._spatial = tuple(int(s) for s in dset.shape[2:])
        self._inspect_pdebench_coords(self._n_frames, self._spatial)

    def _inspect_multifield(self) -> None:
        names = [n for n in MULTIFIELD_ORDER if n in self._file]
        if not names:
            self._missing("density", extra=" nor any of " + ", ".join(MULTIFIELD_ORDER[1:]))
        dsets = [self._dataset(n) for n in names]
        self._check_rank(dsets[0], 3, 5, "[N, T, X(, Y(, Z))]")
        for name, dset in zip(names, dsets):
            if dset.shape != dsets[0].shape:
                raise PDEBenchFormatError(
                    f"file {self._path}: field '{name}' has shape {dset.shape} but "
                    f"'{names[0]}' has {dsets[0].shape}; all fields must share [N, T, X(, Y)] "
                    "(the file is inconsistent; regenerate it)"
                )
        self._datasets = dsets
        self._all_channels = names
        self._n, self._n_frames = int(dsets[0].shape[0]), int(dsets[0].shape[1])
        self._spatial = tuple(int(s) for s in dsets[0].shape[2:])
        self._inspect_pdebench_coords(self._n_frames, self._spatial)

    def _inspect_group(self) -> None:
        keys = list(self._file.keys())
        not_groups = [k for k in keys if not isinstance(self._file[k], h5py.Group)]
        if not keys or not_groups:
            raise PDEBenchFormatError(
                f"file {self._path}: layout 'group' expects only per-sample groups at the top "
                f"level but found datasets {_fmt_keys(not_groups)} (keys: {_fmt_keys(keys)}); "
                f"{_LAYOUT_HINT}"
            )
        self._group_keys = _sorted_keys(keys)
        first = self._file[self._group_keys[0]]
        dset = self._dataset("data", first)
        self._check_rank(dset, 3, 5, "per-sample 'data' [T, X(, Y(, Z)), C]")
        self._sample_shape = tuple(int(s) for s in dset.shape)
        self._n, self._n_frames = len(self._group_keys), self._sample_shape[0]
        self._spatial = self._sample_shape[1:-1]
        self._all_channels = [f"c{i}" for i in range(self._sample_shape[-1])]
        self._x = self._read_coord("grid/x", [self._spatial[0]], first)
        self._y = (
            self._read_coord("grid/y", [self._spatial[1]], first)
            if len(self._spatial) >= 2
            else None
        )
        self._t = self._read_coord("grid/t", [self._n_frames, self._n_frames + 1], first)[
            : self._n_frames
        ]

    def _inspect_darcy(self) -> None:
        sol = self._dataset("tensor")
        nu = self._dataset("nu")
        self._check_rank(sol, 4, 4, "'tensor' [N, 1, X, Y]")
        if sol.shape[1] != 1:
            raise PDEBenchFormatError(
                f"file {self._path}: dataset 'tensor' has shape {sol.shape}; layout 'darcy' "
                "expects [N, 1, X, Y]; if this is a time-dependent file set "
                "data_processing.file.layout to 'tensor'"
            )
        expected_nu = (sol.shape[0], *sol.shape[2:])
        if nu.shape != expected_nu:
            raise PDEBenchFormatError(
                f"file {self._path}: dataset 'nu' has shape {nu.shape}, expected {expected_nu} "
                "to match 'tensor' [N, 1, X, Y] (the file is inconsistent; regenerate it)"
            )
        self._datasets = [sol]
        self._nu = nu
        self._all_channels = ["u"]
        self._n, self._n_frames = int(sol.shape[0]), 1
        self._spatial = tuple(int(s) for s in sol.shape[2:])
        self._x = self._read_coord(_X_KEY, [self._spatial[0]])
        self._y = self._read_coord(_Y_KEY, [self._spatial[1]])
        self._t = np.zeros(1)  # steady state: a single "frame" at t = 0

    def _select_fields(self) -> None:
        wanted = self._requested_fields
        if wanted is None:
            self._channel_idx = list(range(len(self._all_channels)))
            return
        unknown = [f for f in wanted if f not in self._all_channels]
        if unknown or not wanted:
            raise PDEBenchFormatError(
                f"file {self._path} (layout {self._layout!r}) has no field(s) {unknown or '[]'}; "
                f"available: {self._all_channels}; fix data_processing.fields"
            )
        self._channel_idx = [self._all_channels.index(f) for f in wanted]

    # ---- public properties ----------------------------------------------------------

    @property
    def layout(self) -> str:
        """One of ``"tensor"``, ``"multifield"``, ``"group"``, ``"darcy"``."""
        return self._layout

    @property
    def path(self) -> Path:
        return self._path

    @property
    def n_samples(self) -> int:
        return self._n

    @property
    def n_frames(self) -> int:
        """Frames per sample, from the data's time axis (1 for darcy)."""
        return self._n_frames

    @property
    def spatial_shape(self) -> tuple[int, ...]:
        """``(X,)`` or ``(X, Y)`` (unstrided)."""
        return tuple(self._spatial)

    @property
    def channels(self) -> list[str]:
        """Selected channel names, in the order of the last axis of :meth:`read`."""
        return [self._all_channels[i] for i in self._channel_idx]

    @property
    def x(self) -> np.ndarray:
        """``[X]`` float64 x coordinates."""
        return self._x.copy()

    @property
    def y(self) -> np.ndarray | None:
        """``[Y]`` float64 y coordinates, or None for 1D data."""
        return None if self._y is None else self._y.copy()

    @property
    def t(self) -> np.ndarray:
        """``[n_frames]`` frame times (PDEBench's extra trailing entry dropped)."""
        return self._t.copy()

    @property
    def attrs(self) -> dict[str, Any]:
        """File attributes as plain python values (e.g. ``{"Nu": 0.01}``)."""
        return dict(self._attrs)

    # ---- reading --------------------------------------------------------------------

    def _where(self) -> str:
        return f"file {self._path} (layout {self._layout!r})"

    def _indices(self, indices: Sequence[int] | slice | np.ndarray) -> np.ndarray:
        """Normalise ``indices`` to ``[n]`` int64 in ``[0, n_samples)`` (negatives wrap)."""
        if isinstance(indices, slice):
            return np.arange(self._n, dtype=np.int64)[indices]
        idx = np.asarray(indices)
        if idx.ndim == 0:
            idx = idx.reshape(1)
        if idx.size and (idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer)):
            raise PDEBenchFormatError(
                f"{self._where()}: indices must be a 1-D sequence of ints or a slice, got "
                f"dtype {idx.dtype} shape {idx.shape}"
            )
        idx = idx.astype(np.int64).reshape(-1)
        bad = idx[(idx < -self._n) | (idx >= self._n)]
        if bad.size:
            raise PDEBenchFormatError(
                f"{self._where()}: sample index {int(bad[0])} is out of range; the file has "
                f"{self._n} samples (valid 0..{self._n - 1}); check the split sizes"
            )
        return np.where(idx < 0, idx + self._n, idx)

    def _space_sel(self, space_stride: int) -> tuple[tuple[slice, ...], tuple[int, ...]]:
        """Strided spatial slices and the resulting shape; stride must divide each axis."""
        ss = _check_stride(space_stride, "space_stride")
        for axis, size in zip("xyz", self._spatial):
            if size % ss:
                raise PDEBenchFormatError(
                    f"{self._where()}: space_stride={ss} does not divide the {size} points of "
                    f"axis {axis}; pick a divisor of {size}"
                )
            if size // ss < 2:
                raise PDEBenchFormatError(
                    f"{self._where()}: space_stride={ss} leaves {size // ss} point(s) on axis "
                    f"{axis} ({size} points); use a smaller space_stride"
                )
        return (slice(None, None, ss),) * len(self._spatial), tuple(s // ss for s in self._spatial)

    def _time_sel(self, time_stride: int, t_stop: int | None) -> slice:
        """Frames ``0, ts, 2ts, ... < t_stop``; at least 2 frames (except darcy)."""
        ts = _check_stride(time_stride, "time_stride")
        stop = self._n_frames if t_stop is None else t_stop
        if isinstance(stop, bool) or not isinstance(stop, (int, np.integer)) or not (
            1 <= stop <= self._n_frames
        ):
            raise PDEBenchFormatError(
                f"{self._where()}: t_stop={t_stop!r} is invalid; use an int in "
                f"1..{self._n_frames} (the file has {self._n_frames} frames)"
            )
        kept = len(range(0, int(stop), ts))
        if self._layout != "darcy" and kept < 2:
            raise PDEBenchFormatError(
                f"{self._where()}: time_stride={ts} with t_stop={stop} leaves {kept} frame(s); "
                "need at least 2; lower time_stride or raise t_stop"
            )
        return slice(0, int(stop), ts)

    def coords(
        self, space_stride: int = 1, time_stride: int = 1, t_stop: int | None = None
    ) -> dict[str, np.ndarray]:
        """Coordinates matching :meth:`read` with the same strides.

        Returns:
            ``{"x": [X'], "y": [Y'] (2D only), "t": [T']}`` float64.
        """
        sel, _ = self._space_sel(space_stride)
        out = {"x": self._x[sel[0]]}
        if self._y is not None:
            out["y"] = self._y[sel[1]]
        out["t"] = self._t[self._time_sel(time_stride, t_stop)]
        return out

    def _runs(
        self, idx: np.ndarray, per_sample_bytes: int
    ) -> Iterator[tuple[int, int, np.ndarray, np.ndarray]]:
        """Plan reads: yield ``(start, stop, dest, src)`` per contiguous run of file indices.

        h5py needs increasing indices and reads contiguous slices far faster than point
        lists, so unique sorted indices are grouped into runs (capped at
        ``_MAX_BLOCK_BYTES``); ``out[dest] = block[src]`` then restores the requested order
        (including duplicates).
        """
        uniq, inv = np.unique(idx, return_inverse=True)
        order = np.argsort(inv, kind="stable")
        sorted_inv = inv[order]
        cap = max(1, _MAX_BLOCK_BYTES // max(1, per_sample_bytes))
        a = 0
        while a < len(uniq):
            b = a + 1
            while b < len(uniq) and b - a < cap and uniq[b] == uniq[b - 1] + 1:
                b += 1
            lo = np.searchsorted(sorted_inv, a, "left")
            hi = np.searchsorted(sorted_inv, b, "left")
            yield int(uniq[a]), int(uniq[b - 1]) + 1, order[lo:hi], sorted_inv[lo:hi] - a
            a = b

    def read(
        self,
        indices: Sequence[int] | slice | np.ndarray,
        time_stride: int = 1,
        space_stride: int = 1,
        t_stop: int | None = None,
    ) -> np.ndarray:
        """Read samples lazily, channels-last.

        Args:
            indices: Sample indices (any order, duplicates allowed, negatives wrap) or a slice.
            time_stride: Keep frames ``0, time_stride, ...``.
            space_stride: Keep every ``space_stride``-th point on each spatial axis; must
                divide each axis length.
            t_stop: Read only frames ``< t_stop`` (before striding); None = all.

        Returns:
            float32 ``[n, T', *spatial', C]`` in the order of ``indices``; for darcy the
            solution as ``[n, 1, X', Y', 1]``.

        Raises:
            PDEBenchFormatError: bad indices/strides, inconsistent groups, NaN/Inf in data.
        """
        self._require_open()
        idx = self._indices(indices)
        tsel = self._time_sel(time_stride, t_stop)
        ssel, sshape = self._space_sel(space_stride)
        n_t = len(range(*tsel.indices(self._n_frames)))
        chans = self._channel_idx
        out = np.empty((len(idx), n_t, *sshape, len(chans)), dtype=np.float32)
        if self._layout == "group":
            self._read_groups(idx, tsel, ssel, out)
        else:
            per_sample = n_t * int(np.prod(sshape)) * 4
            for start, stop, dest, src in self._runs(idx, per_sample):
                for c_out, c in enumerate(chans):
                    block = self._datasets[c][(slice(start, stop), tsel, *ssel)]
                    out[dest, ..., c_out] = block[src]
        return check_finite(out, f"{self._where()}, read", sample_ids=idx)

    def _read_groups(
        self, idx: np.ndarray, tsel: slice, ssel: tuple[slice, ...], out: np.ndarray
    ) -> None:
        """One h5py read per unique sample; each group's shape is checked on the way."""
        # per_sample_bytes=_MAX_BLOCK_BYTES caps runs at one sample: each group is its own
        # dataset, so there is nothing contiguous to merge.
        for start, _stop, dest, _src in self._runs(idx, per_sample_bytes=_MAX_BLOCK_BYTES):
            key = self._group_keys[start]
            group = self._file[key]
            dset = self._dataset("data", group)
            if tuple(dset.shape) != self._sample_shape:
                raise PDEBenchFormatError(
                    f"file {self._path}: group '{key}' has 'data' of shape {dset.shape} but "
                    f"group '{self._group_keys[0]}' has {self._sample_shape}; all samples must "
                    "match (the file is inconsistent; regenerate it or exclude that sample)"
                )
            block = dset[(tsel, *ssel, slice(None))][..., self._channel_idx]
            out[dest] = block[None]

    def read_coefficient(
        self, indices: Sequence[int] | slice | np.ndarray, space_stride: int = 1
    ) -> np.ndarray:
        """Darcy only: the coefficient field ``nu`` as float32 ``[n, X', Y', 1]``."""
        self._require_open()
        if self._layout != "darcy":
            raise PDEBenchFormatError(
                f"{self._where()}: read_coefficient() needs layout 'darcy' (datasets 'tensor' "
                "and 'nu'); use read() for this file"
            )
        idx = self._indices(indices)
        ssel, sshape = self._space_sel(space_stride)
        out = np.empty((len(idx), *sshape, 1), dtype=np.float32)
        for start, stop, dest, src in self._runs(idx, int(np.prod(sshape)) * 4):
            out[dest, ..., 0] = self._nu[(slice(start, stop), *ssel)][src]
        return check_finite(out, f"{self._where()}, dataset 'nu'", sample_ids=idx)

    # ---- lifecycle ------------------------------------------------------------------

    def _require_open(self) -> None:
        if self._file is None or not self._file.id.valid:
            raise PDEBenchFormatError(
                f"reader for {self._path} is closed; reopen it with open_pdebench()"
            )

    def close(self) -> None:
        """Close the underlying HDF5 file (idempotent)."""
        if self._file is not None:
            with contextlib.suppress(Exception):
                self._file.close()
            self._file = None

    def __enter__(self) -> PDEBenchReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __getstate__(self) -> dict[str, Any]:
        # h5py handles cannot cross processes; reopen from the path instead.
        return {"path": str(self._path), "layout": self._layout, "fields": self._requested_fields}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["path"], state["layout"], state["fields"])  # type: ignore[misc]

    def __repr__(self) -> str:
        # getattr defaults: repr must work on a reader whose __init__ failed part-way.
        channels = self.channels if hasattr(self, "_channel_idx") else "?"
        return (
            f"PDEBenchReader(path={str(self._path)!r}, layout={getattr(self, '_layout', '?')!r}, "
            f"n_samples={getattr(self, '_n', '?')}, n_frames={getattr(self, '_n_frames', '?')}, "
            f"spatial_shape={getattr(self, '_spatial', '?')}, channels={channels})"
        )


def open_pdebench(
    path: str | os.PathLike[str], layout: str = "auto", fields: Sequence[str] | None = None
) -> PDEBenchReader:
    """Open a PDEBench HDF5 file for lazy reading.

    Args:
        path: The ``.hdf5``/``.h5`` file.
        layout: ``"auto"`` (detect from keys) or one of :data:`LAYOUTS`.
        fields: Channel names to keep, in this order (e.g. ``["density", "Vx"]``;
            ``["u"]`` for tensor/darcy; ``["c0", ...]`` for group). None keeps all.

    Returns:
        A :class:`PDEBenchReader`; use ``with open_pdebench(...) as r:`` or ``r.close()``.
    """
    return PDEBenchReader(path, layout=layout, fields=fields)
