"""Shared names of the PDEBench reader and writers: layouts, keys, errors, small helpers."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import h5py
import numpy as np

from ups_kedro.errors import UserError

#: Layout names accepted by :func:`open_pdebench` (plus ``"auto"``).
LAYOUTS: tuple[str, ...] = ("tensor", "multifield", "group", "darcy", "ns_incom")
#: Field datasets of the compressible-NS layout, in PDEBench's channel order.
MULTIFIELD_ORDER: tuple[str, ...] = ("density", "pressure", "Vx", "Vy", "Vz")
#: Channels of the 2D incompressible-NS layout: ``velocity``'s two components, then ``particles``.
NS_INCOM_CHANNELS: tuple[str, ...] = ("Vx", "Vy", "particles")

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


def detect_layout(handle: h5py.File) -> str | None:
    """Guess the layout of an open file from its top-level keys; None when unknown."""
    keys = list(handle.keys())
    if "tensor" in keys:
        return "darcy" if "nu" in keys else "tensor"
    if any(name in keys for name in MULTIFIELD_ORDER):
        return "multifield"
    if "velocity" in keys:
        return "ns_incom"
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

