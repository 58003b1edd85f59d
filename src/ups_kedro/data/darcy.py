"""Steady 2D Darcy flow: a reference solver and a PDEBench-like data generator (numpy/scipy only).

Problem (PDEBench's ``2D_DarcyFlow_beta*.hdf5``)::

    -div(a(x) grad u(x)) = f(x)   on the unit square [0, 1]^2,   u = 0 on the boundary,

with a piecewise-constant coefficient ``a`` (PDEBench calls it ``nu``) and a constant forcing
``f = beta``.  The learning task maps ``nu`` (and ``beta``) to the steady state ``u``.

Discretisation: cell-centred finite volumes on the PDEBench grid ``x_i = (i + 0.5) / X``
(axis 0 is x, axis 1 is y, unknowns flattened row-major: ``k = i * Y + j``).

* The flux through an interior face uses the *harmonic* mean of the two cell coefficients,
  ``2 a_P a_N / (a_P + a_N)``: it is the exact effective conductivity of two half-cells in
  series, so the scheme stays accurate (and conservative) across the jumps of a binary
  coefficient, where the arithmetic mean would overestimate the flux through the low side.
* A boundary face is half a cell from the cell centre, with ``u = 0`` on the face, so its
  transmissibility is ``2 a_P / h^2`` (the cell's own coefficient: there is no neighbour).
* Dividing every cell balance by the cell area gives ``A u = f`` with ``f`` sampled at the
  cell centres.  ``A`` is symmetric (each face couples its two cells with one weight),
  irreducibly diagonally dominant with strictly dominant boundary rows, hence symmetric
  positive definite, and an M-matrix (discrete maximum principle: ``f >= 0 => u >= 0``).

The error is second order in ``h`` for smooth ``a`` (see ``tests/data/test_darcy.py``); at a
coefficient jump the solution's gradient is discontinuous and the order drops, as for any
scheme that does not align faces with the jumps (here they are aligned by construction: the
coefficient is constant per cell).

Coefficients (:func:`darcy_coefficients`):

* ``"pdebench"`` (default): PDEBench's own recipe
  (``data_gen/data_gen_NLE/ReactionDiffusionEq/reaction_diffusion_2D_multi_solution_Hydra.py``):
  a sum of 5 isotropic Gaussian bumps ``exp(-r^2 / s)`` with uniform random centres and
  ``s ~ U(0, 0.5)``, thresholded at its mean: ``high`` (PDEBench: 1) above, ``high / contrast``
  (PDEBench: 0.1, contrast 10) below.  PDEBench thresholds at the mean over the *whole batch*;
  here it is the per-sample mean, so a sample does not depend on which batch it was drawn in.
* ``"grf"``: the FNO paper's field, a Gaussian random field with covariance
  ``(-Laplacian + tau^2)^(-alpha)`` (Neumann cosine basis) thresholded at 0 (FNO: 12 / 3,
  i.e. ``high=12, contrast=4``).

Cost: one sparse LU per sample (SuperLU with a minimum-degree ordering on ``A + A^T``, which
suits the symmetric 5-point pattern); ~5-10 ms per 64x64 sample on one core.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft
import scipy.sparse as sp
import scipy.sparse.linalg as spla

from ups_kedro.data.solvers import cell_centres

__all__ = [
    "COEFFICIENT_KINDS",
    "assemble_darcy_matrix",
    "darcy_coefficients",
    "darcy_grid",
    "generate_darcy",
    "solve_darcy",
    "solve_darcy_batch",
]

COEFFICIENT_KINDS: tuple[str, ...] = ("pdebench", "grf")

# PDEBench's bump recipe: 5 bumps per sample, width parameter s ~ U(0, 0.5 * L) with L = 1.
_N_BUMPS = 5
_BUMP_WIDTH_MAX = 0.5
# A bump with s -> 0 would divide by ~0; such a bump is invisible on any grid anyway.
_BUMP_WIDTH_MIN = 1e-6


# ------------------------------------------------------------------------------------------------
# validation helpers
# ------------------------------------------------------------------------------------------------
def _check_coefficient(a: np.ndarray, name: str = "a") -> np.ndarray:
    """``a [X, Y]`` as float64; raise unless 2D, at least 2x2, finite and strictly positive."""
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 2:
        raise ValueError(f"{name} must have shape [X, Y], got {arr.shape}")
    if min(arr.shape) < 2:
        raise ValueError(f"{name} needs at least 2 cells per axis, got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{name} contains non-finite values (NaN or inf)")
    if not np.all(arr > 0.0):
        raise ValueError(f"{name} must be strictly positive (ellipticity), min is {arr.min()!r}")
    return arr


def _check_forcing(f: float | np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Forcing as a float64 ``[X, Y]`` array (a scalar is broadcast); raise on bad shape/NaN."""
    arr = np.asarray(f, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(shape, float(arr))
    if arr.shape != shape:
        raise ValueError(f"f must be a scalar or have shape {shape} (like a), got {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise ValueError("f contains non-finite values (NaN or inf)")
    return arr


def _check_grid_size(n: int, name: str) -> int:
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
        raise ValueError(f"{name} must be an integer >= 2, got {n!r}")
    return int(n)


def darcy_grid(n_x: int, n_y: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres ``(x [X], y [Y])`` of the PDEBench grid on ``[0, 1]^2`` (float64)."""
    n_y = n_x if n_y is None else n_y
    return cell_centres(n_x), cell_centres(n_y)


# ------------------------------------------------------------------------------------------------
# finite-volume operator
# ------------------------------------------------------------------------------------------------
def _harmonic_mean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Element-wise ``2ab / (a + b)`` (both > 0, so the denominator is never 0)."""
    return 2.0 * a * b / (a + b)


def assemble_darcy_matrix(a: np.ndarray) -> sp.csc_array:
    """The finite-volume matrix ``A`` of ``-div(a grad u)`` with ``u = 0`` on the boundary.

    Args:
        a: coefficient ``[X, Y]``, finite and > 0, one value per cell.

    Returns:
        ``A`` as a CSC array ``[X*Y, X*Y]`` (row-major unknowns ``k = i*Y + j``), symmetric
        positive definite; ``A u = f`` approximates the PDE at the cell centres.
    """
    a = _check_coefficient(a)
    n_x, n_y = a.shape
    inv_hx2, inv_hy2 = float(n_x) ** 2, float(n_y) ** 2  # 1/h^2 with h = 1/n

    # Transmissibilities (already divided by the cell area): interior faces, harmonic mean.
    tx = _harmonic_mean(a[:-1, :], a[1:, :]) * inv_hx2  # [X-1, Y], face between i and i+1
    ty = _harmonic_mean(a[:, :-1], a[:, 1:]) * inv_hy2  # [X, Y-1], face between j and j+1

    # Diagonal: every face of the cell, interior ones from both sides, plus the boundary faces
    # (distance h/2 to u = 0 on the wall, hence the factor 2).
    diag = np.zeros_like(a)
    diag[:-1, :] += tx
    diag[1:, :] += tx
    diag[:, :-1] += ty
    diag[:, 1:] += ty
    diag[0, :] += 2.0 * a[0, :] * inv_hx2
    diag[-1, :] += 2.0 * a[-1, :] * inv_hx2
    diag[:, 0] += 2.0 * a[:, 0] * inv_hy2
    diag[:, -1] += 2.0 * a[:, -1] * inv_hy2

    # Off-diagonals.  x-neighbours are Y apart in the flattened index and tx flattens exactly
    # onto the first X*Y - Y unknowns.  y-neighbours are 1 apart; the entry after the last cell
    # of each row (j = Y-1) would couple to the next row, so it is 0.
    off_x = -tx.reshape(-1)  # [(X-1)*Y]
    off_y = np.zeros((n_x, n_y))
    off_y[:, :-1] = -ty
    off_y = off_y.reshape(-1)[:-1]  # [X*Y - 1]
    return sp.diags_array(
        [diag.reshape(-1), off_y, off_y, off_x, off_x],
        offsets=[0, 1, -1, n_y, -n_y],
        shape=(n_x * n_y, n_x * n_y),
        format="csc",
    )


def solve_darcy(a: np.ndarray, f: float | np.ndarray = 1.0) -> np.ndarray:
    """Solve ``-div(a grad u) = f`` on ``[0, 1]^2`` with ``u = 0`` on the boundary.

    Args:
        a: coefficient ``[X, Y]`` > 0 at the cell centres (PDEBench's ``nu``).
        f: forcing, a scalar (PDEBench's ``beta``) or ``[X, Y]`` at the cell centres.

    Returns:
        ``u [X, Y]`` float64 at the cell centres.
    """
    a = _check_coefficient(a)
    rhs = _check_forcing(f, a.shape)
    matrix = assemble_darcy_matrix(a)
    # MMD on A^T + A: the symmetric-pattern ordering SuperLU offers; on 5-point matrices it
    # fills in (and runs) markedly less than the default COLAMD, which ignores the symmetry.
    u = spla.spsolve(matrix, rhs.reshape(-1), permc_spec="MMD_AT_PLUS_A")
    return np.asarray(u, dtype=np.float64).reshape(a.shape)


def solve_darcy_batch(a: np.ndarray, f: float | np.ndarray = 1.0) -> np.ndarray:
    """:func:`solve_darcy` for a batch: ``a [n, X, Y]``, ``f`` scalar/``[X, Y]``/``[n, X, Y]``.

    Returns:
        ``u [n, X, Y]`` float64.  A loop over samples, not cells: each sample is one sparse
        factorisation whose pattern is fixed but whose values differ.
    """
    arr = np.asarray(a, dtype=np.float64)
    if arr.ndim != 3:
        raise ValueError(f"a must have shape [n, X, Y], got {arr.shape}")
    f_arr = np.asarray(f, dtype=np.float64)
    if f_arr.ndim == 3 and f_arr.shape[0] != arr.shape[0]:
        raise ValueError(f"f has {f_arr.shape[0]} samples but a has {arr.shape[0]}")
    out = np.empty_like(arr)
    for k in range(arr.shape[0]):
        out[k] = solve_darcy(arr[k], f_arr[k] if f_arr.ndim == 3 else f_arr)
    return out


# ------------------------------------------------------------------------------------------------
# random coefficient fields
# ------------------------------------------------------------------------------------------------
def _bump_fields(rng: np.random.Generator, n: int, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """PDEBench's smooth field: a sum of 5 Gaussian bumps per sample, ``[n, X, Y]``."""
    cx = rng.uniform(0.0, 1.0, size=(n, _N_BUMPS))
    cy = rng.uniform(0.0, 1.0, size=(n, _N_BUMPS))
    width = np.maximum(_BUMP_WIDTH_MAX * rng.uniform(0.0, 1.0, size=(n, _N_BUMPS)), _BUMP_WIDTH_MIN)
    field = np.zeros((n, x.size, y.size))
    # Loop over the 5 bumps (not cells/samples): keeps memory at one [n, X, Y] array.
    for b in range(_N_BUMPS):
        dx2 = (x[None, :] - cx[:, b, None]) ** 2  # [n, X]
        dy2 = (y[None, :] - cy[:, b, None]) ** 2  # [n, Y]
        field += np.exp(-(dx2[:, :, None] + dy2[:, None, :]) / width[:, b, None, None])
    return field


def _grf_fields(
    rng: np.random.Generator, n: int, n_x: int, n_y: int, alpha: float, tau: float
) -> np.ndarray:
    """Gaussian random field ``N(0, (-Laplacian + tau^2)^(-alpha))``, Neumann BCs, ``[n, X, Y]``.

    Karhunen-Loeve in the cosine basis ``cos(pi k x)``, which the cell-centred inverse DCT-II
    evaluates exactly at ``x_i = (i + 0.5) / X``.  The mean mode is dropped (zero-mean field),
    as in the FNO generator, so thresholding at 0 splits the domain into two phases.  Overall
    scale factors are irrelevant: only the sign is used.
    """
    kx = np.arange(n_x)[:, None]
    ky = np.arange(n_y)[None, :]
    sqrt_eig = (math.pi**2 * (kx**2 + ky**2) + tau**2) ** (-alpha / 2.0)  # [X, Y]
    sqrt_eig[0, 0] = 0.0
    xi = rng.standard_normal((n, n_x, n_y))
    return sfft.idctn(xi * sqrt_eig, type=2, axes=(1, 2), norm="ortho")


def darcy_coefficients(
    rng: np.random.Generator,
    n: int,
    n_x: int,
    n_y: int | None = None,
    *,
    kind: str = "pdebench",
    high: float = 1.0,
    contrast: float = 10.0,
    alpha: float = 2.0,
    tau: float = 3.0,
) -> np.ndarray:
    """Random two-valued coefficient fields (``high`` and ``high / contrast``).

    Args:
        rng: numpy Generator (the only source of randomness).
        n: number of fields.
        n_x, n_y: grid (``n_y`` defaults to ``n_x``).
        kind: ``"pdebench"`` (thresholded sum of Gaussian bumps, PDEBench's recipe) or
            ``"grf"`` (thresholded Gaussian random field, the FNO paper's recipe).
        high: value of the high-conductivity phase (PDEBench 1.0; FNO 12).
        contrast: ``high / low`` ratio, >= 1 (PDEBench 10; FNO 4).
        alpha, tau: GRF smoothness and inverse length scale (``kind="grf"`` only).

    Returns:
        ``nu [n, X, Y]`` float64 with values in ``{high / contrast, high}``.
    """
    if kind not in COEFFICIENT_KINDS:
        raise ValueError(f"kind must be one of {COEFFICIENT_KINDS}, got {kind!r}")
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    n_x = _check_grid_size(n_x, "n_x")
    n_y = n_x if n_y is None else _check_grid_size(n_y, "n_y")
    if not (math.isfinite(high) and high > 0.0):
        raise ValueError(f"high must be a finite positive number, got {high!r}")
    if not (math.isfinite(contrast) and contrast >= 1.0):
        raise ValueError(f"contrast must be a finite number >= 1, got {contrast!r}")
    if kind == "pdebench":
        x, y = darcy_grid(n_x, n_y)
        field = _bump_fields(rng, int(n), x, y)
        threshold = field.mean(axis=(1, 2), keepdims=True)
    else:
        if not (alpha > 0.0 and tau > 0.0):
            raise ValueError(f"alpha and tau must be positive, got alpha={alpha!r}, tau={tau!r}")
        field = _grf_fields(rng, int(n), n_x, n_y, alpha, tau)
        threshold = 0.0
    return np.where(field > threshold, high, high / contrast)


def generate_darcy(
    rng: np.random.Generator,
    n: int,
    n_x: int,
    beta: float = 1.0,
    n_y: int | None = None,
    *,
    kind: str = "pdebench",
    high: float = 1.0,
    contrast: float = 10.0,
    dtype: np.dtype | type = np.float32,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` coefficient fields and solve Darcy flow with constant forcing ``beta``.

    Returns:
        ``(solution [n, 1, X, Y], nu [n, X, Y])`` in ``dtype`` (computed in float64), the
        arrays :func:`ups_kedro.data.pdebench.write_darcy_file` takes (with
        ``attrs={"beta": beta}`` and coordinates from :func:`darcy_grid`).
    """
    if not math.isfinite(beta):
        raise ValueError(f"beta must be finite, got {beta!r}")
    nu = darcy_coefficients(rng, n, n_x, n_y, kind=kind, high=high, contrast=contrast)
    u = solve_darcy_batch(nu, float(beta))
    return u[:, None].astype(dtype), nu.astype(dtype)
