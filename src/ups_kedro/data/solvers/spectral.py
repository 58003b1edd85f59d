"""Spectral ETDRK4 engine shared by the built-in solvers: grids, checks, substep ladder, stepping.

See :mod:`ups_kedro.data.solvers` for the conventions (grids, ``t_save``, storage types).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np

# Contour points for the Kassam-Trefethen coefficients. 64 points on a unit circle give ~1e-15
# relative accuracy for every |L dt| (the integrands are entire, so the trapezoid rule converges
# geometrically); the cost is one [modes, 64] complex array per distinct dt.
_N_CONTOUR = 64

# Largest number of trajectories stepped as one array. FFT work is per trajectory anyway; the cap
# keeps the working set in cache. Measured on the 2-core box: 1D batches of ~128 rows and 2D
# batches of 16 fields of 64^2 were fastest (64 fields of 64^2 ran ~2x slower).
_BURGERS_CHUNK = 128
_VORTICITY_CHUNK = 16

# Worker threads for one-off scipy.fft calls on whole batches (-1 = all cores; same results).
# The time-stepping loops use workers=1 and can instead run groups of trajectories in threads.
_FFT_WORKERS = -1

# Allowed substep counts per save interval, ~4 per octave (1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 13, 16,
# ...). Trajectories are grouped by this count, so each group shares one set of ETDRK4
# coefficients and runs as one vectorised batch while each trajectory gets (nearly) its own step.
_SUBSTEP_LADDER = np.unique(np.round(2.0 ** (np.arange(0, 80) / 4.0)).astype(np.int64))


# ------------------------------------------------------------------------------------------------
# Grids and validation helpers
# ------------------------------------------------------------------------------------------------
def cell_centres(n: int) -> np.ndarray:
    """PDEBench cell-centre grid on [0, 1): ``x_i = (i + 0.5) / n``, shape ``[n]``."""
    if int(n) < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return (np.arange(int(n), dtype=np.float64) + 0.5) / int(n)


def _check_positive(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value) or value <= 0.0:
        raise ValueError(f"{name} must be a finite positive number, got {value!r}")
    return value


def _check_t_save(t_save: np.ndarray) -> np.ndarray:
    t = np.asarray(t_save, dtype=np.float64)
    if t.ndim != 1 or t.size == 0:
        raise ValueError(f"t_save must be a non-empty 1D array of times, got shape {t.shape}")
    if not np.all(np.isfinite(t)):
        raise ValueError("t_save must contain only finite times")
    if t[0] < 0.0:
        raise ValueError(f"t_save must start at t >= 0 (the initial state is t = 0), got {t[0]}")
    if t.size > 1 and not np.all(np.diff(t) > 0.0):
        raise ValueError("t_save must be strictly increasing (sorted, no repeated times)")
    return t


def _check_run(nu: float, t_save: np.ndarray, dt: float | None, cfl: float
               ) -> tuple[float, np.ndarray, float | None, float]:
    """The arguments every solver checks the same way: ``(nu, t, dt, cfl)``, validated."""
    return (_check_positive("nu", nu), _check_t_save(t_save),
            None if dt is None else _check_positive("dt", dt), _check_positive("cfl", cfl))


def _check_field(name: str, u: np.ndarray, ndim_spatial: int) -> tuple[np.ndarray, bool]:
    """Return ``(u as float64 with a batch axis, had_batch_axis)``; raise on bad shape/NaN/inf."""
    arr = np.asarray(u, dtype=np.float64)
    if arr.ndim == ndim_spatial:
        arr, batched = arr[None], False
    elif arr.ndim == ndim_spatial + 1:
        batched = True
    else:
        want = "[B, X]" if ndim_spatial == 1 else "[B, X, Y]"
        raise ValueError(f"{name} must have shape {want} (batch axis optional), got {arr.shape}")
    if any(s < 4 for s in arr.shape[1:]):
        raise ValueError(f"{name} needs at least 4 grid points per axis, got {arr.shape[1:]}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    return arr, batched


def _substeps(interval: float, dt_max: float) -> int:
    """Smallest number of equal substeps of length <= dt_max covering ``interval``."""
    # The 1e-9 slack stops round-off (e.g. 0.01 / 0.001 = 10.000000000000002) adding a step.
    return max(1, math.ceil(interval / dt_max - 1e-9))


def _ladder_steps(interval: float, dt_max: np.ndarray) -> np.ndarray:
    """Per-trajectory substep counts ``ceil(interval / dt_max)``, rounded up onto the ladder."""
    need = np.maximum(np.ceil(interval / np.asarray(dt_max, dtype=np.float64) - 1e-9), 1.0)
    if np.any(~np.isfinite(need)) or np.any(need > _SUBSTEP_LADDER[-1]):
        raise ValueError(
            "the automatic time step would need more than ~1e6 substeps per save interval; "
            "check nu, the initial data and t_save"
        )
    return _SUBSTEP_LADDER[np.searchsorted(_SUBSTEP_LADDER, need.astype(np.int64))]


# ------------------------------------------------------------------------------------------------
# ETDRK4 machinery (shared by Burgers and 2D vorticity)
# ------------------------------------------------------------------------------------------------
class _ETDRK4Coefficients:
    """ETDRK4 coefficients for a diagonal, real linear operator ``L`` (any shape) and step ``dt``.

    Kassam & Trefethen (2005): each phi-function is averaged over a circle of radius 1 around
    ``L dt``. That is exact for entire functions and free of the cancellation error the textbook
    formulas suffer for small ``|L dt|`` (including the ``L = 0`` mean mode).

    ``nl_factor`` (optional, broadcastable to ``lin``) is folded into the four coefficients that
    multiply the nonlinear term, so a nonlinear operator may return ``N / nl_factor`` and save one
    multiply per evaluation (ETDRK4 only ever uses ``N`` times one of these coefficients).
    """

    def __init__(self, lin: np.ndarray, dt: float, nl_factor: np.ndarray | None = None) -> None:
        self.dt = dt
        h_l = dt * lin
        self.e = np.exp(h_l)
        self.e2 = np.exp(h_l / 2.0)
        # Points exp(i pi (j - 1/2) / M), j = 1..M: a full circle that avoids the real axis.
        roots = np.exp(1j * np.pi * (np.arange(1, _N_CONTOUR + 1) - 0.5) / _N_CONTOUR)
        lr = h_l[..., None] + roots  # [..., M]
        elr = np.exp(lr)
        lr3 = lr**3
        # L is real, so the exact phi-values are real: keep the real part of the contour mean.
        self.q = dt * np.mean((np.exp(lr / 2.0) - 1.0) / lr, axis=-1).real
        self.f1 = dt * np.mean((-4.0 - lr + elr * (4.0 - 3.0 * lr + lr**2)) / lr3, axis=-1).real
        self.f2x2 = 2.0 * dt * np.mean((2.0 + lr + elr * (-2.0 + lr)) / lr3, axis=-1).real
        self.f3 = dt * np.mean((-4.0 - 3.0 * lr - lr**2 + elr * (4.0 - lr)) / lr3, axis=-1).real
        if nl_factor is not None:
            self.q = self.q * nl_factor
            self.f1 = self.f1 * nl_factor
            self.f2x2 = self.f2x2 * nl_factor
            self.f3 = self.f3 * nl_factor


class _CoefficientCache:
    """Coefficients keyed by dt (save intervals from ``linspace`` differ only by round-off)."""

    def __init__(self, lin: np.ndarray, nl_factor: np.ndarray | None = None) -> None:
        self.lin = lin
        self.nl_factor = nl_factor
        self._cache: dict[float, _ETDRK4Coefficients] = {}

    def get(self, dt: float) -> _ETDRK4Coefficients:
        # 12 significant digits: steps that differ by float noise share one set of coefficients.
        # A dt off by 1e-12 relative moves a frame by ~1e-14 in time, far below any tolerance.
        key = float(f"{dt:.12e}")
        if key not in self._cache:
            if len(self._cache) > 64:  # wildly non-uniform t_save: don't grow without bound
                self._cache.clear()
            self._cache[key] = _ETDRK4Coefficients(self.lin, dt, self.nl_factor)
        return self._cache[key]


def _etdrk4_steps(
    v: np.ndarray,
    c: _ETDRK4Coefficients,
    nonlinear: Callable[[np.ndarray], np.ndarray],
    n_steps: int,
) -> np.ndarray:
    """Advance the spectral state ``v`` by ``n_steps`` ETDRK4 steps of ``c.dt``."""
    # In-place updates: on 1D Burgers the elementwise work is ~1/3 of a step.
    for _ in range(n_steps):
        nv = nonlinear(v)
        e2v = c.e2 * v
        a = c.q * nv
        a += e2v
        na = nonlinear(a)
        b = c.q * na
        b += e2v
        nb = nonlinear(b)
        tmp = 2.0 * nb
        tmp -= nv
        tmp *= c.q
        cc = c.e2 * a
        cc += tmp
        nc = nonlinear(cc)
        v = c.e * v
        v += c.f1 * nv
        na += nb
        na *= c.f2x2
        v += na
        v += c.f3 * nc
    return v


def _integrate_grouped(
    v_all: np.ndarray,
    t: np.ndarray,
    first_frame: np.ndarray,
    out: np.ndarray,
    coeffs: _CoefficientCache,
    make_nonlinear: Callable[[int], Callable[[np.ndarray], np.ndarray]],
    to_physical: Callable[[np.ndarray, float], np.ndarray],
    step_counts: Callable[[float, np.ndarray, np.ndarray], np.ndarray],
    chunk: int,
    n_threads: int = 1,
) -> None:
    """Advance spectral states ``v_all [B, *modes]`` through ``t``; fill ``out [B, T, *space]``.

    Per save interval, ``step_counts(interval, v_all, frame) -> [B]`` gives each trajectory's
    substep count. Trajectories with the same count form a group (cut into pieces of at most
    ``chunk`` rows) that is stepped as one batch, so a trajectory's result depends only on its own
    data, never on its batch-mates. ``make_nonlinear(rows)`` builds the nonlinear operator for one
    piece (it may own scratch buffers); ``to_physical(v_all, t)`` maps states to frames.
    """
    frame = first_frame
    pool = ThreadPoolExecutor(n_threads) if n_threads > 1 else None

    def advance(idx: np.ndarray, c: _ETDRK4Coefficients, n_steps: int) -> None:
        v_all[idx] = _etdrk4_steps(v_all[idx], c, make_nonlinear(idx.size), n_steps)

    try:
        t_now = 0.0
        for j, t_next in enumerate(t):
            if t_next == 0.0:  # the initial condition itself, bit for bit
                out[:, j] = first_frame
                continue
            interval = float(t_next - t_now)
            steps = step_counts(interval, v_all, frame)
            tasks = []
            for n_steps in np.unique(steps):
                members = np.flatnonzero(steps == n_steps)
                c = coeffs.get(interval / int(n_steps))
                for piece in np.array_split(members, math.ceil(members.size / chunk)):
                    tasks.append((piece, c, int(n_steps)))
            if pool is None:
                for task in tasks:
                    advance(*task)
            else:
                for fut in [pool.submit(advance, *task) for task in tasks]:
                    fut.result()
            frame = to_physical(v_all, float(t_next))
            out[:, j] = frame
            t_now = float(t_next)
    finally:
        if pool is not None:
            pool.shutdown()

