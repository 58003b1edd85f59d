"""Darcy-flow solver and generator: convergence, matrix structure, invariants, file round trip."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest

from ups_kedro.data.darcy import (
    assemble_darcy_matrix,
    darcy_coefficients,
    darcy_grid,
    generate_darcy,
    solve_darcy,
    solve_darcy_batch,
)
from ups_kedro.data.pdebench import open_pdebench, write_darcy_file

PI = np.pi


def _manufactured(n: int, solution: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(a, f, u)`` at the cell centres with ``f = -div(a grad u)`` computed analytically.

    ``a = 1 + 0.5 sin(2 pi x) cos(pi y)`` (smooth, in [0.5, 1.5]).  ``"sin"``:
    ``u = sin(pi x) sin(pi y)``.  ``"poly"``: ``u = x(1-x)(1+x) y(1-y)``, whose second
    derivatives do not vanish on the walls (so the boundary closure is really exercised).
    """
    x, y = darcy_grid(n)
    xx, yy = np.meshgrid(x, y, indexing="ij")
    a = 1.0 + 0.5 * np.sin(2 * PI * xx) * np.cos(PI * yy)
    a_x = PI * np.cos(2 * PI * xx) * np.cos(PI * yy)
    a_y = -0.5 * PI * np.sin(2 * PI * xx) * np.sin(PI * yy)
    if solution == "sin":
        u = np.sin(PI * xx) * np.sin(PI * yy)
        u_x = PI * np.cos(PI * xx) * np.sin(PI * yy)
        u_y = PI * np.sin(PI * xx) * np.cos(PI * yy)
        lap = -2 * PI**2 * u
    else:
        gx, hy = xx * (1 - xx) * (1 + xx), yy * (1 - yy)
        u = gx * hy
        u_x, u_y = (1 - 3 * xx**2) * hy, gx * (1 - 2 * yy)
        lap = -6 * xx * hy - 2 * gx
    f = -(a_x * u_x + a_y * u_y) - a * lap
    return a, f, u


def _rel_err(n: int, solution: str) -> float:
    a, f, u = _manufactured(n, solution)
    return float(np.linalg.norm(solve_darcy(a, f) - u) / np.linalg.norm(u))


@pytest.mark.parametrize("solution", ["sin", "poly"])
def test_second_order_convergence_on_a_manufactured_solution(solution: str) -> None:
    sizes = [8, 16, 32, 64]
    errs = [_rel_err(n, solution) for n in sizes]
    ratios = [errs[i] / errs[i + 1] for i in range(len(errs) - 1)]
    # Measured: sin 1.76e-2, 4.47e-3, 1.12e-3, 2.81e-4 (ratios 3.94, 3.98, 3.99);
    #           poly 2.94e-2, 7.53e-3, 1.90e-3, 4.75e-4 (ratios 3.90, 3.97, 3.99).
    assert all(3.7 < r < 4.3 for r in ratios), (errs, ratios)
    assert errs[-1] < 6e-4, errs


def test_matrix_is_symmetric_positive_definite() -> None:
    rng = np.random.default_rng(0)
    a = darcy_coefficients(rng, 1, 12, 10)[0]  # non-square on purpose
    matrix = assemble_darcy_matrix(a)
    assert matrix.shape == (120, 120)
    dense = matrix.toarray()
    np.testing.assert_array_equal(dense, dense.T)
    assert np.linalg.eigvalsh(dense).min() > 0.0
    # 5-point stencil: at most 5 non-zeros per row; off-diagonals non-positive (M-matrix).
    assert np.diff(matrix.tocsr().indptr).max() == 5
    assert (dense - np.diag(np.diag(dense)) <= 0).all()


def test_constant_coefficient_matches_the_five_point_laplacian() -> None:
    """``a = 1``: interior rows are the standard ``(4u - neighbours)/h^2`` stencil."""
    n = 6
    dense = assemble_darcy_matrix(np.ones((n, n))).toarray()
    k = 2 * n + 3  # an interior cell
    assert dense[k, k] == pytest.approx(4 * n**2)
    assert sorted(dense[k][dense[k] != 0])[:4] == [pytest.approx(-(n**2))] * 4
    assert dense[0, 0] == pytest.approx(6 * n**2)  # corner: 2 interior faces + 2 walls (2x)


def test_harmonic_face_average_across_a_jump() -> None:
    a = np.ones((4, 4))
    a[2:] = 9.0
    dense = assemble_darcy_matrix(a).toarray()
    i, j = 1, 2  # cell (1, 2) couples to (2, 2) across the jump
    assert dense[i * 4 + j, (i + 1) * 4 + j] == pytest.approx(-(2 * 9 / 10) * 16)


def test_maximum_principle_and_linearity() -> None:
    rng = np.random.default_rng(1)
    a = darcy_coefficients(rng, 1, 32, contrast=50.0)[0]
    f = rng.uniform(0.0, 1.0, size=(32, 32))
    u = solve_darcy(a, f)
    assert (u > 0).all()  # f >= 0, f != 0 => u > 0 inside (discrete strong maximum principle)
    # Scaling the forcing scales the solution; scaling a scales it inversely.
    np.testing.assert_allclose(solve_darcy(a, 3.0 * f), 3.0 * u, rtol=1e-10)
    np.testing.assert_allclose(solve_darcy(2.0 * a, f), 0.5 * u, rtol=1e-10)
    assert (solve_darcy(a, -f) < 0).all()


def test_solution_satisfies_the_discrete_system() -> None:
    rng = np.random.default_rng(2)
    a = darcy_coefficients(rng, 1, 20, 24, kind="grf", high=12.0, contrast=4.0)[0]
    u = solve_darcy(a, 1.0)
    residual = assemble_darcy_matrix(a) @ u.reshape(-1) - 1.0
    assert np.abs(residual).max() < 1e-9
    # Symmetric problem: a symmetric coefficient gives a symmetric solution.
    sym = np.ones((16, 16))
    sym[4:12, 4:12] = 0.1
    us = solve_darcy(sym, 1.0)
    np.testing.assert_allclose(us, us.T, atol=1e-12)
    np.testing.assert_allclose(us, us[::-1], atol=1e-12)


@pytest.mark.parametrize("kind", ["pdebench", "grf"])
def test_coefficients_are_two_valued_seeded_and_mixed(kind: str) -> None:
    nu = darcy_coefficients(np.random.default_rng(3), 64, 32, kind=kind, high=2.0, contrast=8.0)
    assert nu.shape == (64, 32, 32)
    assert set(np.unique(nu)) <= {2.0, 0.25}
    frac_high = (nu == 2.0).mean(axis=(1, 2))
    assert 0.1 < frac_high.mean() < 0.9  # both phases present on average
    again = darcy_coefficients(np.random.default_rng(3), 64, 32, kind=kind, high=2.0, contrast=8.0)
    np.testing.assert_array_equal(nu, again)
    assert not np.array_equal(nu[0], nu[1])


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [({"kind": "lognormal"}, "kind"), ({"contrast": 0.5}, "contrast"), ({"high": 0.0}, "high")],
)
def test_coefficient_arguments_are_checked(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        darcy_coefficients(np.random.default_rng(0), 2, 8, **kwargs)


@pytest.mark.parametrize(
    ("a", "f", "match"),
    [
        (np.ones(8), 1.0, r"\[X, Y\]"),
        (np.zeros((8, 8)), 1.0, "positive"),
        (np.full((8, 8), np.nan), 1.0, "non-finite"),
        (np.ones((8, 8)), np.ones((4, 4)), "shape"),
    ],
)
def test_solver_inputs_are_checked(a: np.ndarray, f: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        solve_darcy(a, f)


def test_batch_solver_matches_single_solves() -> None:
    nu = darcy_coefficients(np.random.default_rng(4), 3, 16)
    f = np.random.default_rng(5).uniform(size=(3, 16, 16))
    batch = solve_darcy_batch(nu, f)
    for k in range(3):
        np.testing.assert_allclose(batch[k], solve_darcy(nu[k], f[k]), rtol=1e-12)


def test_generation_speed_256_samples_at_64() -> None:
    """256 PDEBench-like samples at 64x64 in well under 30 s (measured ~3 s on 2 cores)."""
    start = time.perf_counter()
    u, nu = generate_darcy(np.random.default_rng(6), 256, 64, beta=1.0)
    elapsed = time.perf_counter() - start
    assert u.shape == (256, 1, 64, 64) and nu.shape == (256, 64, 64)
    assert u.dtype == np.float32 and np.isfinite(u).all() and (u > 0).all()
    assert elapsed < 15.0, f"{elapsed:.1f} s"
    print(f"generate_darcy 256 x 64^2: {elapsed:.2f} s")


def test_write_and_read_back_a_pdebench_darcy_file(tmp_path: Path) -> None:
    beta = 0.1
    u, nu = generate_darcy(np.random.default_rng(7), 5, 16, beta=beta, n_y=12)
    x, y = darcy_grid(16, 12)
    path = tmp_path / "2D_DarcyFlow_beta0.1_Train.hdf5"
    write_darcy_file(path, u, nu, x, y, attrs={"beta": beta})
    with open_pdebench(path, layout="darcy") as reader:
        assert reader.n_samples == 5 and reader.spatial_shape == (16, 12)
        assert reader.channels == ["u"] and reader.attrs["beta"] == pytest.approx(beta)
        np.testing.assert_allclose(reader.x, x, rtol=1e-6)
        np.testing.assert_allclose(reader.y, y, rtol=1e-6)
        sol = reader.read([4, 0])  # [n, 1, X, Y, 1]
        coef = reader.read_coefficient([4, 0])  # [n, X, Y, 1]
    np.testing.assert_array_equal(sol[..., 0], u[[4, 0]])
    np.testing.assert_array_equal(coef[..., 0], nu[[4, 0]])
    # What was read is the solution of what was read (float32 storage: ~1e-7 relative).
    resolved = solve_darcy(coef[0, ..., 0].astype(np.float64), beta)
    np.testing.assert_allclose(sol[0, 0, ..., 0], resolved, rtol=1e-5, atol=1e-8)
    with open_pdebench(path) as auto:
        assert auto.layout == "darcy"
