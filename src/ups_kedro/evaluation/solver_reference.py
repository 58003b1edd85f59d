"""The built-in numerical solver as a reference "variant": its accuracy and its cost.

A surrogate is only worth having if it is cheaper than the solver it imitates, so evaluation
re-solves the same trajectories from the same given frame (``initial_step - 1``) with the
project's own solver and times it in the same run as the surrogates.

The stored frames were downsampled in space (every ``s``-th point of the solver grid), so the
given frame is first brought back to the solver grid by Fourier (trigonometric) interpolation —
exact for band-limited data; what the downsampling aliased away is lost, which is why the
solver's own nRMSE is small but not zero — then solved, then downsampled the same way.
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

    system: str  # burgers | advection
    coefficient: float  # ν (Burgers, PDEBench form) or β (advection)
    resolution: int  # solver grid points (the raw file's)


def solver_spec(raw_source: dict) -> tuple[SolverSpec | None, str]:
    """The solver for a dataset described by ``data_processing.raw_source``, or why there is none.

    Built-in data names its system; a PDEBench file is recognised by its attributes (``Nu`` for
    Burgers, ``beta`` for advection) when it is 1D and single-channel.
    """
    attrs = raw_source.get("attrs") or {}
    shape = raw_source.get("spatial_shape") or []
    channels = raw_source.get("channels") or []
    if len(shape) != 1 or len(channels) != 1:
        return None, f"no built-in 1D solver for spatial shape {shape} with channels {channels}"
    system = raw_source.get("system")
    if system is None:
        system = "burgers" if "Nu" in attrs else "advection" if "beta" in attrs else None
    if system == "burgers" and "Nu" in attrs:
        return SolverSpec("burgers", float(attrs["Nu"]), int(shape[0])), ""
    if system == "advection" and "beta" in attrs:
        return SolverSpec("advection", float(attrs["beta"]), int(shape[0])), ""
    return None, f"no built-in solver for system {system!r} with attributes {sorted(attrs)}"


def fourier_upsample(u: np.ndarray, factor: int) -> np.ndarray:
    """Trigonometric interpolation of periodic samples ``u [B, X]`` onto a ``factor``× finer grid.

    The fine grid starts at the same point as the coarse one (``x_fine[factor*j] = x[j]``), as a
    strided downsample leaves it.  Returns ``[B, factor*X]``.
    """
    if factor == 1:
        return np.array(u, dtype=np.float64)
    n = u.shape[-1]
    spec = np.fft.rfft(u, axis=-1)
    if n % 2 == 0:  # the coarse Nyquist mode becomes an ordinary ±k pair on the fine grid
        spec[..., -1] *= 0.5
    fine = np.zeros((*u.shape[:-1], factor * n // 2 + 1), dtype=spec.dtype)
    fine[..., : spec.shape[-1]] = spec
    return np.fft.irfft(fine, n=factor * n, axis=-1) * factor


def solver_rollout(fields: np.ndarray, spec: SolverSpec, dt: float, initial_step: int,
                   time_stride: int = 1) -> tuple[np.ndarray, float]:
    """Re-solve every trajectory from frame ``initial_step-1`` with the built-in solver.

    Args:
        fields: [B, T, X, 1] physical truth (only frame ``initial_step-1`` is used).
        dt: time between stored frames.
    Returns:
        (predictions [B, K, X, 1] for the frames of :func:`scored_frames`, wall seconds spent).
    """
    n_x = fields.shape[2]
    if spec.resolution % n_x:
        raise ValueError(f"solver grid {spec.resolution} is not a multiple of the data's {n_x}")
    factor = spec.resolution // n_x
    frames = scored_frames(fields.shape[1], initial_step, time_stride)
    t_save = np.concatenate([[0.0], (frames - (initial_step - 1)) * dt])
    u0 = np.asarray(fields[:, initial_step - 1, :, 0], dtype=np.float64)
    start = time.perf_counter()
    fine = fourier_upsample(u0, factor)
    if spec.system == "burgers":
        sol = solvers.solve_burgers(fine, nu=spec.coefficient, t_save=t_save)
    else:
        sol = solvers.solve_advection(fine, beta=spec.coefficient, t_save=t_save)
    seconds = time.perf_counter() - start
    return sol[:, 1:, ::factor, None].astype(np.float32), seconds
