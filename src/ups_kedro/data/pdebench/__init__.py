"""Write and lazily read PDEBench-format HDF5 files.

Four layouts are supported, matching the files PDEBench publishes (Takamoto et al., 2022,
https://github.com/pdebench/PDEBench; its data-download page lists the files):

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
``ns_incom``
    2D incompressible Navier-Stokes (``ns_incom_inhom_2d_512-*.h5``): ``velocity``
    ``[N, T, X, Y, 2]``, optional ``particles`` ``[N, T, X, Y, 1]`` (a passive tracer),
    ``force`` ``[N, X, Y, 2]`` (not a channel), ``t`` ``[N, T]``; no space coordinates (the
    unit square's cell centres are used).  Channels ``Vx``, ``Vy`` (and ``particles``).

Real files are ~8 GB, so the reader never loads a whole dataset: it reads contiguous runs
of samples with strided h5py hyperslabs. The writers are atomic (temp file + ``os.replace``)
so an interrupted generator never leaves a truncated file that a later run would trust.

This package is pure numpy/h5py on purpose: it is used by the data pipeline, by tests and by
standalone scripts, none of which should pay for importing kedro or torch.
"""

from __future__ import annotations

from ups_kedro.data.pdebench.common import (
    LAYOUTS,
    MULTIFIELD_ORDER,
    NS_INCOM_CHANNELS,
    PDEBenchFileNotFoundError,
    PDEBenchFormatError,
    check_finite,
    detect_layout,
)
from ups_kedro.data.pdebench.reader import PDEBenchReader, open_pdebench
from ups_kedro.data.pdebench.writers import (
    write_darcy_file,
    write_group_file,
    write_multifield_file,
    write_tensor_file,
)

__all__ = [
    "LAYOUTS",
    "MULTIFIELD_ORDER",
    "NS_INCOM_CHANNELS",
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
