"""1D linear advection, solved exactly by a Fourier phase shift."""

from __future__ import annotations

import math

import numpy as np
import scipy.fft as sfft

from ups_kedro.data.solvers.spectral import _FFT_WORKERS, _check_field, _check_t_save

def solve_advection(
    u0: np.ndarray,
    beta: float,
    t_save: np.ndarray,
    *,
    dtype: np.dtype | type = np.float64,
) -> np.ndarray:
    """Exact solution ``u(x, t) = u0(x - beta t)`` of ``u_t + beta u_x = 0`` on periodic [0, 1).

    The shift is the Fourier phase factor ``exp(-2 pi i k beta t)``: exact to round-off for
    band-limited data (no content at the Nyquist mode, whose sine part the grid cannot hold).

    Args:
        u0: ``[B, X]`` (or ``[X]``) on a uniform periodic grid.
        beta: advection speed (any finite real, may be 0 or negative).
        t_save: ``[T]`` output times (>= 0, strictly increasing).
        dtype: storage type of the result.

    Returns:
        ``[B, T, X]`` (``[T, X]`` for 1D input) in ``dtype``.
    """
    u, batched = _check_field("u0", u0, 1)
    beta = float(beta)
    if not math.isfinite(beta):
        raise ValueError(f"beta must be finite, got {beta!r}")
    t = _check_t_save(t_save)
    n_b, n_x = u.shape
    u_hat = sfft.rfft(u, axis=-1, workers=_FFT_WORKERS)  # [B, K]
    k = np.arange(u_hat.shape[-1], dtype=np.float64)
    # The shift is periodic: reducing beta t mod 1 first keeps the phase argument small, so large
    # beta t loses no digits.
    shift = np.mod(beta * t, 1.0)
    phase = np.exp(-2j * np.pi * shift[:, None] * k[None, :])  # [T, K]
    out = np.empty((n_b, t.size, n_x), dtype=dtype)
    # Chunks of trajectories bound the complex [chunk, T, K] intermediate (~32 MB).
    chunk = max(1, 2**21 // max(1, t.size * k.size))
    for s0 in range(0, n_b, chunk):
        sl = slice(s0, s0 + chunk)
        out[sl] = sfft.irfft(u_hat[sl, None, :] * phase[None], n=n_x, axis=-1,
                             workers=_FFT_WORKERS)
    if t[0] == 0.0:
        out[:, 0] = u  # bit-exact initial frame
    return out if batched else out[0]
