"""The solver reference: trigonometric upsampling and re-solving against exact solutions."""

from __future__ import annotations

import numpy as np
import pytest

from ups_kedro.data.solvers import cell_centres
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
    assert spec is None and "no built-in 1D solver" in why
    with pytest.raises(ValueError, match="not a multiple"):
        solver_rollout(np.zeros((1, 3, 100, 1)), SolverSpec("burgers", 0.01, 256), 0.05, 1)
