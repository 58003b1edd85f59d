"""Reference PDE solvers for the built-in data sets, in plain numpy/scipy.

Everything here is periodic and Fourier pseudo-spectral, so the solvers are cheap, vectorised over a
batch of trajectories, and accurate to far below the float32 storage precision of the data.

Conventions
-----------
* 1D grids are the PDEBench cell centres ``x_i = (i + 0.5) / X`` on ``[0, 1)`` (see :func:`cell_centres`).
  2D grids use the same convention on both axes; axis 1 of ``[B, X, Y]`` is x, axis 2 is y.
* Solvers return channels-free arrays: 1D ``[B, T, X]``, 2D ``[B, T, X, Y]``; the caller adds channel
  axes. Computation is always float64; ``dtype`` only chooses the storage type of the returned array.
* ``t_save`` lists the output times (strictly increasing, ``t_save[0] >= 0``); the state at ``t = 0`` is
  the given initial condition, so with ``t_save[0] == 0`` frame 0 *is* the input, bit for bit.
* Between two save times the solvers take an integer number of equal substeps, so every saved frame
  lands exactly on its requested time (no interpolation).

Equations
---------
* Burgers (PDEBench form):   u_t + (u^2 / 2)_x = (nu / pi) u_xx.  Note the 1/pi: ``nu = 0.01`` is an
  actual viscosity of 0.00318.
* Advection:                 u_t + beta u_x = 0 (solved exactly).
* 2D incompressible Navier-Stokes, vorticity form on [0, 1)^2:
  w_t + u . grad w = nu Lap w + f,   Lap psi = -w,   u = psi_y,  v = -psi_x.

Time stepping: ETDRK4 (Cox & Matthews 2002) with the coefficients evaluated by the contour-integral
trick of Kassam & Trefethen (2005), which avoids the catastrophic cancellation of the closed-form
phi-functions for small |L dt|. Nonlinear terms use the 2/3 rule for dealiasing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import scipy.fft as sfft

__all__ = [
    "cell_centres",
    "burgers_initial_conditions",
    "advection_initial_conditions",
    "solve_burgers",
    "burgers_default_steps",
    "burgers_exact_cole_hopf",
    "solve_advection",
    "vorticity_initial_conditions",
    "solve_vorticity2d",
    "taylor_green_vorticity",
]

# Contour points for the Kassam-Trefethen coefficients. 64 points on a unit circle give ~1e-15
# relative accuracy for every |L dt| (the integrand is entire, so the trapezoid rule converges
# geometrically); the cost is negligible (one [modes, 64] complex array per distinct dt).
_N_CONTOUR = 64

# Trajectories solved together. The FFT work is per trajectory anyway; the chunk only bounds the
# working memory (a handful of [chunk, X//2 + 1] complex arrays) and keeps them cache-friendly.
_BURGERS_CHUNK = 128
_VORTICITY_CHUNK = 16

# Worker threads for scipy.fft over the batch axis (-1 = all cores); results are identical.
_FFT_WORKERS = -1


# --------------------------------------------------------------------------------------------------
# Grids and validation helpers
# --------------------------------------------------------------------------------------------------
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
        raise ValueError(f"t_save must start at t >= 0 (the initial condition is at t = 0), got {t[0]}")
    if t.size > 1 and not np.all(np.diff(t) > 0.0):
        raise ValueError("t_save must be strictly increasing (sorted, no repeated times)")
    return t


def _check_field(name: str, u: np.ndarray, ndim_spatial: int) -> tuple[np.ndarray, bool]:
    """Return ``(u as float64 with a batch axis, had_batch_axis)``; raise on bad shape or NaN/inf."""
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


# --------------------------------------------------------------------------------------------------
# ETDRK4 machinery (shared by Burgers and 2D vorticity)
# --------------------------------------------------------------------------------------------------
class _ETDRK4Coefficients:
    """ETDRK4 coefficients for a diagonal real linear operator ``L`` (any shape) and step ``dt``.

    Kassam & Trefethen (2005): the phi-functions are averaged over a circle of radius 1 around each
    ``L dt``, which is exact for entire functions and free of the cancellation error the textbook
    formulas suffer for small ``|L dt|`` (including the ``L = 0`` mean mode).
    """

    def __init__(self, lin: np.ndarray, dt: float) -> None:
        self.dt = dt
        h_l = dt * lin
        self.e = np.exp(h_l)
        self.e2 = np.exp(h_l / 2.0)
        # Points exp(i pi (j - 1/2) / M), j = 1..M: a full circle avoiding the real axis.
        roots = np.exp(1j * np.pi * (np.arange(1, _N_CONTOUR + 1) - 0.5) / _N_CONTOUR)
        lr = h_l[..., None] + roots  # [..., M]
        elr = np.exp(lr)
        # L is real, so the exact phi-values are real: keep the real part of the contour mean.
        self.q = dt * np.mean((np.exp(lr / 2.0) - 1.0) / lr, axis=-1).real
        lr3 = lr**3
        self.f1 = dt * np.mean((-4.0 - lr + elr * (4.0 - 3.0 * lr + lr**2)) / lr3, axis=-1).real
        self.f2 = dt * np.mean((2.0 + lr + elr * (-2.0 + lr)) / lr3, axis=-1).real
        self.f3 = dt * np.mean((-4.0 - 3.0 * lr - lr**2 + elr * (4.0 - lr)) / lr3, axis=-1).real
        self.f2x2 = 2.0 * self.f2


class _CoefficientCache:
    """Coefficients keyed by dt (save intervals from ``linspace`` differ only by round-off)."""

    def __init__(self, lin: np.ndarray) -> None:
        self._lin = lin
        self._cache: dict[float, _ETDRK4Coefficients] = {}

    def get(self, dt: float) -> _ETDRK4Coefficients:
        # 12 significant digits: intervals that differ by float noise share one set of coefficients;
        # using a dt off by 1e-12 relative shifts a frame by ~1e-14 in time, far below any tolerance.
        key = float(f"{dt:.12e}")
        if key not in self._cache:
            if len(self._cache) > 64:  # wildly non-uniform t_save: don't grow without bound
                self._cache.clear()
            self._cache[key] = _ETDRK4Coefficients(self._lin, dt)
        return self._cache[key]


def _etdrk4_steps(
    v: np.ndarray,
    c: _ETDRK4Coefficients,
    nonlinear: Callable[[np.ndarray], np.ndarray],
    n_steps: int,
) -> np.ndarray:
    """Advance the spectral state ``v`` by ``n_steps`` ETDRK4 steps of ``c.dt``; returns the new state."""
    # Written with in-place updates: on 1D Burgers the elementwise work is ~1/3 of a step.
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


# --------------------------------------------------------------------------------------------------
# Initial conditions (1D)
# --------------------------------------------------------------------------------------------------
def burgers_initial_conditions(
    rng: np.random.Generator,
    n: int,
    x: np.ndarray,
    *,
    k_max: int = 4,
    n_waves: int = 2,
    p_abs: float = 0.1,
    p_window: float = 0.1,
    window_width: float = 0.01,
) -> np.ndarray:
    """PDEBench-style random initial conditions, shape ``[n, X]`` (float64).

    ``u0(x) = sign * sum_{i<n_waves} A_i sin(2 pi k_i x + phi_i)`` with ``k_i`` uniform on
    ``{1..k_max}`` (drawn with replacement), ``A_i ~ U[0, 1]``, ``phi_i ~ U[0, 2 pi)``, ``sign = +-1``.
    Then, as in PDEBench's ``init_multi``: on a fraction ``p_abs`` of samples ``u0 <- |u0|`` (applied
    before the sign flip, so these become one-signed bumps of either sign), and on a fraction
    ``p_window`` ``u0`` is multiplied by the tanh window
    ``0.5 (tanh((x - xL)/w) - tanh((x - xR)/w))``, ``xL ~ U[0.1, 0.45]``, ``xR ~ U[0.55, 0.9]``.

    Differences from PDEBench (deliberate): wavenumbers are exact multiples of 2 pi on [0, 1), so the
    data is periodic (PDEBench divides by ``x[-1] - x[0] = 1 - dx``); a repeated wavenumber does not
    double the frequency (a one-hot-sum quirk there); the window is summed over the periodic images
    so it is exactly periodic. With ``w = 0.01`` the window's Fourier tail is ~exp(-pi^2 w k), i.e.
    below 1e-14 beyond k ~ 340, so X >= 1024 represents it to round-off (abs() kinks are only
    algebraically smooth; the viscous solver smooths them within the first steps).

    Args:
        rng: random generator (all randomness comes from it).
        n: number of samples.
        x: grid ``[X]`` in [0, 1) (normally :func:`cell_centres`).
    """
    n = int(n)
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if k_max < 1 or n_waves < 1:
        raise ValueError(f"k_max and n_waves must be >= 1, got {k_max}, {n_waves}")
    xs = np.asarray(x, dtype=np.float64)
    if xs.ndim != 1:
        raise ValueError(f"x must be a 1D grid, got shape {xs.shape}")
    k = rng.integers(1, k_max + 1, size=(n, n_waves, 1))
    amp = rng.uniform(0.0, 1.0, size=(n, n_waves, 1))
    phase = rng.uniform(0.0, 2.0 * np.pi, size=(n, n_waves, 1))
    u = np.sum(amp * np.sin(2.0 * np.pi * k * xs + phase), axis=1)  # [n, X]

    take_abs = rng.uniform(size=n) < p_abs
    u[take_abs] = np.abs(u[take_abs])
    u *= rng.choice(np.array([-1.0, 1.0]), size=(n, 1))

    windowed = rng.uniform(size=n) < p_window
    x_l = rng.uniform(0.1, 0.45, size=n)
    x_r = rng.uniform(0.55, 0.9, size=n)
    for i in np.flatnonzero(windowed):
        # Sum over images m = -1, 0, 1 makes the window periodic to ~exp(-2 * 1.1 / w) (= 0 here).
        win = sum(
            0.5 * (np.tanh((xs + m - x_l[i]) / window_width) - np.tanh((xs + m - x_r[i]) / window_width))
            for m in (-1.0, 0.0, 1.0)
        )
        u[i] *= win
    return u


def advection_initial_conditions(rng: np.random.Generator, n: int, x: np.ndarray, **kwargs: float) -> np.ndarray:
    """Initial conditions for 1D advection, shape ``[n, X]``.

    PDEBench generates its advection data from the same ``init_multi`` recipe as Burgers, so this is
    :func:`burgers_initial_conditions` (keyword options pass through).
    """
    return burgers_initial_conditions(rng, n, x, **kwargs)


# --------------------------------------------------------------------------------------------------
# 1D viscous Burgers
# --------------------------------------------------------------------------------------------------
def _burgers_max_dt(u_max: np.ndarray, nu_eff: float, n_x: int, cfl: float) -> np.ndarray:
    """Largest ETDRK4 step for Burgers trajectories whose current ``max|u|`` is ``u_max`` (array).

    Diffusion is integrated exactly, so the explicit advection term ``u u_x`` sets the step through
    the grid Courant number ``C = u_max k_c dt`` at the dealiased cut-off ``k_c = 2 pi X / 3``.
    Linear (frozen-coefficient) analysis of ETDRK4 on ``u_t = -i b u - a u`` gives the stability
    limit ``C < 2.8`` without damping (the RK4 imaginary-axis limit), rising to 4.8 when the cut-off
    mode is damped at ``D = nu' k_c / u_max = 1`` and ~12 beyond ``D ~ 3``. We use 85 % of the
    conservative fit ``2.8 + 1.2 min(D, 1)`` and, for accuracy, at most ``cfl``.
    """
    k_c = 2.0 * math.pi * n_x / 3.0
    u = np.maximum(np.asarray(u_max, dtype=np.float64), 1e-300)
    damping = nu_eff * k_c / u
    courant = np.minimum(cfl, 0.85 * (2.8 + 1.2 * np.minimum(damping, 1.0)))
    return courant / (u * k_c)


# Allowed substep counts per save interval, ~4 per octave: trajectories are grouped by this count so
# each group shares one set of ETDRK4 coefficients and runs as one vectorised batch.
_SUBSTEP_LADDER = np.unique(np.round(2.0 ** (np.arange(0, 80) / 4.0)).astype(np.int64))


def burgers_default_steps(
    interval: float, u_max: np.ndarray, nu: float, n_x: int, cfl: float = 3.0
) -> np.ndarray:
    """Number of ETDRK4 substeps over one save interval, per trajectory (what ``dt=None`` uses).

    ``n = ceil(interval / dt_max)`` with :func:`_burgers_max_dt`, rounded up to the ladder
    1, 2, 3, 4, 5, 6, 7, 8, 10, 11, 13, 16, 19, 23, 27, 32, ... so that trajectories can share
    coefficients. Measured on PDEBench-style data at ``nu = 0.01, X = 1024, t in [0, 2]`` against runs
    with 10x smaller steps: relative L2 error per frame <= ~1.5e-6 worst, ~2e-7 median at ``cfl = 3``;
    the error scales like ``cfl^4`` (cfl = 2: 2.4e-7 worst).
    """
    dt_max = _burgers_max_dt(np.asarray(u_max, dtype=np.float64), nu / math.pi, n_x, cfl)
    need = np.maximum(np.ceil(interval / dt_max - 1e-9), 1.0)
    if np.any(need > _SUBSTEP_LADDER[-1]):
        raise ValueError("time step would need more than ~1e6 substeps per save interval; check nu, u0 and t_save")
    return _SUBSTEP_LADDER[np.searchsorted(_SUBSTEP_LADDER, need.astype(np.int64))]


def solve_burgers(
    u0: np.ndarray,
    nu: float,
    t_save: np.ndarray,
    dt: float | None = None,
    dealias: bool = True,
    *,
    cfl: float = 3.0,
    dtype: np.dtype | type = np.float64,
    n_threads: int = 1,
) -> np.ndarray:
    """Viscous Burgers ``u_t + (u^2/2)_x = (nu/pi) u_xx`` on periodic [0, 1) (PDEBench convention).

    Fourier pseudo-spectral in space, ETDRK4 in time (diffusion exact, advection explicit), batched
    over trajectories with real FFTs along the last axis.

    Args:
        u0: initial data ``[B, X]`` (or ``[X]``) on a uniform periodic grid, e.g. :func:`cell_centres`.
        nu: PDEBench viscosity parameter (> 0); the diffusion coefficient is ``nu / pi``.
        t_save: output times ``[T]``, strictly increasing, ``t_save[0] >= 0`` (normally 0).
        dt: maximum time step for every trajectory; each save interval is split into an integer number
            of equal substeps ``<= dt``. ``None`` (default) chooses the substeps *per trajectory and per
            save interval* from that trajectory's current ``max|u|`` (:func:`burgers_default_steps`).
            ``max|u|`` only decreases (maximum principle) and typically falls ~3x by ``t = 1``, and
            small-amplitude samples need far fewer steps, so this is ~5x cheaper than one global step
            for the same worst-case accuracy. Each trajectory's result does not depend on the others
            in the batch (groups share a step count, never a state).
        dealias: apply the 2/3 rule to the quadratic term: the product is formed from modes
            ``|k| < X/3`` only and projected back onto them. Content of ``u0`` above the cut-off (tiny
            for smooth data) does not interact; it decays under exact diffusion, so frame 0 stays
            exactly ``u0``.
        cfl: target grid Courant number ``max|u| k_c dt`` for ``dt=None`` (default 3; error ~ cfl^4).
            It is lowered automatically where weak damping makes ETDRK4 less stable (small nu/X).
        dtype: storage type of the result (computation is float64 regardless).
        n_threads: worker threads over trajectory groups (numpy and scipy.fft release the GIL). Off by
            default: on the shared 2-core test machine two threads were ~15 % *slower*; try it on
            idle many-core machines. Results are identical either way.

    Returns:
        ``[B, T, X]`` (``[T, X]`` if ``u0`` was 1D) in ``dtype``.

    Raises:
        ValueError: non-finite ``u0``, ``nu <= 0``, invalid ``t_save``, ``dt`` or ``cfl``.
    """
    u, batched = _check_field("u0", u0, 1)
    nu = _check_positive("nu", nu)
    t = _check_t_save(t_save)
    if dt is not None:
        dt = _check_positive("dt", dt)
    cfl = _check_positive("cfl", cfl)
    n_b, n_x = u.shape
    nu_eff = nu / math.pi

    k_all = np.arange(n_x // 2 + 1, dtype=np.float64)  # rfft wavenumbers (cycles per unit length)
    # Evolved modes: below the 2/3 cut-off (dealiased), or all but the Nyquist mode (whose derivative
    # is not representable on the grid, so it must never feed back).
    n_keep = int(np.count_nonzero(k_all < n_x / 3.0)) if dealias else n_x // 2 + (n_x % 2)
    kx = 2.0 * np.pi * k_all
    lin_all = -nu_eff * kx**2
    lin = lin_all[:n_keep]
    nl_factor = -0.5j * kx[:n_keep]  # -(u^2/2)_x in Fourier space
    coeffs = _CoefficientCache(lin)

    u_hat = sfft.rfft(u, axis=-1)
    v_all = u_hat[:, :n_keep].copy()  # evolved state
    high = u_hat[:, n_keep:]  # non-interacting tail: pure diffusion, applied analytically at save times
    has_high = bool(np.any(high != 0.0))
    out = np.empty((n_b, t.size, n_x), dtype=dtype)
    u_max = np.max(np.abs(u), axis=-1)

    n_threads = max(1, int(n_threads))
    pool = ThreadPoolExecutor(n_threads) if n_threads > 1 else None

    def advance(idx: np.ndarray, c: _ETDRK4Coefficients, n_steps: int) -> None:
        # Zero-padded spectrum buffer, reused: scipy's irfft pads a short input itself but that copy
        # costs more than the transform (8.7 vs 3.8 us per 1024-point trajectory).
        padded = np.zeros((idx.size, n_x // 2 + 1), dtype=np.complex128)

        def nonlinear(v: np.ndarray) -> np.ndarray:
            padded[:, :n_keep] = v
            w = sfft.irfft(padded, n=n_x, axis=-1, workers=1)
            np.multiply(w, w, out=w)
            return nl_factor * sfft.rfft(w, axis=-1, workers=1)[:, :n_keep]

        v_all[idx] = _etdrk4_steps(v_all[idx], c, nonlinear, n_steps)

    try:
        t_now = 0.0
        for j, t_next in enumerate(t):
            if t_next == 0.0:  # the initial condition itself, bit for bit
                out[:, j] = u
                continue
            interval = float(t_next - t_now)
            if dt is None:
                steps = burgers_default_steps(interval, u_max, nu, n_x, cfl)
            else:
                steps = np.full(n_b, _substeps(interval, dt), dtype=np.int64)
            tasks = []
            for n_steps in np.unique(steps):
                members = np.flatnonzero(steps == n_steps)
                c = coeffs.get(interval / int(n_steps))
                # Pieces of at most _BURGERS_CHUNK rows; threads share out whole groups/pieces (splitting
                # further would shrink the FFT batches, which costs more than it parallelises).
                for piece in np.array_split(members, math.ceil(members.size / _BURGERS_CHUNK)):
                    tasks.append((piece, c, int(n_steps)))
            if pool is None:
                for task in tasks:
                    advance(*task)
            else:
                for fut in [pool.submit(advance, *task) for task in tasks]:
                    fut.result()
            spec = v_all
            if has_high:
                tail = high * np.exp(lin_all[n_keep:] * float(t_next))
                spec = np.concatenate([v_all, tail], axis=-1)
            frame = sfft.irfft(spec, n=n_x, axis=-1, workers=_FFT_WORKERS)
            out[:, j] = frame
            u_max = np.max(np.abs(frame), axis=-1)
            t_now = float(t_next)
    finally:
        if pool is not None:
            pool.shutdown()
    return out if batched else out[0]


def burgers_exact_cole_hopf(
    u0: np.ndarray,
    nu: float,
    t_save: np.ndarray,
    x_eval: np.ndarray | None = None,
    *,
    method: str = "quadrature",
    n_fine: int | None = None,
) -> np.ndarray:
    """Exact solution of ``u_t + (u^2/2)_x = (nu/pi) u_xx`` on periodic [0, 1) via Cole-Hopf.

    ``u0`` is read as samples on the cell centres ``(i + 0.5)/X`` of its band-limited (trigonometric)
    interpolant; that function's exact evolution is returned. With ``nu' = nu/pi``, the mean ``c`` of
    ``u0`` removed (Galilean shift: ``u(x, t) = c + v(x - c t, t)`` where ``v`` solves Burgers from
    ``u0 - c``), ``F = int (u0 - c)`` is periodic and ``phi0 = exp(-F / (2 nu'))`` solves the heat
    equation ``phi_t = nu' phi_xx``; then ``v = -2 nu' phi_x / phi``.

    Methods:
        ``"quadrature"`` (default, robust): heat-kernel integral over the real line in log-domain,
            ``v(x,t) = sum_j w_j (x - y_j)/t / sum_j w_j``,
            ``log w_j = -(x - y_j)^2/(4 nu' t) - F(y_j)/(2 nu')``, with ``y_j`` a fine periodic grid
            plus its images. Max-subtraction (log-sum-exp) means no under/overflow even when
            ``F/(2 nu')`` spans hundreds of e-folds (small nu). The trapezoid rule on this smooth,
            rapidly decaying integrand converges geometrically once the grid resolves the kernel width.
        ``"spectral"``: FFT of ``phi0`` on a fine grid, each mode decays exactly. Only well
            conditioned while ``exp(-(max F - min F)/(2 nu'))`` is far above round-off (moderate nu);
            ``x_eval`` must be the default grid.

    Args:
        u0: ``[X]`` initial data (any mean).
        nu: PDEBench viscosity parameter (> 0).
        t_save: times ``[T]`` (>= 0, strictly increasing).
        x_eval: evaluation points ``[E]`` (default: the cell centres of ``u0``).
        n_fine: fine-grid size for F (default: chosen from nu, t and X, see code).

    Returns:
        ``[T, E]`` float64.
    """
    u, _ = _check_field("u0", np.asarray(u0), 1)
    u = u[0]
    nu = _check_positive("nu", nu)
    t = _check_t_save(t_save)
    nu_eff = nu / math.pi
    n_x = u.size
    shift = 0.5 / n_x  # cell-centre offset of the input grid
    xe = cell_centres(n_x) if x_eval is None else np.asarray(x_eval, dtype=np.float64).ravel()

    u_hat = np.fft.rfft(u)
    mean = u_hat[0].real / n_x
    if n_x % 2 == 0:
        u_hat[-1] *= 0.5  # split the Nyquist mode symmetrically so the interpolant is real & minimal
    kk = np.arange(u_hat.size, dtype=np.float64)
    max_slope = float(np.max(np.fft.irfft(2j * np.pi * kk * u_hat, n=4 * n_x) * (4.0)))  # max u0' (fine)

    t_pos = t[t > 0]
    if n_fine is None:
        # Resolve (i) F itself (>= 8 X points) and (ii) the narrowest integrand: near a stationary point
        # the weight has width sigma = sqrt(2 nu' t / (1 + t max u0')); 6 points per sigma makes the
        # trapezoid error ~exp(-2 pi^2 36), i.e. nil.
        n_fine = 8 * n_x
        if t_pos.size and method == "quadrature":
            tm = float(t_pos[0])
            sigma = math.sqrt(2.0 * nu_eff * tm / (1.0 + tm * max(max_slope, 0.0)))
            n_fine = max(n_fine, 2 * math.ceil(3.0 / sigma))
            if n_fine > 2**21:
                raise ValueError(
                    f"t_save[1:] starts too close to 0 for the quadrature (needs n_fine={n_fine}); "
                    "evaluate at later times"
                )
    n_fine = int(n_fine)
    if n_fine < n_x or (method == "spectral" and n_fine % n_x):
        raise ValueError(f"n_fine must be >= len(u0) = {n_x} (a multiple of it for 'spectral'), got {n_fine}")

    # F = int (u0 - c) dx on the fine grid y_j = shift + j / n_fine (same offset as the input grid, so
    # the zero-padded inverse FFT evaluates the interpolant's antiderivative there directly).
    f_hat = np.zeros(n_fine // 2 + 1, dtype=np.complex128)
    f_hat[1 : u_hat.size] = u_hat[1:] / (2j * np.pi * kk[1:])
    f_fine = np.fft.irfft(f_hat, n=n_fine) * (n_fine / n_x)
    y = shift + np.arange(n_fine) / n_fine
    g = (f_fine - f_fine.min()) / (2.0 * nu_eff)  # -log(phi0), shifted so phi0 <= 1

    out = np.empty((t.size, xe.size), dtype=np.float64)
    if method == "spectral":
        if x_eval is not None:
            raise ValueError("method='spectral' evaluates on the cell centres of u0 only; pass x_eval=None")
        if g.max() > 600.0:
            raise ValueError(
                f"method='spectral' is ill-conditioned here (phi0 spans exp({g.max():.0f})); use 'quadrature'"
            )
        phi0_hat = np.fft.rfft(np.exp(-g))
        kf = 2.0 * np.pi * np.arange(phi0_hat.size)
        step = n_fine // n_x
        for j, tj in enumerate(t):
            # Heat-equation decay, then the Galilean shift x -> x - c t as a phase factor.
            ph = phi0_hat * np.exp(-nu_eff * kf**2 * tj - 1j * kf * mean * tj)
            phi = np.fft.irfft(ph, n=n_fine)[::step]
            phi_x = np.fft.irfft(1j * kf * ph, n=n_fine)[::step]
            out[j] = mean - 2.0 * nu_eff * phi_x / phi
        return out
    if method != "quadrature":
        raise ValueError(f"method must be 'quadrature' or 'spectral', got {method!r}")

    g_range = float(g.max())
    for j, tj in enumerate(t):
        if tj == 0.0:
            # The interpolant itself (exact at t = 0; the kernel degenerates there).
            xi = np.mod(xe - shift, 1.0)
            out[j] = _eval_trig(u_hat, n_x, xi)
            continue
        four_nu_t = 4.0 * nu_eff * tj
        # Images needed so that every neglected weight is < e^-40 of the largest one.
        reach = math.sqrt(four_nu_t * (g_range + 40.0))
        images = np.arange(-math.ceil(reach) - 1, math.ceil(reach) + 2, dtype=np.float64)
        yy = (y[:, None] + images[None, :]).ravel()  # [n_fine * n_img]
        gg = np.tile(g[:, None], (1, images.size)).ravel()
        xi_all = np.mod(xe - mean * tj, 1.0)  # Galilean shift, then back into [0, 1)
        # Chunk the evaluation points so the [chunk, n_fine * n_img] work array stays ~32 MB.
        chunk = max(1, 4_000_000 // yy.size)
        for s in range(0, xi_all.size, chunk):
            xi = xi_all[s : s + chunk, None]
            d = xi - yy[None, :]
            lw = -(d * d) / four_nu_t - gg[None, :]
            w = np.exp(lw - lw.max(axis=1, keepdims=True))
            out[j, s : s + chunk] = mean + np.sum(w * d, axis=1) / (tj * np.sum(w, axis=1))
    return out


def _eval_trig(u_hat: np.ndarray, n_x: int, xi: np.ndarray) -> np.ndarray:
    """Evaluate the real trig interpolant with rfft coefficients ``u_hat`` (Nyquist pre-halved) at ``xi``."""
    k = np.arange(u_hat.size, dtype=np.float64)
    ph = np.exp(2j * np.pi * np.outer(xi, k))
    coef = u_hat.copy()
    coef[1:] *= 2.0
    return (ph @ coef).real / n_x


# --------------------------------------------------------------------------------------------------
# 1D advection (exact)
# --------------------------------------------------------------------------------------------------
def solve_advection(
    u0: np.ndarray,
    beta: float,
    t_save: np.ndarray,
    *,
    dtype: np.dtype | type = np.float64,
) -> np.ndarray:
    """Exact solution ``u(x, t) = u0(x - beta t)`` of ``u_t + beta u_x = 0`` on periodic [0, 1).

    The shift is a Fourier phase factor ``exp(-2 pi i k beta t)``, exact to round-off for
    band-limited data (no content at the Nyquist mode, whose sine part the grid cannot hold).

    Args:
        u0: ``[B, X]`` (or ``[X]``) on a uniform periodic grid.
        beta: advection speed (any finite real, may be 0 or negative).
        t_save: ``[T]`` output times (>= 0, strictly increasing).

    Returns:
        ``[B, T, X]`` (``[T, X]`` for 1D input) in ``dtype``.
    """
    u, batched = _check_field("u0", u0, 1)
    beta = float(beta)
    if not math.isfinite(beta):
        raise ValueError(f"beta must be finite, got {beta!r}")
    t = _check_t_save(t_save)
    n_x = u.shape[-1]
    u_hat = sfft.rfft(u, axis=-1)  # [B, K]
    k = np.arange(u_hat.shape[-1], dtype=np.float64)
    phase = np.exp(-2j * np.pi * beta * t[:, None] * k[None, :])  # [T, K]
    out = sfft.irfft(u_hat[:, None, :] * phase[None], n=n_x, axis=-1, workers=_FFT_WORKERS).astype(dtype)
    if t[0] == 0.0:
        out[:, 0] = u  # bit-exact initial frame
    return out if batched else out[0]


# --------------------------------------------------------------------------------------------------
# 2D incompressible Navier-Stokes (vorticity form)
# --------------------------------------------------------------------------------------------------
def _wavenumbers_2d(n_x: int, n_y: int) -> tuple[np.ndarray, np.ndarray]:
    """Angular wavenumbers shaped for rfft2 over axes (-2, -1): ``kx [X, 1]``, ``ky [1, Y//2+1]``."""
    kx = 2.0 * np.pi * np.fft.fftfreq(n_x, d=1.0 / n_x)[:, None]
    ky = 2.0 * np.pi * np.arange(n_y // 2 + 1, dtype=np.float64)[None, :]
    return kx, ky


def _dealias_mask_2d(n_x: int, n_y: int) -> np.ndarray:
    """2/3-rule mask ``[X, Y//2+1]``: keep ``|k_x| < X/3`` and ``k_y < Y/3`` (Nyquist always dropped)."""
    ix = np.abs(np.fft.fftfreq(n_x, d=1.0 / n_x))[:, None]
    iy = np.arange(n_y // 2 + 1, dtype=np.float64)[None, :]
    return (ix < n_x / 3.0) & (iy < n_y / 3.0)


def vorticity_initial_conditions(
    rng: np.random.Generator,
    n: int,
    n_x: int,
    n_y: int | None = None,
    *,
    alpha: float = 2.5,
    tau: float = 7.0,
    rms: float = 1.0,
) -> np.ndarray:
    """Smooth random periodic vorticity fields, shape ``[n, X, Y]`` (float64), zero mean.

    Gaussian random field with amplitude spectrum ``(4 pi^2 |k|^2 + tau^2)^(-alpha/2)`` (|k| in
    cycles per unit length), i.e. the covariance ``(-Lap + tau^2)^(-alpha)`` used for the FNO
    Navier-Stokes data; modes beyond the 2/3 cut-off are zeroed so the field is exactly what the
    dealiased solver represents. Each sample is then scaled to spatial RMS ``rms``.
    """
    n = int(n)
    n_y = n_x if n_y is None else int(n_y)
    if n < 0 or n_x < 4 or n_y < 4:
        raise ValueError(f"need n >= 0 and grids >= 4, got n={n}, n_x={n_x}, n_y={n_y}")
    _check_positive("rms", rms)
    kx, ky = _wavenumbers_2d(n_x, n_y)
    spec = (kx**2 + ky**2 + tau**2) ** (-alpha / 2.0) * _dealias_mask_2d(n_x, n_y)
    spec[0, 0] = 0.0  # zero mean: a periodic velocity field has zero net vorticity
    noise = rng.standard_normal((n, n_x, n_y))
    w = sfft.irfft2(sfft.rfft2(noise, axes=(-2, -1)) * spec, s=(n_x, n_y), axes=(-2, -1))
    w_rms = np.sqrt(np.mean(w**2, axis=(-2, -1), keepdims=True))
    return w * (rms / np.maximum(w_rms, 1e-300))


def taylor_green_vorticity(n_x: int, n_y: int | None = None, k: int = 1, amplitude: float = 1.0) -> np.ndarray:
    """Taylor-Green vortex ``w = amplitude * 2 (2 pi k)^2 sin(2 pi k x) sin(2 pi k y)``, shape ``[X, Y]``.

    Its stream function ``psi = w / (2 (2 pi k)^2)`` is proportional to ``w``, so ``u . grad w = 0`` and
    the unforced solution is exactly ``w(t) = w(0) exp(-2 nu (2 pi k)^2 t)`` (used by the tests).
    """
    n_y = n_x if n_y is None else n_y
    x = cell_centres(n_x)[:, None]
    y = cell_centres(n_y)[None, :]
    kk = 2.0 * np.pi * k
    return amplitude * 2.0 * kk**2 * np.sin(kk * x) * np.sin(kk * y)


def solve_vorticity2d(
    w0: np.ndarray,
    nu: float,
    t_save: np.ndarray,
    dt: float | None = None,
    *,
    forcing: np.ndarray | None = None,
    cfl: float = 0.5,
    dtype: np.dtype | type = np.float64,
) -> np.ndarray:
    """2D incompressible Navier-Stokes in vorticity form on periodic [0, 1)^2.

    ``w_t + u w_x + v w_y = nu Lap w + f`` with ``Lap psi = -w``, ``u = psi_y``, ``v = -psi_x``.
    Pseudo-spectral (rfft2 over the last two axes, 2/3-rule dealiasing), ETDRK4 in time with the
    viscous term exact. The advection term is evaluated in conservative form
    ``div(u w)`` (equal since div u = 0), which makes the mean-vorticity tendency exactly zero.

    Args:
        w0: ``[B, X, Y]`` (or ``[X, Y]``) initial vorticity.
        nu: kinematic viscosity (> 0), no 1/pi factor here.
        t_save: ``[T]`` output times (>= 0, strictly increasing).
        dt: maximum step. ``None``: chosen per save interval from the current velocity,
            ``dt = cfl / max_b(|u|_max k_cx + |v|_max k_cy)`` with ``k_c`` the dealiased cut-off
            (velocity is not bounded a priori in 2D, unlike Burgers' maximum principle), and never
            more than ``0.5 / max|w|`` (the vortex turnover time). Per-interval steps keep a run
            deterministic (no step rejection) while adapting to decaying or spinning-up flows.
        forcing: optional time-independent forcing ``f`` of shape ``[X, Y]`` (e.g. Kolmogorov
            ``0.1 (sin 2 pi (x+y) + cos 2 pi (x+y))``), dealiased like the nonlinear term.
        cfl: safety factor for the automatic step.
        dtype: storage type of the result.

    Returns:
        ``[B, T, X, Y]`` (``[T, X, Y]`` for unbatched input) in ``dtype``.
    """
    w, batched = _check_field("w0", w0, 2)
    nu = _check_positive("nu", nu)
    t = _check_t_save(t_save)
    if dt is not None:
        dt = _check_positive("dt", dt)
    _check_positive("cfl", cfl)
    n_b, n_x, n_y = w.shape
    kx, ky = _wavenumbers_2d(n_x, n_y)
    k2 = kx**2 + ky**2
    inv_k2 = np.where(k2 > 0.0, 1.0 / np.where(k2 > 0.0, k2, 1.0), 0.0)  # psi_hat = w_hat / |k|^2
    keep = _dealias_mask_2d(n_x, n_y)
    lin = -nu * k2
    coeffs = _CoefficientCache(lin)
    f_hat: np.ndarray | float = 0.0
    if forcing is not None:
        f_arr = np.asarray(forcing, dtype=np.float64)
        if f_arr.shape != (n_x, n_y) or not np.all(np.isfinite(f_arr)):
            raise ValueError(f"forcing must be a finite array of shape {(n_x, n_y)}, got {f_arr.shape}")
        f_hat = sfft.rfft2(f_arr) * keep
    # Velocity from vorticity: u_hat = i ky psi_hat, v_hat = -i kx psi_hat (masked).
    u_fac = np.where(keep, 1j * ky * inv_k2, 0.0)
    v_fac = np.where(keep, -1j * kx * inv_k2, 0.0)
    dx_fac = np.where(keep, -1j * kx, 0.0)  # -(d/dx), masked output
    dy_fac = np.where(keep, -1j * ky, 0.0)
    k_cx = 2.0 * np.pi * (n_x / 3.0)
    k_cy = 2.0 * np.pi * (n_y / 3.0)
    axes = (-2, -1)

    def velocity(v_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        uv = sfft.irfft2(np.stack([u_fac * v_hat, v_fac * v_hat]), s=(n_x, n_y), axes=axes, workers=1)
        return uv[0], uv[1]

    def nonlinear(v_hat: np.ndarray) -> np.ndarray:
        fields = sfft.irfft2(
            np.stack([u_fac * v_hat, v_fac * v_hat, keep * v_hat]), s=(n_x, n_y), axes=axes, workers=1
        )
        flux = sfft.rfft2(fields[:2] * fields[2], axes=axes, workers=1)  # (u w, v w)
        return dx_fac * flux[0] + dy_fac * flux[1] + f_hat

    out = np.empty((n_b, t.size, n_x, n_y), dtype=dtype)
    for start in range(0, n_b, _VORTICITY_CHUNK):
        sl = slice(start, start + _VORTICITY_CHUNK)
        v = sfft.rfft2(w[sl], axes=axes, workers=1)
        t_now = 0.0
        for j, t_next in enumerate(t):
            if t_next == 0.0:
                out[sl, j] = w[sl]
                continue
            interval = t_next - t_now
            if dt is None:
                uu, vv = velocity(v)
                rate = float(np.max(np.max(np.abs(uu), axis=axes) * k_cx + np.max(np.abs(vv), axis=axes) * k_cy))
                w_max = float(np.max(np.abs(sfft.irfft2(v, s=(n_x, n_y), axes=axes))))
                dt_max = min(cfl / max(rate, 1e-300), 0.5 / max(w_max, 1e-300), interval)
            else:
                dt_max = dt
            n_steps = _substeps(interval, dt_max)
            v = _etdrk4_steps(v, coeffs.get(interval / n_steps), nonlinear, n_steps)
            out[sl, j] = sfft.irfft2(v, s=(n_x, n_y), axes=axes, workers=1)
            t_now = float(t_next)
    return out if batched else out[0]
