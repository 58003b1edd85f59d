"""Exact solutions used to verify the solvers (tests): Cole-Hopf Burgers and Taylor-Green."""

from __future__ import annotations

import math

import numpy as np

from ups_kedro.data.solvers.spectral import _check_field, _check_positive, _check_t_save, cell_centres

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

    ``u0`` holds samples, on the cell centres ``(i + 0.5)/X``, of its band-limited
    (trigonometric) interpolant; the exact evolution of that function is returned. With
    ``nu' = nu / pi`` and the mean ``c`` removed (Galilean shift: ``u(x, t) = c + v(x - c t, t)``,
    ``v`` solving Burgers from ``u0 - c``), ``F = int (u0 - c)`` is periodic,
    ``phi0 = exp(-F / (2 nu'))`` solves the heat equation ``phi_t = nu' phi_xx``, and
    ``v = -2 nu' phi_x / phi``.

    Methods:
        ``"quadrature"`` (default, robust): the heat-kernel integral over the real line in log
            form, ``v(x, t) = sum_j w_j (x - y_j) / t / sum_j w_j`` with
            ``log w_j = -(x - y_j)^2 / (4 nu' t) - F(y_j) / (2 nu')`` on a fine periodic grid
            ``y_j`` and its images. Subtracting the largest log-weight (log-sum-exp) means no
            under/overflow even when ``F / (2 nu')`` spans hundreds of e-folds (small nu). The
            trapezoid rule on this smooth, fast-decaying integrand converges geometrically once
            the grid resolves the kernel width.
        ``"spectral"``: FFT of ``phi0`` on a fine grid, each mode decaying exactly. Only well
            conditioned while ``phi0`` spans few e-folds (moderate nu: error ~1e-16 exp(max g),
            ``g = (F - min F) / (2 nu')``); ``x_eval`` must be the default grid.

    Args:
        u0: ``[X]`` initial data (any mean).
        nu: PDEBench viscosity parameter (> 0).
        t_save: times ``[T]`` (>= 0, strictly increasing).
        x_eval: evaluation points ``[E]`` (default: the cell centres of ``u0``).
        method: ``"quadrature"`` or ``"spectral"``.
        n_fine: fine-grid size for ``F`` (default: chosen from nu, t and X, see the code).

    Returns:
        ``[T, E]`` float64.
    """
    if np.ndim(u0) != 1:
        raise ValueError(f"u0 must be one initial condition of shape [X], got {np.shape(u0)}")
    if method not in ("quadrature", "spectral"):
        raise ValueError(f"method must be 'quadrature' or 'spectral', got {method!r}")
    u = _check_field("u0", u0, 1)[0][0]
    nu = _check_positive("nu", nu)
    t = _check_t_save(t_save)
    nu_eff = nu / math.pi
    n_x = u.size
    shift = 0.5 / n_x  # cell-centre offset of the input grid
    if x_eval is None:
        xe = cell_centres(n_x)
    else:
        xe = np.asarray(x_eval, dtype=np.float64).ravel()
        if not np.all(np.isfinite(xe)):
            raise ValueError("x_eval must contain only finite points")

    u_hat = np.fft.rfft(u)
    mean = u_hat[0].real / n_x
    if n_x % 2 == 0:
        u_hat[-1] *= 0.5  # split the Nyquist mode symmetrically: the interpolant stays real
    kk = np.arange(u_hat.size, dtype=np.float64)
    # max u0' on a 4x finer grid (irfft with n = 4 X scales by 1/4, hence the factor 4).
    max_slope = 4.0 * float(np.max(np.fft.irfft(2j * np.pi * kk * u_hat, n=4 * n_x)))
    n_fine = _fine_grid_size(n_fine, n_x, nu_eff, t, max_slope, method)

    # F = int (u0 - c) dx on the fine grid y_j = shift + j / n_fine (same offset as the input
    # grid, so the zero-padded inverse FFT evaluates the interpolant's antiderivative directly).
    f_hat = np.zeros(n_fine // 2 + 1, dtype=np.complex128)
    f_hat[1 : u_hat.size] = u_hat[1:] / (2j * np.pi * kk[1:])
    f_fine = np.fft.irfft(f_hat, n=n_fine) * (n_fine / n_x)
    y = shift + np.arange(n_fine) / n_fine
    g = (f_fine - f_fine.min()) / (2.0 * nu_eff)  # -log(phi0), shifted so that phi0 <= 1
    if method == "spectral":
        if x_eval is not None:
            raise ValueError("method='spectral' evaluates on the cell centres only: x_eval=None")
        return _cole_hopf_spectral(g, t, n_fine, n_x, nu_eff, mean)
    return _cole_hopf_quadrature(g, y, u_hat, t, xe, n_x, nu_eff, mean, shift)


def _fine_grid_size(
    n_fine: int | None, n_x: int, nu_eff: float, t: np.ndarray, max_slope: float, method: str
) -> int:
    """Fine-grid size for the antiderivative ``F`` of :func:`burgers_exact_cole_hopf`."""
    t_pos = t[t > 0]
    if n_fine is None:
        # Spectral: 8x oversampling keeps phi0's (wider) spectrum. Quadrature: resolve (i) F,
        # whose modes are those of u0 (2 X already agrees with 16 X to 4e-16 at nu = 0.01,
        # X = 1024, sine data), and (ii) the narrowest integrand: near a stationary point the
        # weight has width sigma = sqrt(2 nu' t / (1 + t max u0')); 6 points per sigma make the
        # trapezoid error ~exp(-2 pi^2 36), i.e. nil.
        n_fine = 8 * n_x if method == "spectral" else 2 * n_x
        if t_pos.size and method == "quadrature":
            tm = float(t_pos[0])
            sigma = math.sqrt(2.0 * nu_eff * tm / (1.0 + tm * max(max_slope, 0.0)))
            n_fine = max(n_fine, 2 * math.ceil(3.0 / sigma))
            if n_fine > 2**21:
                raise ValueError(
                    f"t_save has a time too close to 0 for the quadrature (needs n_fine={n_fine})"
                )
    n_fine = int(n_fine)
    if n_fine < n_x or (method == "spectral" and n_fine % n_x):
        raise ValueError(
            f"n_fine must be >= len(u0) = {n_x} (a multiple of it for 'spectral'), got {n_fine}"
        )
    return n_fine


def _cole_hopf_spectral(
    g: np.ndarray, t: np.ndarray, n_fine: int, n_x: int, nu_eff: float, mean: float
) -> np.ndarray:
    """Cole-Hopf by exact heat-equation decay of ``phi0 = exp(-g)``; ``[T, X]`` on cell centres."""
    out = np.empty((t.size, n_x), dtype=np.float64)
    if g.max() > 25.0:
        raise ValueError(
            f"method='spectral' is ill-conditioned here (phi0 spans e^{g.max():.0f}); "
            "use method='quadrature'"
        )
    phi0_hat = np.fft.rfft(np.exp(-g))
    kf = 2.0 * np.pi * np.arange(phi0_hat.size)
    stride = n_fine // n_x
    for j, tj in enumerate(t):
        # Heat-equation decay, then the Galilean shift x -> x - c t as a phase factor.
        ph = phi0_hat * np.exp(-nu_eff * kf**2 * tj - 1j * kf * mean * tj)
        phi = np.fft.irfft(ph, n=n_fine)[::stride]
        phi_x = np.fft.irfft(1j * kf * ph, n=n_fine)[::stride]
        out[j] = mean - 2.0 * nu_eff * phi_x / phi
    return out


def _cole_hopf_quadrature(
    g: np.ndarray,
    y: np.ndarray,
    u_hat: np.ndarray,
    t: np.ndarray,
    xe: np.ndarray,
    n_x: int,
    nu_eff: float,
    mean: float,
    shift: float,
) -> np.ndarray:
    """Cole-Hopf by log-sum-exp heat-kernel quadrature over ``y [n_fine]``; ``[T, E]``."""
    out = np.empty((t.size, xe.size), dtype=np.float64)
    g_range = float(g.max())
    for j, tj in enumerate(t):
        if tj == 0.0:
            # The interpolant itself (exact at t = 0, where the kernel degenerates).
            out[j] = _eval_trig(u_hat, n_x, np.mod(xe - shift, 1.0))
            continue
        four_nu_t = 4.0 * nu_eff * tj
        # Images needed so that every neglected weight is < e^-40 of the largest one.
        reach = math.sqrt(four_nu_t * (g_range + 40.0))
        images = np.arange(-math.ceil(reach) - 1, math.ceil(reach) + 2, dtype=np.float64)
        yy = (y[:, None] + images[None, :]).ravel()  # [n_fine * n_images]
        gg = np.repeat(g, images.size)  # matches yy's (point, image) order
        xi_all = np.mod(xe - mean * tj, 1.0)  # Galilean shift, then back into [0, 1)
        # Chunks of evaluation points keep the [chunk, n_fine * n_images] work array ~32 MB.
        chunk = max(1, 4_000_000 // yy.size)
        for s in range(0, xi_all.size, chunk):
            d = xi_all[s : s + chunk, None] - yy[None, :]
            lw = -(d * d) / four_nu_t - gg[None, :]
            w = np.exp(lw - lw.max(axis=1, keepdims=True))
            out[j, s : s + chunk] = mean + np.sum(w * d, axis=1) / (tj * np.sum(w, axis=1))
    return out


def _eval_trig(u_hat: np.ndarray, n_x: int, xi: np.ndarray) -> np.ndarray:
    """Real trig interpolant with rfft coefficients ``u_hat`` (Nyquist pre-halved) at ``xi``."""
    k = np.arange(u_hat.size, dtype=np.float64)
    coef = u_hat.copy()
    coef[1:] *= 2.0
    return (np.exp(2j * np.pi * np.outer(xi, k)) @ coef).real / n_x


def taylor_green_vorticity(
    n_x: int, n_y: int | None = None, k: int = 1, amplitude: float = 1.0
) -> np.ndarray:
    """Taylor-Green vortex ``w = A 2 (2 pi k)^2 sin(2 pi k x) sin(2 pi k y)``, shape ``[X, Y]``.

    Its stream function ``psi = A sin(2 pi k x) sin(2 pi k y)`` is proportional to ``w``, so
    ``u.grad w = 0`` and the unforced solution is exactly ``w(t) = w(0) exp(-2 nu (2 pi k)^2 t)``.
    (For large ``A / nu`` this equilibrium is unstable, and round-off grows into other modes.)
    """
    n_y = n_x if n_y is None else n_y
    x = cell_centres(n_x)[:, None]
    y = cell_centres(n_y)[None, :]
    kk = 2.0 * np.pi * k
    return amplitude * 2.0 * kk**2 * np.sin(kk * x) * np.sin(kk * y)

