"""Per-layout inspection of an open PDEBench file: shapes, coordinates, channels, field choice.

A mixin of :class:`~ups_kedro.data.pdebench.reader.PDEBenchReader`; it fills the reader's
``_n``, ``_n_frames``, ``_spatial``, ``_all_channels``, coordinates and ``_channel_idx``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ups_kedro.data.pdebench.common import (
    _LAYOUT_HINT,
    _T_KEY,
    _X_KEY,
    _Y_KEY,
    MULTIFIELD_ORDER,
    NS_INCOM_CHANNELS,
    PDEBenchFormatError,
    _fmt_keys,
    _plain,
    _sorted_keys,
    detect_layout,
)


class _LayoutInspector:
    """Validation of each layout's datasets, shared by the reader's constructor."""

    _path: Path
    _file: h5py.File | None
    _layout: str
    _requested_fields: list[str] | None
    _attrs: dict[str, Any]

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

    def _inspect_ns_incom(self) -> None:
        """velocity [N, T, X, Y, 2] (+ particles [..., 1]); channel c reads component c."""
        vel = self._dataset("velocity")
        self._check_rank(vel, 5, 5, "'velocity' [N, T, X, Y, 2]")
        if vel.shape[-1] != 2:
            raise PDEBenchFormatError(
                f"file {self._path}: dataset 'velocity' has shape {vel.shape}; layout "
                "'ns_incom' expects 2 velocity components on the last axis")
        sources = [(vel, 0), (vel, 1)]
        if "particles" in self._file:
            part = self._dataset("particles")
            if tuple(part.shape) != (*vel.shape[:-1], 1):
                raise PDEBenchFormatError(
                    f"file {self._path}: dataset 'particles' has shape {part.shape}, expected "
                    f"{(*vel.shape[:-1], 1)} to match 'velocity' (the file is inconsistent)")
            sources.append((part, 0))
        self._datasets = [d for d, _ in sources]
        self._components = [c for _, c in sources]
        self._all_channels = list(NS_INCOM_CHANNELS[: len(sources)])
        self._n, self._n_frames = int(vel.shape[0]), int(vel.shape[1])
        self._spatial = tuple(int(s) for s in vel.shape[2:4])
        # No space coordinates in these files: PDEBench's domain is the unit square.
        self._x = (np.arange(self._spatial[0]) + 0.5) / self._spatial[0]
        self._y = (np.arange(self._spatial[1]) + 0.5) / self._spatial[1]
        t = self._dataset("t")
        if t.ndim not in (1, 2) or t.shape[-1] != self._n_frames:
            raise PDEBenchFormatError(
                f"file {self._path}: dataset 't' has shape {t.shape}; layout 'ns_incom' "
                f"expects [N, T] or [T] with T = {self._n_frames} frames")
        self._t = np.asarray(t[0] if t.ndim == 2 else t[()], dtype=np.float64)

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
