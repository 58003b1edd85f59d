"""Tests for ups_kedro.evaluation.metrics: hand-computed values on tiny arrays plus identities."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ups_kedro.evaluation.metrics import (
    brmse,
    correlation,
    crmse,
    energy_spectrum,
    frmse_bands,
    max_error,
    nrmse,
    nrmse_by_horizon,
    rmse,
    steps_above_correlation,
    summarise,
    vrmse,
)


def _traj(values: list[list[float]]) -> np.ndarray:
    """[T][X] nested list -> [1, T, X, 1] float32 (1 sample, 1 channel)."""
    return np.asarray(values, dtype=np.float32)[None, :, :, None]


# true frames: t0 = [1, 2, 3, 4], t1 = [2, 2, 2, 2]
TRUE = _traj([[1, 2, 3, 4], [2, 2, 2, 2]])
# pred frames: errors e0 = [1, 0, -1, 2], e1 = [0, 0, 0, 4]
PRED = _traj([[2, 2, 2, 6], [2, 2, 2, 6]])


# ------------------------------------------------------------------------------------------- basics
def test_rmse_hand_computed() -> None:
    # frame 0: mean e^2 = (1 + 0 + 1 + 4) / 4 = 1.5 -> sqrt(1.5); frame 1: 16 / 4 = 4 -> 2
    out = rmse(PRED, TRUE)
    assert out.shape == (1, 2, 1)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out[0, :, 0], [math.sqrt(1.5), 2.0])


def test_nrmse_hand_computed() -> None:
    # frame 0: ||e|| = sqrt(6), ||true|| = sqrt(1+4+9+16) = sqrt(30) -> sqrt(6/30) = sqrt(0.2)
    # frame 1: ||e|| = 4, ||true|| = sqrt(16) = 4 -> 1
    np.testing.assert_allclose(nrmse(PRED, TRUE)[0, :, 0], [math.sqrt(0.2), 1.0])


def test_crmse_hand_computed() -> None:
    # frame 0: mean pred = 12/4 = 3, mean true = 10/4 = 2.5 -> 0.5; frame 1: 12/4 - 8/4 = 1
    np.testing.assert_allclose(crmse(PRED, TRUE)[0, :, 0], [0.5, 1.0])


def test_brmse_hand_computed_1d() -> None:
    # boundary points are x=0 and x=3: frame 0 errors (1, 2) -> sqrt((1+4)/2); frame 1 (0, 4) -> sqrt(8)
    np.testing.assert_allclose(brmse(PRED, TRUE)[0, :, 0], [math.sqrt(2.5), math.sqrt(8.0)])


def test_brmse_hand_computed_2d() -> None:
    # 3x3 grid, error 1 at the centre only, 2 at corner (0,0): boundary slices x=0,x=2,y=0,y=2 hold
    # 4*3 = 12 entries; the corner (0,0) sits in both x=0 and y=0 -> sum e^2 = 4 + 4 = 8 -> sqrt(8/12)
    true = np.zeros((1, 1, 3, 3, 1))
    pred = true.copy()
    pred[0, 0, 1, 1, 0] = 1.0
    pred[0, 0, 0, 0, 0] = 2.0
    np.testing.assert_allclose(brmse(pred, true)[0, 0, 0], math.sqrt(8 / 12))


def test_max_error_hand_computed() -> None:
    np.testing.assert_allclose(max_error(PRED, TRUE)[0, :, 0], [2.0, 4.0])


def test_vrmse_hand_computed() -> None:
    # frame 0: var(true) = mean((-1.5, -.5, .5, 1.5)^2) = 1.25; MSE = 1.5 -> sqrt(1.5/1.25) = sqrt(1.2)
    out = vrmse(PRED, TRUE)
    np.testing.assert_allclose(out[0, 0, 0], math.sqrt(1.2))
    # frame 1: constant truth (var 0) -> EPS floor -> huge but finite
    assert np.isfinite(out[0, 1, 0]) and out[0, 1, 0] > 1e6


def test_vrmse_of_spatial_mean_prediction_is_one() -> None:
    rng = np.random.default_rng(0)
    true = rng.normal(size=(3, 4, 16, 2))
    pred = np.broadcast_to(true.mean(axis=2, keepdims=True), true.shape)
    np.testing.assert_allclose(vrmse(pred, true), 1.0)


# ---------------------------------------------------------------------------------------- identities
def test_nrmse_perfect_zero_and_scale_invariance() -> None:
    rng = np.random.default_rng(1)
    true = rng.normal(size=(2, 3, 8, 2)).astype(np.float32)
    pred = true + 0.1 * rng.normal(size=true.shape).astype(np.float32)
    np.testing.assert_array_equal(nrmse(true, true), 0.0)
    np.testing.assert_allclose(nrmse(np.zeros_like(true), true), 1.0)
    np.testing.assert_allclose(nrmse(7.5 * pred, 7.5 * true), nrmse(pred, true), rtol=1e-6)
    # rmse, by contrast, scales linearly
    np.testing.assert_allclose(rmse(7.5 * pred, 7.5 * true), 7.5 * rmse(pred, true), rtol=1e-6)


def test_zero_truth_frame_is_guarded() -> None:
    zeros = np.zeros((1, 1, 4, 1))
    assert nrmse(zeros, zeros)[0, 0, 0] == 0.0  # 0/0 -> 0 thanks to the EPS floor, not NaN


def test_persistence_identity() -> None:
    # persistence (pred frame t = true frame t-1) on a field that does not change is exact ...
    true = np.tile(np.arange(1.0, 9.0)[None, None, :, None], (2, 5, 1, 1))
    persist = np.concatenate([true[:, :1], true[:, :-1]], axis=1)
    np.testing.assert_array_equal(nrmse(persist, true), 0.0)
    # ... and on a sign-flipping field it equals 2 at every frame after the first
    flip = true * ((-1.0) ** np.arange(5))[None, :, None, None]
    persist = np.concatenate([flip[:, :1], flip[:, :-1]], axis=1)
    np.testing.assert_allclose(nrmse(persist, flip)[:, 1:], 2.0)


def test_float32_computed_in_float64() -> None:
    true = np.full((1, 1, 4, 1), 1e4, dtype=np.float32)
    pred = true + np.float32(1.0)
    out = nrmse(pred, true)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, 1e-4, rtol=1e-12)


# ------------------------------------------------------------------------------------------ Fourier
@pytest.mark.parametrize(("k", "band"), [(2, "low"), (7, "mid"), (20, "high")])
def test_frmse_single_wavenumber_1d(k: int, band: str) -> None:
    nx, amp = 64, 0.3
    x = np.arange(nx) / nx
    true = np.sin(2 * np.pi * 3 * x)[None, None, :, None] * np.ones((2, 3, 1, 1))
    pred = true + amp * np.cos(2 * np.pi * k * x)[None, None, :, None]
    out = frmse_bands(pred, true)
    assert set(out) == {"low", "mid", "high"}
    # |rfft| at k of amp*cos = amp*nx/2 -> F_k = amp/2; band mean over its shells:
    # low has 5 shells (0..4), mid 8 (5..12), high 20 (13..32 = nx/2)
    n_shells = {"low": 5, "mid": 8, "high": 20}
    for name, val in out.items():
        assert val.shape == (2, 3, 1)
        expected = amp / 2 / n_shells[name] if name == band else 0.0
        np.testing.assert_allclose(val, expected, atol=1e-12)


def test_frmse_single_wavenumber_2d_and_custom_bands() -> None:
    # error amp*cos(2 pi (3x + 4y)) has |k| = 5 (mid band); one-sided power = amp^2 n^2 / 4 -> F_5 = amp/2
    n, amp = 32, 0.5
    x = np.arange(n) / n
    xx, yy = np.meshgrid(x, x, indexing="ij")
    err = amp * np.cos(2 * np.pi * (3 * xx - 4 * yy))  # negative ky: PDEBench's quadrant loop misses it
    true = np.zeros((1, 1, n, n, 1))
    pred = true + err[None, None, :, :, None]
    out = frmse_bands(pred, true)
    np.testing.assert_allclose(out["low"], 0.0, atol=1e-12)
    np.testing.assert_allclose(out["mid"], amp / 2 / 8, atol=1e-12)
    np.testing.assert_allclose(out["high"], 0.0, atol=1e-12)
    # custom named bands; a band with no shell on this grid (s_max = 16) is NaN
    custom = frmse_bands(pred, true, bands={"five": (5, 5), "far": (40, 50)})
    np.testing.assert_allclose(custom["five"], amp / 2, atol=1e-12)
    assert np.isnan(custom["far"]).all()


def test_energy_spectrum_parseval_and_peak() -> None:
    nx, amp = 32, 2.0
    x = np.arange(nx) / nx
    u = (1.0 + amp * np.cos(2 * np.pi * 5 * x))[None, None, :, None] * np.ones((2, 3, 1, 2))
    k, e = energy_spectrum(u)
    assert k.shape == e.shape == (nx // 2 + 1,)
    np.testing.assert_allclose(e[0], 0.5)  # mean 1 -> 1/2 * 1^2
    np.testing.assert_allclose(e[5], amp**2 / 4)
    np.testing.assert_allclose(e.sum(), 0.5 * np.mean(u**2))
    # 2D: explicit spatial_dims for a [X, Y, C] field
    u2 = np.cos(2 * np.pi * 3 * x)[:, None, None] * np.ones((1, nx, 1))
    k2, e2 = energy_spectrum(u2, spatial_dims=2)
    assert np.argmax(e2) == 3
    np.testing.assert_allclose(e2.sum(), 0.5 * np.mean(u2**2))
    with pytest.raises(ValueError):
        energy_spectrum(u2)  # ndim 3 is ambiguous


# -------------------------------------------------------------------------------------- correlation
def test_correlation_hand_computed() -> None:
    # true [1,2,3,4] (centred [-1.5,-.5,.5,1.5]); pred [1,3,2,4] (centred [-1.5,.5,-.5,1.5])
    # sum products = 2.25 - .25 - .25 + 2.25 = 4; sum squares = 5 each -> r = 0.8
    true = _traj([[1, 2, 3, 4]])
    pred = _traj([[1, 3, 2, 4]])
    r = correlation(pred, true)
    assert r.shape == (1, 1)
    np.testing.assert_allclose(r[0, 0], 0.8)
    np.testing.assert_allclose(correlation(-pred, true)[0, 0], -0.8)
    np.testing.assert_allclose(correlation(3 * true + 1, true), 1.0)
    assert correlation(np.ones_like(true), true)[0, 0] == 0.0  # constant prediction -> 0


def test_steps_above_correlation_counts_leading_run() -> None:
    rng = np.random.default_rng(2)
    true = rng.normal(size=(2, 5, 16, 1))
    noise = rng.normal(size=true.shape)
    pred = true.copy()
    # sample 0: good, good, bad, good, good -> 2 (recovery after the drop is not counted)
    pred[0, 2] = noise[0, 2]
    # sample 1: bad first frame -> 0
    pred[1, 0] = noise[1, 0]
    steps = steps_above_correlation(pred, true, 0.95)
    np.testing.assert_array_equal(steps, [2, 0])
    np.testing.assert_array_equal(steps_above_correlation(true, true, 0.95), [5, 5])


# ---------------------------------------------------------------------------------------- aggregates
def test_nrmse_by_horizon_and_summarise() -> None:
    # error grows linearly with the frame index: nrmse at frame index t (horizon t+1) = 0.01 * (t+1)
    rng = np.random.default_rng(3)
    n_t = 12
    true = rng.normal(size=(3, n_t, 16, 2)).astype(np.float32)
    scale = 0.01 * np.arange(1, n_t + 1)[None, :, None, None]
    pred = true * (1.0 + scale)  # e = scale * true -> nrmse = scale exactly
    by_h = nrmse_by_horizon(pred, true)
    np.testing.assert_allclose(by_h, 0.01 * np.arange(1, n_t + 1), rtol=1e-6)

    s = summarise(pred, true)
    expected_keys = {
        "nrmse", "nrmse_h1", "nrmse_h5", "nrmse_h10", "nrmse_last", "rmse", "crmse", "brmse",
        "frmse_low", "frmse_mid", "frmse_high", "max_error", "corr_steps_0.8", "corr_steps_0.95",
        "vrmse",
    }
    assert set(s) == expected_keys
    assert all(isinstance(v, float) for v in s.values())
    np.testing.assert_allclose(s["nrmse_h1"], 0.01, rtol=1e-6)
    np.testing.assert_allclose(s["nrmse_h5"], 0.05, rtol=1e-6)
    np.testing.assert_allclose(s["nrmse_h10"], 0.10, rtol=1e-6)
    np.testing.assert_allclose(s["nrmse_last"], 0.12, rtol=1e-6)
    np.testing.assert_allclose(s["nrmse"], 0.01 * np.mean(np.arange(1, n_t + 1)), rtol=1e-6)
    np.testing.assert_allclose(s["max_error"], np.max(np.abs(pred.astype(np.float64) - true)))
    assert s["corr_steps_0.8"] == n_t  # pred is a positive rescaling -> r = 1 everywhere

    # horizons beyond T are skipped
    short = summarise(pred[:, :3], true[:, :3])
    assert "nrmse_h1" in short and "nrmse_h5" not in short and "nrmse_h10" not in short
    np.testing.assert_allclose(short["nrmse_last"], 0.03, rtol=1e-6)
    with pytest.raises(ValueError):
        summarise(pred, true, horizons=(0,))


def test_summarise_2d_runs() -> None:
    rng = np.random.default_rng(4)
    true = rng.normal(size=(2, 3, 8, 8, 2)).astype(np.float32)
    pred = true + 0.05 * rng.normal(size=true.shape).astype(np.float32)
    s = summarise(pred, true)
    assert 0.0 < s["nrmse"] < 0.2
    assert "nrmse_h1" in s and "nrmse_h5" not in s
    assert np.isnan(s["frmse_high"])  # 8x8 grid has shells 0..4 only
    assert s["frmse_low"] > 0
    for fn in (nrmse, rmse, crmse, brmse, max_error, vrmse):
        assert fn(pred, true).shape == (2, 3, 2)
    assert correlation(pred, true).shape == (2, 3)


# ----------------------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "fn",
    [nrmse, rmse, crmse, brmse, max_error, vrmse, correlation, nrmse_by_horizon, summarise, frmse_bands],
)
def test_shape_validation(fn) -> None:
    a = np.zeros((1, 2, 4, 1))
    with pytest.raises(ValueError, match=r"\(1, 2, 4, 1\).*\(1, 2, 5, 1\)"):
        fn(a, np.zeros((1, 2, 5, 1)))
    with pytest.raises(ValueError, match="ndim >= 4"):
        fn(np.zeros((2, 4, 1)), np.zeros((2, 4, 1)))
