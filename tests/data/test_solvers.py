"""Tests for the built-in PDE solvers against exact solutions and invariants.

Exact references: Cole-Hopf for Burgers, the shifted profile for advection, and the Taylor-Green
vortex (an eigenmode for which the nonlinear term vanishes) for 2D Navier-Stokes.
"""

from __future__ import annotations

import numpy as np
import pytest

from ups_kedro.data.solvers import (
    advection_initial_conditions,
    burgers_initial_conditions,
    cell_centres,
    solve_advection,
    solve_burgers,
    solve_vorticity2d,
    vorticity_initial_conditions,
)
from ups_kedro.data.solvers.exact import burgers_exact_cole_hopf, taylor_green_vorticity


def rel_l2(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Relative L2 error over the last axis (per frame)."""
    return np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)


def smooth_ic(x: np.ndarray) -> np.ndarray:
    """Zero-mean two-mode initial condition (max|u| ~ 1.3)."""
    return np.sin(2 * np.pi * x) + 0.5 * np.cos(4 * np.pi * x + 0.3)


# ------------------------------------------------------------------------------------------------
# Burgers vs Cole-Hopf
# ------------------------------------------------------------------------------------------------
def test_burgers_matches_cole_hopf_nu_0p1() -> None:
    x = cell_centres(256)
    u0 = smooth_ic(x)
    t = np.array([0.0, 0.25, 0.5, 1.0])
    exact = burgers_exact_cole_hopf(u0, 0.1, t)
    num = solve_burgers(u0, 0.1, t)  # automatic step
    np.testing.assert_array_equal(num[0], u0)  # frame 0 is the input itself, bit for bit
    err = rel_l2(num, exact)
    assert err.max() <= 1e-6, err


def test_burgers_matches_cole_hopf_with_mean_galilean_shift() -> None:
    # Nonzero mean: the exact solution uses u = c + v(x - c t, t); the solver just advects the mean.
    x = cell_centres(256)
    u0 = smooth_ic(x) + 0.3
    t = np.array([0.0, 0.3, 0.7])
    exact = burgers_exact_cole_hopf(u0, 0.1, t)
    num = solve_burgers(u0, 0.1, t)
    assert rel_l2(num, exact).max() <= 1e-6


def test_burgers_matches_cole_hopf_nu_0p01_steep_front() -> None:
    # nu = 0.01 (nu' = 3.2e-3): a viscous shock of width ~0.006 forms by t ~ 0.16. The log-domain
    # quadrature keeps Cole-Hopf well conditioned (phi0 spans e^50 here, beyond the spectral form).
    x = cell_centres(1024)
    u0 = np.sin(2 * np.pi * x)
    t = np.array([0.0, 0.5, 1.0])
    exact = burgers_exact_cole_hopf(u0, 0.01, t)
    assert rel_l2(solve_burgers(u0, 0.01, t), exact).max() <= 1e-6  # default step (~2e-8 measured)
    # A small fixed step shows the discretisation itself converges to ~1e-11.
    assert rel_l2(solve_burgers(u0, 0.01, t, dt=2.5e-4), exact).max() <= 1e-9


def test_cole_hopf_spectral_and_quadrature_agree() -> None:
    x = cell_centres(128)
    u0 = smooth_ic(x)
    t = np.array([0.0, 0.1, 0.5])
    for mean in (0.0, 0.4):  # also checks the Galilean shift in both forms
        quad = burgers_exact_cole_hopf(u0 + mean, 0.2, t, method="quadrature")
        spec = burgers_exact_cole_hopf(u0 + mean, 0.2, t, method="spectral")
        np.testing.assert_allclose(quad, spec, rtol=0, atol=1e-10)
        np.testing.assert_allclose(quad[0], u0 + mean, atol=1e-13)  # t = 0: the interpolant
    # Off-grid evaluation points: the interpolant of a pure sine is the sine itself.
    xe = np.array([0.0, 0.123, 0.5, 0.999])
    np.testing.assert_allclose(
        burgers_exact_cole_hopf(np.sin(2 * np.pi * x), 0.2, np.array([0.0]), x_eval=xe)[0],
        np.sin(2 * np.pi * xe), atol=1e-13,
    )


# ------------------------------------------------------------------------------------------------
# Burgers invariants, shapes and batching
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def burgers_batch() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    x = cell_centres(1024)
    u0 = burgers_initial_conditions(rng, 12, x)
    t = np.linspace(0.0, 2.0, 41)
    return u0, t, solve_burgers(u0, 0.01, t)


def test_burgers_conserves_mean_and_dissipates_energy(burgers_batch) -> None:
    u0, _, u = burgers_batch
    assert u.shape == (12, 41, 1024) and u.dtype == np.float64
    np.testing.assert_array_equal(u[:, 0], u0)
    mean = u.mean(axis=-1)  # [B, T]
    assert np.abs(mean - mean[:, :1]).max() <= 1e-12
    energy = 0.5 * np.mean(u**2, axis=-1)  # 1/2 int u^2 dx on [0, 1)
    assert np.all(np.diff(energy, axis=1) <= 1e-14 * energy[:, :1])
    assert np.all(energy[:, -1] < energy[:, 0])  # it actually dissipates (shocks)


def test_burgers_trajectory_independent_of_batch(burgers_batch) -> None:
    u0, t, u = burgers_batch
    single = solve_burgers(u0[3], 0.01, t)  # 1D input -> [T, X]
    assert single.shape == (41, 1024)
    np.testing.assert_allclose(single, u[3], rtol=0, atol=1e-13)
    threaded = solve_burgers(u0[:4], 0.01, t[:6], n_threads=2)
    np.testing.assert_allclose(threaded, u[:4, :6], rtol=0, atol=1e-13)


def test_burgers_dtype_and_fixed_step_consistency(burgers_batch) -> None:
    u0, t, u = burgers_batch
    u32 = solve_burgers(u0[:2], 0.01, t, dt=2.5e-4, dtype=np.float32)
    assert u32.dtype == np.float32
    # Automatic step vs a small fixed step (both ~1e-6 or better).
    assert rel_l2(u32.astype(np.float64), u[:2]).max() <= 1e-5


def test_burgers_automatic_step_accurate_when_diffusion_dominates() -> None:
    # nu = 1: the Courant step would span several e-folds of decay; the change-rate bound keeps
    # the per-frame (nRMSE-style) error small while the field decays by ~1e-4 over 0.1.
    x = cell_centres(512)
    u0 = burgers_initial_conditions(np.random.default_rng(1), 16, x)
    t = np.linspace(0.0, 0.1, 11)
    ref = solve_burgers(u0, 1.0, t, dt=1e-4)
    assert rel_l2(solve_burgers(u0, 1.0, t), ref).max() <= 1e-5


def test_burgers_initial_conditions_recipe() -> None:
    x = cell_centres(256)
    a = burgers_initial_conditions(np.random.default_rng(0), 400, x)
    b = burgers_initial_conditions(np.random.default_rng(0), 400, x)
    np.testing.assert_array_equal(a, b)  # all randomness from the generator
    assert a.shape == (400, 256) and np.all(np.isfinite(a))
    assert np.abs(a).max() <= 2.0  # two waves with amplitudes <= 1
    # abs() samples are one-signed; roughly 10 % of them (binomial, so a loose window).
    one_signed = np.mean(np.all(a >= 0, axis=1) | np.all(a <= 0, axis=1))
    assert 0.03 < one_signed < 0.25
    adv = advection_initial_conditions(np.random.default_rng(0), 400, x)
    np.testing.assert_array_equal(adv, a)


# ------------------------------------------------------------------------------------------------
# Advection
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("beta", [0.1, 0.4, -1.0, 4.0])
def test_advection_is_exact_shift(beta: float) -> None:
    def profiles(x: np.ndarray) -> np.ndarray:
        two_pi_x = 2 * np.pi * x
        return np.stack([np.sin(3 * two_pi_x), np.cos(two_pi_x) + 0.5 * np.sin(7 * two_pi_x)])

    x = cell_centres(256)
    u0 = profiles(x)  # [2, X]
    t = np.linspace(0.0, 2.0, 11)
    exact = profiles(x[None, :] - beta * t[:, None])  # [2, T, X]
    u = solve_advection(u0, beta, t)
    assert u.shape == (2, 11, 256)
    np.testing.assert_allclose(u, exact, rtol=0, atol=1e-12)
    np.testing.assert_array_equal(u[:, 0], u0)


# ------------------------------------------------------------------------------------------------
# 2D vorticity
# ------------------------------------------------------------------------------------------------
def test_taylor_green_decays_exactly() -> None:
    nu, k = 1e-2, 2 * np.pi
    w0 = taylor_green_vorticity(64, amplitude=0.1)
    t = np.linspace(0.0, 5.0, 11)
    w = solve_vorticity2d(w0, nu, t)
    exact = w0[None] * np.exp(-2 * nu * k**2 * t)[:, None, None]
    err = rel_l2(w.reshape(len(t), -1), exact.reshape(len(t), -1))
    assert err.max() <= 1e-8, err


def test_kolmogorov_shear_is_steady_with_matching_forcing() -> None:
    # w = A sin(2 pi 4 y) is a shear flow (u . grad w = 0); forcing nu |k|^2 w balances viscosity.
    nu, n = 1e-3, 32
    y = cell_centres(n)[None, :]
    w0 = np.broadcast_to(np.sin(2 * np.pi * 4 * y), (n, n)).copy()
    forcing = nu * (2 * np.pi * 4) ** 2 * w0
    w = solve_vorticity2d(w0[None], nu, np.array([0.0, 1.0, 3.0]), forcing=forcing)
    np.testing.assert_allclose(w[0], np.broadcast_to(w0, (3, n, n)), atol=1e-12)


def test_vorticity_conserves_mean_and_dissipates_enstrophy() -> None:
    rng = np.random.default_rng(3)
    w0 = vorticity_initial_conditions(rng, 4, 32) + 0.7  # nonzero mean is carried unchanged
    t = np.linspace(0.0, 2.0, 11)
    w = solve_vorticity2d(w0, 1e-3, t)
    assert w.shape == (4, 11, 32, 32)
    mean = w.mean(axis=(-2, -1))
    assert np.abs(mean - 0.7).max() <= 1e-12
    enstrophy = np.mean((w - mean[..., None, None]) ** 2, axis=(-2, -1))
    assert np.all(np.diff(enstrophy, axis=1) <= 1e-12)
    # Trajectories do not depend on their batch-mates.
    np.testing.assert_allclose(solve_vorticity2d(w0[2], 1e-3, t), w[2], rtol=0, atol=1e-12)


def test_vorticity_initial_conditions() -> None:
    w = vorticity_initial_conditions(np.random.default_rng(0), 5, 64)
    assert w.shape == (5, 64, 64)
    np.testing.assert_allclose(w.mean(axis=(1, 2)), 0.0, atol=1e-14)
    np.testing.assert_allclose(np.sqrt(np.mean(w**2, axis=(1, 2))), 1.0, rtol=1e-12)
    spec = np.abs(np.fft.rfft2(w[0]))
    ky = np.arange(spec.shape[1])
    assert spec[:, ky >= 64 / 3].max() < 1e-10  # band-limited to the dealiased range


# ------------------------------------------------------------------------------------------------
# Input validation
# ------------------------------------------------------------------------------------------------
_X = cell_centres(32)
_U = np.sin(2 * np.pi * _X)
_T = np.array([0.0, 0.1])
_W = np.zeros((32, 32))


@pytest.mark.parametrize(
    ("call", "name"),
    [
        (lambda: solve_burgers(np.where(_X > 0.5, np.nan, _U), 0.1, _T), "u0"),
        (lambda: solve_burgers(np.where(_X > 0.5, np.inf, _U), 0.1, _T), "u0"),
        (lambda: solve_burgers(_U, 0.0, _T), "nu"),
        (lambda: solve_burgers(_U, -0.1, _T), "nu"),
        (lambda: solve_burgers(_U, float("nan"), _T), "nu"),
        (lambda: solve_burgers(_U, 0.1, np.array([0.0, 0.2, 0.1])), "t_save"),
        (lambda: solve_burgers(_U, 0.1, np.array([0.0, 0.1, 0.1])), "t_save"),
        (lambda: solve_burgers(_U, 0.1, np.array([-0.1, 0.1])), "t_save"),
        (lambda: solve_burgers(_U, 0.1, _T, dt=0.0), "dt"),
        (lambda: solve_burgers(_U[None, None], 0.1, _T), "u0"),
        (lambda: burgers_exact_cole_hopf(_U[None], 0.1, _T), "u0"),
        (lambda: burgers_exact_cole_hopf(_U, -1.0, _T), "nu"),
        (lambda: burgers_exact_cole_hopf(_U, 0.1, _T, method="fft"), "method"),
        (lambda: solve_advection(_U, float("inf"), _T), "beta"),
        (lambda: solve_advection(_U, 1.0, _T[::-1]), "t_save"),
        (lambda: solve_vorticity2d(_W + np.nan, 1e-3, _T), "w0"),
        (lambda: solve_vorticity2d(_W, 0.0, _T), "nu"),
        (lambda: solve_vorticity2d(_W, 1e-3, _T, forcing=np.zeros((16, 16))), "forcing"),
    ],
)
def test_bad_input_raises_value_error_naming_argument(call, name: str) -> None:
    with pytest.raises(ValueError, match=name):
        call()
