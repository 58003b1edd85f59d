"""The built-in numerical solver as a reference "variant": its accuracy and its cost.

A surrogate is only worth having if it is cheaper than the solver it imitates, so evaluation
re-solves the same trajectories from the same given frame (``initial_step - 1``) with the
project's own solver and times it in the same run as the surrogates.

The stored frames were downsampled in space (every ``s``-th point of the solver grid, on each
axis), so the given frame is first brought back to the solver grid by Fourier (trigonometric)
interpolation —
exact for band-limited data; what the downsampling aliased away is lost, which is why the
solver's own nRMSE is small but not zero — then solved, then downsampled the same way.

Systems: 1D Burgers and advection (built-in data or PDEBench files with a ``Nu`` / ``beta``
attribute) and the built-in 2D incompressible vorticity data (:func:`solvers.solve_vorticity2d`,
same ``Nu``, no forcing), all single-channel.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from ups_kedro.data import solvers
from ups_kedro.evaluation.rollout import scored_frames


@dataclass(frozen=True)
class SolverSpec:
    """Which built-in solver reproduces a dataset, at which resolution."""

    system: str  # burgers | advection | vorticity2d
    coefficient: float  # ν (Burgers, PDEBench form; vorticity: plain ν) or β (advection)
    resolution: int  # solver grid points per axis (the raw file's)


def solver_spec(raw_source: dict) -> tuple[SolverSpec | None, str]:
    """The solver for a dataset described by ``data_processing.raw_source``, or why there is none.

    Built-in data names its system; a 1D PDEBench file is recognised by its attributes (``Nu``
    for Burgers, ``beta`` for advection).  2D: only the built-in vorticity data (a PDEBench 2D
    file's forcing and equation are not known to the built-in solver).  Single-channel only.
    """
    attrs = raw_source.get("attrs") or {}
    shape = [int(n) for n in raw_source.get("spatial_shape") or []]
    channels = raw_source.get("channels") or []
    system = raw_source.get("system")
    if len(channels) != 1 or len(shape) not in (1, 2):
        return None, (f"no built-in solver for spatial shape {shape} with channels {channels} "
                      "(single-channel 1D or 2D only)")
    if len(shape) == 2:
        if system == "vorticity2d" and "Nu" in attrs and shape[0] == shape[1]:
            return SolverSpec("vorticity2d", float(attrs["Nu"]), shape[0]), ""
        return None, (f"no built-in 2D solver for system {system!r} on grid {shape} (only the "
                      "built-in vorticity2d data, square grid)")
    if system is None:
        system = "burgers" if "Nu" in attrs else "advection" if "beta" in attrs else None
    if system == "burgers" and "Nu" in attrs:
        return SolverSpec("burgers", float(attrs["Nu"]), int(shape[0])), ""
    if system == "advection" and "beta" in attrs:
        return SolverSpec("advection", float(attrs["beta"]), int(shape[0])), ""
    return None, f"no built-in solver for system {system!r} with attributes {sorted(attrs)}"


def fourier_upsample(u: np.ndarray, factor: int, axis: int = -1) -> np.ndarray:
    """Trigonometric interpolation of periodic samples along ``axis`` onto a ``factor``× finer grid.

    The fine grid starts at the same point as the coarse one (``x_fine[factor*j] = x[j]``), as a
    strided downsample leaves it.  ``u [..., X, ...]`` → ``[..., factor*X, ...]`` (float64).
    """
    if factor == 1:
        return np.array(u, dtype=np.float64)
    u = np.moveaxis(np.asarray(u, dtype=np.float64), axis, -1)
    n = u.shape[-1]
    spec = np.fft.rfft(u, axis=-1)
    if n % 2 == 0:  # the coarse Nyquist mode becomes an ordinary ±k pair on the fine grid
        spec[..., -1] *= 0.5
    fine = np.zeros((*u.shape[:-1], factor * n // 2 + 1), dtype=spec.dtype)
    fine[..., : spec.shape[-1]] = spec
    return np.moveaxis(np.fft.irfft(fine, n=factor * n, axis=-1) * factor, -1, axis)


def solver_rollout(fields: np.ndarray, spec: SolverSpec, dt: float, initial_step: int,
                   time_stride: int = 1) -> tuple[np.ndarray, float]:
    """Re-solve every trajectory from frame ``initial_step-1`` with the built-in solver.

    Args:
        fields: [B, T, *space, 1] physical truth, space ``[X]`` or ``[X, Y]`` (only frame
            ``initial_step-1`` is used).
        dt: time between stored frames.
    Returns:
        (predictions [B, K, *space, 1] for the frames of :func:`scored_frames`, wall seconds
        spent: upsampling, solving and downsampling, as a surrogate's time includes its
        encode/decode).
    """
    space = fields.shape[2:-1]
    if len(space) != (2 if spec.system == "vorticity2d" else 1):
        raise ValueError(f"solver {spec.system!r} does not fit data of spatial shape {space}")
    if any(spec.resolution % n for n in space):
        raise ValueError(f"solver grid {spec.resolution} is not a multiple of the data's "
                         f"{space[0] if len(space) == 1 else space}")
    factors = [spec.resolution // n for n in space]
    frames = scored_frames(fields.shape[1], initial_step, time_stride)
    t_save = np.concatenate([[0.0], (frames - (initial_step - 1)) * dt])
    u0 = np.asarray(fields[:, initial_step - 1, ..., 0], dtype=np.float64)
    start = time.perf_counter()
    fine = u0
    for i, factor in enumerate(factors):
        fine = fourier_upsample(fine, factor, axis=1 + i)
    if spec.system == "burgers":
        sol = solvers.solve_burgers(fine, nu=spec.coefficient, t_save=t_save)
    elif spec.system == "advection":
        sol = solvers.solve_advection(fine, beta=spec.coefficient, t_save=t_save)
    else:
        sol = solvers.solve_vorticity2d(fine, nu=spec.coefficient, t_save=t_save)
    coarse = sol[:, 1:, :: factors[0]] if len(factors) == 1 else \
        sol[:, 1:, :: factors[0], :: factors[1]]
    seconds = time.perf_counter() - start
    return coarse[..., None].astype(np.float32), seconds
