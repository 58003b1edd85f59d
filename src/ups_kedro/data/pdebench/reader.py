"""The lazy, strided PDEBench reader (see :mod:`ups_kedro.data.pdebench`)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ups_kedro.data.pdebench.common import (
    _LAYOUT_HINT,
    _MAX_BLOCK_BYTES,
    LAYOUTS,
    PDEBenchFileNotFoundError,
    PDEBenchFormatError,
    _check_stride,
    check_finite,
)
from ups_kedro.data.pdebench.layouts import _LayoutInspector

class PDEBenchReader(_LayoutInspector):
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
            # ns_incom: channel c is component c of a dataset with a trailing component axis
            comps = getattr(self, "_components", None) if self._layout == "ns_incom" else None
            for start, stop, dest, src in self._runs(idx, per_sample):
                for c_out, c in enumerate(chans):
                    sel = (slice(start, stop), tsel, *ssel)
                    if comps is not None:
                        sel = (*sel, comps[c])
                    block = self._datasets[c][sel]
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
