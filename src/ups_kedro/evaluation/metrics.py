"""Rollout metrics for PDE surrogates (PDEBench / The Well definitions), in plain numpy.

Conventions
-----------
* Trajectories are channels-last, physical-space arrays ``[N, T, *spatial, C]``:
  1D ``[N, T, X, C]``, 2D ``[N, T, X, Y, C]`` (any number of spatial axes works).
* Metrics are computed over exactly the frames passed in. The caller is responsible for dropping the
  first ``initial_step`` (given, not predicted) frames, so frame index 0 here is the 1st rolled-out frame.
* Every input is cast to float64 before any arithmetic: float32 sums over 10^5 points lose ~3 digits,
  which is the same order as the nRMSE values we want to compare (1e-3).
* Per-sample, per-frame, per-channel metrics return ``[N, T, C]``; aggregation is left to
  :func:`summarise` / :func:`nrmse_by_horizon`, which use a *plain* mean over samples.

Definitions (``e = pred - true``; "over space" = over all spatial points of one sample/frame/channel;
``n`` = number of spatial points)
-------------------------------------------------------------------------------------------------
* ``rmse``   = sqrt(mean_space e^2)                                  (mean, not sum: PDEBench ``err_mean``)
* ``nrmse``  = ||e||_2 / ||true||_2 = rmse / sqrt(mean_space true^2)  (PDEBench ``err_nRMSE``, per frame)
* ``crmse``  = |mean_space pred - mean_space true| = |sum e| / n     (PDEBench ``err_CSV`` for one sample)
* ``brmse``  = sqrt(mean of e^2 over the first and last slice along every spatial axis)
               (PDEBench ``err_BD``; in 2D corner points appear in both an x- and a y-slice, as in PDEBench)
* ``frmse_bands`` = per band, mean over integer wavenumber shells s of
               sqrt(sum_{floor|k| = s} w_k |FFT(e)_k|^2) / n  (see :func:`frmse_bands`)
* ``max_error`` = max_space |e|
* ``vrmse``  = sqrt(mean_space e^2 / var_space true) = rmse / std_space(true)   (The Well)
* ``correlation`` = Pearson r between pred and true over space *and* channels, per frame -> ``[N, T]``
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = [
    "EPS",
    "DEFAULT_BANDS",
    "nrmse",
    "rmse",
    "crmse",
    "brmse",
    "frmse_bands",
    "max_error",
    "vrmse",
    "correlation",
    "steps_above_correlation",
    "nrmse_by_horizon",
    "summarise",
    "energy_spectrum",
]

#: Floor for denominators (||true||, std(true), correlation norms). Denominators are floored with
#: ``max(den, EPS)`` rather than ``den + EPS`` so the value is *exact* whenever the denominator is a
#: normal physical magnitude; it only matters for identically-zero fields (e.g. a zero truth frame),
#: where 0/0 becomes 0 instead of NaN. Applied to RMS-type quantities, so it is grid-size independent.
EPS: float = 1e-12

#: Inclusive integer wavenumber shells: low k <= 4, mid 5..12, high >= 13 (PDEBench iLow=4, iHigh=12).
DEFAULT_BANDS: dict[str, tuple[float, float]] = {
    "low": (0, 4),
    "mid": (5, 12),
    "high": (13, math.inf),
}


# --------------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------------
def _as_f64(a: object) -> np.ndarray:
    """Cast to a float64 ndarray (no copy if it already is one). Accepts CPU torch tensors too."""
    return np.asarray(a, dtype=np.float64)


def _check_pair(pred: object, true: object) -> tuple[np.ndarray, np.ndarray]:
    """Validate a (pred, true) pair of ``[N, T, *spatial, C]`` arrays and cast both to float64.

    Raises:
        ValueError: if shapes differ or ndim < 4 (need at least one spatial axis); the message names
            both shapes so a mis-permuted batch is easy to spot.
    """
    p, t = _as_f64(pred), _as_f64(true)
    if p.shape != t.shape or p.ndim < 4:
        raise ValueError(
            "pred and true must have the same shape [N, T, *spatial, C] with ndim >= 4; "
            f"got pred.shape={p.shape}, true.shape={t.shape}"
        )
    return p, t


def _spatial_axes(a: np.ndarray) -> tuple[int, ...]:
    """Spatial axes of a ``[N, T, *spatial, C]`` array: everything between T and C."""
    return tuple(range(2, a.ndim - 1))


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / max(den, EPS)`` elementwise (see :data:`EPS` for why a floor, not an offset)."""
    return num / np.maximum(den, EPS)


def _rms_space(a: np.ndarray) -> np.ndarray:
    """sqrt(mean over spatial axes of a^2): ``[N, T, *spatial, C] -> [N, T, C]``."""
    return np.sqrt(np.mean(a * a, axis=_spatial_axes(a)))


# --------------------------------------------------------------------------------------------------
# per-sample, per-frame, per-channel metrics  -> [N, T, C]
# --------------------------------------------------------------------------------------------------
def rmse(pred: object, true: object) -> np.ndarray:
    """Root-mean-square error over space (MEAN over points, not sum; as PDEBench).

    Args:
        pred, true: ``[N, T, *spatial, C]``.

    Returns:
        ``[N, T, C]``: sqrt(mean_space (pred - true)^2).
    """
    p, t = _check_pair(pred, true)
    return _rms_space(p - t)


def nrmse(pred: object, true: object) -> np.ndarray:
    """Normalised RMSE per sample, frame and channel (PDEBench "spatial-norm" nRMSE).

    ``||pred - true||_2 / ||true||_2`` over the spatial points of one frame and channel. Computed as
    ``rms(e) / rms(true)`` (identical: the 1/n inside both roots cancels). A zero-norm truth frame
    uses the :data:`EPS` floor in the denominator (so 0 error on a zero frame gives 0, not NaN).

    Args:
        pred, true: ``[N, T, *spatial, C]``.

    Returns:
        ``[N, T, C]``. Perfect prediction -> 0; all-zero prediction -> 1; scale-invariant.
    """
    p, t = _check_pair(pred, true)
    return _safe_div(_rms_space(p - t), _rms_space(t))


def crmse(pred: object, true: object) -> np.ndarray:
    """Error of the conserved quantity (spatial mean), per sample, frame, channel.

    PDEBench ``err_CSV`` is ``sqrt(mean_batch (sum_space pred - sum_space true)^2) / n``; for a single
    sample that is ``|mean_space pred - mean_space true|``, which is what is returned here (samples
    are aggregated later by a plain mean, not PDEBench's RMS over the batch).

    Args:
        pred, true: ``[N, T, *spatial, C]``.

    Returns:
        ``[N, T, C]``.
    """
    p, t = _check_pair(pred, true)
    return np.abs(np.mean(p - t, axis=_spatial_axes(p)))


def brmse(pred: object, true: object) -> np.ndarray:
    """Boundary RMSE: RMS of the error over the first and last slice along every spatial axis.

    1D: sqrt((e[0]^2 + e[-1]^2) / 2). 2D: sqrt((sum_y e[0,:]^2 + e[-1,:]^2 + sum_x e[:,0]^2 + e[:,-1]^2)
    / (2*nx + 2*ny)) -- the 4 corner points enter twice, exactly as PDEBench's ``err_BD``.

    Args:
        pred, true: ``[N, T, *spatial, C]``.

    Returns:
        ``[N, T, C]``.
    """
    p, t = _check_pair(pred, true)
    e2 = (p - t) ** 2
    total = np.zeros(p.shape[:2] + p.shape[-1:], dtype=np.float64)
    count = 0
    for ax in _spatial_axes(p):
        for idx in (0, -1):
            face = np.take(e2, idx, axis=ax)  # [N, T, *(spatial minus ax), C]
            face_axes = tuple(range(2, face.ndim - 1))
            total += face.sum(axis=face_axes)
            count += int(np.prod([face.shape[a] for a in face_axes], dtype=np.int64))
    return np.sqrt(total / count)


def max_error(pred: object, true: object) -> np.ndarray:
    """Maximum absolute error over space: ``[N, T, *spatial, C] -> [N, T, C]``."""
    p, t = _check_pair(pred, true)
    return np.max(np.abs(p - t), axis=_spatial_axes(p))


def vrmse(pred: object, true: object) -> np.ndarray:
    """Variance-scaled RMSE (The Well): sqrt(mean_space e^2 / var_space true).

    Computed as ``rmse / std_space(true)`` (population std, ddof=0), so predicting the spatial mean of
    the truth scores exactly 1. A constant truth frame uses the :data:`EPS` floor on the std (The Well
    adds 1e-7 to the variance instead; identical for any non-degenerate field).

    Args:
        pred, true: ``[N, T, *spatial, C]``.

    Returns:
        ``[N, T, C]``.
    """
    p, t = _check_pair(pred, true)
    axes = _spatial_axes(t)
    std = np.sqrt(np.mean((t - t.mean(axis=axes, keepdims=True)) ** 2, axis=axes))
    return _safe_div(_rms_space(p - t), std)


# --------------------------------------------------------------------------------------------------
# Fourier-band error and spectrum
# --------------------------------------------------------------------------------------------------
def _shells(spatial_shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, int]:
    """Integer wavenumber shell index and one-sided weight for every FFT mode of a grid.

    Returns:
        shell: ``spatial_shape`` int array, ``floor(|k|)`` with integer wavenumbers
            ``k_i = fftfreq(n_i) * n_i`` (so a signal cos(2 pi k x) on [0,1) sits in shell k).
        weight: ``spatial_shape`` float array; 1 for self-conjugate modes (every component 0 or the
            Nyquist index), 1/2 otherwise. For a real field the modes k and -k carry the same power
            and always fall in the same shell, so the weighted sum equals the power in a
            non-redundant half spectrum -- in 1D exactly ``|rfft|^2`` mode by mode.
        s_max: ``min(n_i) // 2``; shells above it are incomplete "corner" shells (2D+) and are dropped.
    """
    ks = [np.fft.fftfreq(n) * n for n in spatial_shape]
    grids = np.meshgrid(*ks, indexing="ij")
    kmag = np.sqrt(sum(g * g for g in grids))
    # +1e-9 so that exact integer |k| computed through sqrt (e.g. sqrt(9+16)=5) never floors to 4
    shell = np.floor(kmag + 1e-9).astype(np.int64)
    self_conj = np.ones(spatial_shape, dtype=bool)
    for g, n in zip(grids, spatial_shape):
        is_sc = g == 0
        if n % 2 == 0:
            is_sc |= g == -(n // 2)  # fftfreq puts the Nyquist index at -n/2
        self_conj &= is_sc
    weight = np.where(self_conj, 1.0, 0.5)
    return shell, weight, min(spatial_shape) // 2


def _sum_into_shells(
    power: np.ndarray, shell: np.ndarray, weight: np.ndarray, s_max: int
) -> np.ndarray:
    """Weighted sum of ``power[..., n]`` (flattened modes) into shells ``0..s_max`` -> ``[..., s_max+1]``.

    Sort-and-``reduceat`` rather than a dense [n, S] one-hot matmul, so memory stays O(power) on
    large (e.g. 3D) grids. Every shell 0..s_max is non-empty (it contains the mode (s, 0, ...)),
    which ``reduceat`` needs.
    """
    flat_shell, flat_w = shell.reshape(-1), weight.reshape(-1)
    order = np.argsort(flat_shell, kind="stable")
    order = order[flat_shell[order] <= s_max]
    starts = np.searchsorted(flat_shell[order], np.arange(s_max + 1))
    return np.add.reduceat(power[..., order] * flat_w[order], starts, axis=-1)


def _band_items(
    bands: Mapping[str, tuple[float, float]] | Sequence[tuple[float, float]],
) -> list[tuple[str, float, float]]:
    """Normalise ``bands`` to ``[(name, lo, hi), ...]``.

    A sequence of 3 bands is named low/mid/high (the PDEBench bands); other sequences are named
    ``band{i}``.
    """
    if isinstance(bands, Mapping):
        return [(str(k), float(v[0]), float(v[1])) for k, v in bands.items()]
    items = list(bands)
    names = ["low", "mid", "high"] if len(items) == 3 else [f"band{i}" for i in range(len(items))]
    return [(nm, float(lo), float(hi)) for nm, (lo, hi) in zip(names, items)]


def frmse_bands(
    pred: object,
    true: object,
    bands: Mapping[str, tuple[float, float]] | Sequence[tuple[float, float]] = ((0, 4), (5, 12), (13, math.inf)),
) -> dict[str, np.ndarray]:
    """Fourier-space RMSE in wavenumber bands (PDEBench fRMSE), per sample, frame, channel.

    Exactly what is computed, with ``E = fftn(pred - true)`` over the spatial axes (unnormalised
    numpy FFT), ``n = prod(spatial shape)`` and integer wavenumbers ``k`` (cos(2 pi k x) on [0, 1)
    has k):

        F_s    = sqrt( sum_{modes with floor(|k|) = s} w_k |E_k|^2 ) / n     for s = 0 .. min(n_i)//2
        band   = mean over the shells s with lo <= s <= hi  of  F_s          (bounds inclusive)

    ``w_k`` is 1/2 for modes whose conjugate -k is a distinct mode (1 for k = 0 / Nyquist), i.e. the
    power of the non-redundant half spectrum. In 1D ``F_s = |rfft(e)_s| / n`` -- PDEBench's per-mode
    value for a batch of one (``sqrt(mean_batch |dF|^2) / nx * Lx`` with Lx = 1); a cosine error of
    amplitude A at wavenumber k gives F_k = A/2. The band value is the mean over shells (normalised by
    the number of shells in the band), like PDEBench's ``mean(_err_F[:, iLow:iHigh])``.

    Deliberate differences from PDEBench's code (documented, not copied):
      * Bands are inclusive integer ranges low 0..4, mid 5..12, high >= 13 (the published definition);
        PDEBench's slices are ``[0,4), [4,12), [12,end)``. Pass ``bands=((0, 3), (4, 11), (12, inf))``
        to reproduce those.
      * 2D/3D use the full spectrum (PDEBench's loop only visits kx, ky >= 0 and so misses modes
        such as (k, -k)); the one-sided weights keep the 1D and 2D scales identical. Shells go up to
        ``min(n_i)//2`` inclusive (PDEBench 2D stops one shell earlier; 1D rfft includes it).
      * Samples are aggregated later by a plain mean of these per-sample values, not RMS over batch.

    A band with no shell on this grid (e.g. high band with X = 16) is NaN.

    Args:
        pred, true: ``[N, T, *spatial, C]``.
        bands: ``{name: (lo, hi)}`` or a sequence of ``(lo, hi)`` (3 entries -> low/mid/high).

    Returns:
        ``{name: [N, T, C]}``.
    """
    p, t = _check_pair(pred, true)
    axes = _spatial_axes(p)
    spatial_shape = tuple(p.shape[a] for a in axes)
    n = int(np.prod(spatial_shape, dtype=np.int64))
    shell, weight, s_max = _shells(spatial_shape)

    # FFT is linear, so FFT(pred) - FFT(true) = FFT(pred - true): one transform instead of two.
    power = np.abs(np.fft.fftn(p - t, axes=axes)) ** 2  # [N, T, *spatial, C]
    # [N, T, C, n]: channel next to time, spatial modes flattened last, so shells reduce one axis
    power = np.moveaxis(power, -1, 2).reshape(p.shape[0], p.shape[1], p.shape[-1], n)
    shell_power = _sum_into_shells(power, shell, weight, s_max)  # [N, T, C, s_max + 1]
    f_s = np.sqrt(shell_power) / n

    out: dict[str, np.ndarray] = {}
    s = np.arange(s_max + 1)
    for name, lo, hi in _band_items(bands):
        sel = (s >= lo) & (s <= hi)
        if not sel.any():
            out[name] = np.full(p.shape[:2] + p.shape[-1:], np.nan)
        else:
            out[name] = f_s[..., sel].mean(axis=-1)
    return out


def energy_spectrum(u: object, spatial_dims: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Radial (shell-summed) energy spectrum, averaged over leading axes and channels.

    ``E(s) = 1/2 * sum_{modes with floor(|k|) = s} |fftn(u)_k / n|^2`` for integer shells
    ``s = 0 .. min(n_i)//2`` (corner modes beyond are dropped), then averaged over every leading axis
    and the channel axis. By Parseval ``sum_s E(s) = 1/2 mean_space u^2`` (exact in 1D; in 2D up to
    the dropped corners). A cosine of amplitude A at wavenumber k gives E(k) = A^2 / 4.

    Args:
        u: channels-last field ``[..., X, C]`` (1D) or ``[..., X, Y, C]`` (2D).
        spatial_dims: number of spatial axes just before C. If None it is inferred assuming the
            trajectory layout ``[N, T, *spatial, C]`` (ndim 4 -> 1, ndim 5 -> 2) or ``[X, C]``
            (ndim 2 -> 1); any other layout must pass it explicitly.

    Returns:
        ``(k, E)``: both ``[min(n_i)//2 + 1]``; ``k`` integer wavenumbers (float64).
    """
    a = _as_f64(u)
    if spatial_dims is None:
        if a.ndim in (4, 5):
            spatial_dims = a.ndim - 3
        elif a.ndim == 2:
            spatial_dims = 1
        else:
            raise ValueError(f"cannot infer spatial_dims for u.shape={a.shape}; pass spatial_dims")
    if spatial_dims < 1 or a.ndim < spatial_dims + 1:
        raise ValueError(f"u.shape={a.shape} has no room for {spatial_dims} spatial axes + channel")
    axes = tuple(range(a.ndim - 1 - spatial_dims, a.ndim - 1))
    spatial_shape = tuple(a.shape[ax] for ax in axes)
    n = int(np.prod(spatial_shape, dtype=np.int64))
    shell, _, s_max = _shells(spatial_shape)

    power = np.abs(np.fft.fftn(a, axes=axes) / n) ** 2
    # average over leading axes and channels first (linear), then bin: cheaper than binning each field
    lead = tuple(i for i in range(a.ndim) if i not in axes)
    mean_power = power.mean(axis=lead)  # spatial_shape
    flat_shell = shell.reshape(-1)
    keep = flat_shell <= s_max
    e = 0.5 * np.bincount(flat_shell[keep], weights=mean_power.reshape(-1)[keep], minlength=s_max + 1)
    return np.arange(s_max + 1, dtype=np.float64), e


# --------------------------------------------------------------------------------------------------
# correlation
# --------------------------------------------------------------------------------------------------
def correlation(pred: object, true: object) -> np.ndarray:
    """Pearson correlation between pred and true over all spatial points AND channels, per frame.

    ``r = sum (p - p_bar)(t - t_bar) / sqrt(sum (p - p_bar)^2 * sum (t - t_bar)^2)`` with means taken
    over space and channels of one frame. If either field is constant the denominator is floored at
    :data:`EPS`, giving r = 0 (a constant prediction carries no pattern information).

    Args:
        pred, true: ``[N, T, *spatial, C]``.

    Returns:
        ``[N, T]``.
    """
    p, t = _check_pair(pred, true)
    p = p.reshape(p.shape[0], p.shape[1], -1)
    t = t.reshape(t.shape[0], t.shape[1], -1)
    pc = p - p.mean(axis=-1, keepdims=True)
    tc = t - t.mean(axis=-1, keepdims=True)
    num = np.sum(pc * tc, axis=-1)
    # normalise by the point count inside the root so EPS acts on an RMS-sized quantity
    m = p.shape[-1]
    den = np.sqrt(np.sum(pc * pc, axis=-1) / m) * np.sqrt(np.sum(tc * tc, axis=-1) / m)
    return _safe_div(num / m, den)


def steps_above_correlation(pred: object, true: object, threshold: float) -> np.ndarray:
    """Number of leading frames whose correlation is strictly above ``threshold``, per sample.

    The count stops at the first frame with ``r <= threshold`` (later recoveries do not count),
    so the value is the length of the initial run, in ``0 .. T``.

    Args:
        pred, true: ``[N, T, *spatial, C]``.
        threshold: e.g. 0.8 or 0.95.

    Returns:
        ``[N]`` int64.
    """
    above = correlation(pred, true) > threshold  # [N, T]
    # cumprod turns the boolean sequence into 1s until the first False, 0s after
    return np.cumprod(above, axis=1).sum(axis=1).astype(np.int64)


# --------------------------------------------------------------------------------------------------
# aggregation
# --------------------------------------------------------------------------------------------------
def nrmse_by_horizon(pred: object, true: object) -> np.ndarray:
    """Mean nRMSE per rolled-out frame (plain mean over samples and channels).

    Returns:
        ``[T]``; index 0 is the first rolled-out frame (horizon 1).
    """
    return nrmse(pred, true).mean(axis=(0, 2))


def summarise(
    pred: object,
    true: object,
    horizons: Sequence[int | str] = (1, 5, 10, "last"),
    corr_thresholds: Sequence[float] = (0.8, 0.95),
) -> dict[str, float]:
    """Scalar summary of a rollout, for logging.

    All values are plain means over samples, channels and frames of the ``[N, T, C]`` metrics above
    (NOT PDEBench's batch-sum / (n_batches - 1) normalisation, which inflates values by n/(n-1)).
    ``nrmse`` is the per-frame ("spatial-norm") nRMSE averaged over frames, not the Frobenius
    space-time-norm variant (which runs ~15-20 % higher).

    Keys:
        ``nrmse``; ``nrmse_h{h}`` for each integer horizon h (h-th rolled-out frame, 1-based, i.e.
        frame index h-1; skipped if h > T); ``nrmse_last`` (frame T); ``rmse``; ``crmse``; ``brmse``;
        ``frmse_low`` / ``frmse_mid`` / ``frmse_high`` (NaN if the grid has no shell in a band);
        ``max_error`` (max over everything, not a mean); ``corr_steps_{thr}`` (mean over samples of
        :func:`steps_above_correlation`, e.g. ``corr_steps_0.8``); ``vrmse``.

    Args:
        pred, true: ``[N, T, *spatial, C]`` with the given frames already excluded.
        horizons: positive ints and/or ``"last"``.
        corr_thresholds: thresholds for the ``corr_steps_*`` keys.

    Returns:
        ``dict[str, float]``.
    """
    p, t = _check_pair(pred, true)  # cast once; the metric functions then reuse the float64 arrays
    n_frames = p.shape[1]
    per_frame = nrmse(p, t)  # [N, T, C]
    by_h = per_frame.mean(axis=(0, 2))  # [T]

    out: dict[str, float] = {"nrmse": float(per_frame.mean())}
    for h in horizons:
        if h == "last":
            out["nrmse_last"] = float(by_h[-1])
        elif isinstance(h, (int, np.integer)) and not isinstance(h, bool) and h >= 1:
            if h <= n_frames:
                out[f"nrmse_h{int(h)}"] = float(by_h[h - 1])
        else:
            raise ValueError(f"horizon must be a positive int or 'last', got {h!r}")
    out["rmse"] = float(rmse(p, t).mean())
    out["crmse"] = float(crmse(p, t).mean())
    out["brmse"] = float(brmse(p, t).mean())
    for name, val in frmse_bands(p, t).items():
        out[f"frmse_{name}"] = float(val.mean())
    out["max_error"] = float(np.max(np.abs(p - t)))
    for thr in corr_thresholds:
        out[f"corr_steps_{thr}"] = float(steps_above_correlation(p, t, thr).mean())
    out["vrmse"] = float(vrmse(p, t).mean())
    return out
