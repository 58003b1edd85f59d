"""The solver reference: trigonometric upsampling and re-solving against exact solutions."""

from __future__ import annotations

import numpy as np
import pytest

from ups_kedro.data.solvers import cell_centres, solve_vorticity2d, vorticity_initial_conditions
from ups_kedro.data.solvers.exact import taylor_green_vorticity
from ups_kedro.evaluation.solver_reference import (
    SolverSpec,
    fourier_upsample,
    solver_rollout,
    solver_spec,
)


def test_upsampling_band_limited_data_is_exact() -> None:
    x = np.arange(512) / 512
    u = np.sin(2 * np.pi * 3 * x) + 0.3 * np.cos(2 * np.pi * 64 * x)  # 64 = coarse Nyquist
    np.testing.assert_allclose(fourier_upsample(u[None, ::4], 4)[0], u, atol=1e-12)
    np.testing.assert_array_equal(fourier_upsample(u[None], 1)[0], u)


def test_advection_reference_matches_the_exact_shift() -> None:
    """u0(x − βt) on the coarse grid, from frame initial_step − 1, at every scored frame."""
    n, beta, dt = 256, 0.4, 0.05
    x = cell_centres(n)[::4]
    times = dt * np.arange(12)
    fields = np.stack([np.sin(2 * np.pi * 2 * (x - beta * t)) for t in times])[None, ..., None]
    pred, seconds = solver_rollout(fields, SolverSpec("advection", beta, n), dt, initial_step=4)
    assert pred.shape == (1, 8, 64, 1) and seconds >= 0
    np.testing.assert_allclose(pred, fields[:, 4:], atol=1e-5)


def test_solver_is_found_from_builtin_names_or_pdebench_attributes() -> None:
    spec, _ = solver_spec({"system": "burgers", "attrs": {"Nu": 0.01}, "spatial_shape": [1024],
                           "channels": ["u"]})
    assert spec == SolverSpec("burgers", 0.01, 1024)
    spec, _ = solver_spec({"attrs": {"beta": 0.4}, "spatial_shape": [1024], "channels": ["u"]})
    assert spec is not None and spec.system == "advection"
    spec, why = solver_spec({"attrs": {}, "spatial_shape": [64, 64], "channels": ["u"]})
    assert spec is None and "no built-in 2D solver" in why
    spec, _ = solver_spec({"system": "vorticity2d", "attrs": {"Nu": 1e-3},
                           "spatial_shape": [64, 64], "channels": ["c0"]})
    assert spec == SolverSpec("vorticity2d", 1e-3, 64)
    spec, why = solver_spec({"attrs": {}, "spatial_shape": [8, 8],
                             "channels": ["density", "Vx"]})
    assert spec is None and "single-channel" in why
    with pytest.raises(ValueError, match="not a multiple"):
        solver_rollout(np.zeros((1, 3, 100, 1)), SolverSpec("burgers", 0.01, 256), 0.05, 1)


def test_upsampling_2d_is_exact_for_band_limited_fields() -> None:
    x = cell_centres(32)
    w = np.sin(2 * np.pi * 3 * x)[:, None] * np.cos(2 * np.pi * 5 * x)[None, :]
    fine = fourier_upsample(fourier_upsample(w[None, ::4, ::2], 4, axis=1), 2, axis=2)
    np.testing.assert_allclose(fine[0], w, atol=1e-12)


def test_vorticity_reference_matches_taylor_green_decay() -> None:
    """The Taylor-Green vortex decays as exp(-2 ν (2πk)² t) on the stride-2 stored grid."""
    nu, dt, n = 1e-2, 0.1, 32
    w0 = taylor_green_vorticity(n, k=1)
    times = dt * np.arange(8)
    truth = w0[None, None, ::2, ::2] * np.exp(-2 * nu * (2 * np.pi) ** 2 * times)[None, :, None,
                                                                                    None]
    pred, seconds = solver_rollout(truth[..., None], SolverSpec("vorticity2d", nu, n), dt,
                                   initial_step=3)
    assert pred.shape == (1, 5, 16, 16, 1) and seconds >= 0
    np.testing.assert_allclose(pred[..., 0], truth[:, 3:], atol=1e-5 * np.abs(w0).max())


def test_vorticity_reference_reproduces_builtin_data() -> None:
    """Random fields solved at 32², stored at 16²: re-solving from the stored frame agrees."""
    rng = np.random.default_rng(0)
    dt = 0.25
    full = solve_vorticity2d(vorticity_initial_conditions(rng, 2, 32), nu=1e-3,
                             t_save=dt * np.arange(6))[..., None]
    spec = SolverSpec("vorticity2d", 1e-3, 32)
    pred, _ = solver_rollout(full, spec, dt, initial_step=2)  # same grid: only round-off
    np.testing.assert_allclose(pred, full[:, 2:], atol=1e-5 * np.abs(full).max())
    w = full[:, :, ::2, ::2]  # stored at 16²: modes above 16² Nyquist are lost, as in 1D
    pred, _ = solver_rollout(w, spec, dt, initial_step=2)
    err = np.linalg.norm(pred - w[:, 2:]) / np.linalg.norm(w[:, 2:])
    persistence = np.linalg.norm(w[:, 1:2] - w[:, 2:]) / np.linalg.norm(w[:, 2:])
    assert err < 0.02 and err < 0.1 * persistence
    with pytest.raises(ValueError, match="spatial shape"):
        solver_rollout(w[:, :, :, 0], SolverSpec("vorticity2d", 1e-3, 32), dt, initial_step=2)
