"""Loss helpers shared by the stages.

Shapes: ``B`` is the batch (first) axis; ``...`` any further axes (tokens, channels, space).
All losses return a 0-d tensor and are differentiable in ``pred``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def mse(pred: Tensor, target: Tensor) -> Tensor:
    """Mean squared error over every element.  ``pred``, ``target``: same shape ``[B, ...]``."""
    if pred.shape != target.shape:
        raise ValueError(
            f"mse: shapes differ, pred {tuple(pred.shape)} vs target {tuple(target.shape)}"
        )
    return F.mse_loss(pred, target)


def relative_mse(pred: Tensor, target: Tensor, floor: float, origin: Tensor | None = None
                 ) -> Tensor:
    """Per-sample squared error relative to the target's energy, then the batch mean.

    ``mean(|pred − target|²) / (mean(|target − origin|²) + floor²)`` per sample (means over the
    non-batch elements), so the loss weighs samples the way a per-sample nRMSE does; ``floor``
    (an RMS, in the tensors' units) bounds the weight of near-zero targets.  ``origin``
    (broadcastable to ``target``, default 0) is the value that means "no signal", e.g. the
    latent of an all-zero field.  ``pred``, ``target``: ``[B, ...]``.
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"relative_mse: shapes differ, pred {tuple(pred.shape)} vs target {tuple(target.shape)}"
        )
    ref = target if origin is None else target - origin
    err = (pred - target).float().square().flatten(1).mean(1)  # [B]
    energy = ref.float().square().flatten(1).mean(1)  # [B]
    return (err / (energy + floor**2)).mean()


def relative_l2(pred: Tensor, target: Tensor, eps: float = 1e-12) -> Tensor:
    """Per-sample relative L2 error ``‖pred − target‖₂ / ‖target‖₂``, then the batch mean.

    This is PDEBench's nRMSE for one sample (the RMS factors cancel).  ``pred``, ``target``:
    ``[B, ...]``; each sample's norm runs over all its non-batch elements.  ``eps`` guards an
    all-zero target.
    """
    if pred.shape != target.shape:
        raise ValueError(
            f"relative_l2: shapes differ, pred {tuple(pred.shape)} vs target {tuple(target.shape)}"
        )
    diff = (pred - target).flatten(1).float()
    ref = target.flatten(1).float()
    per_sample = diff.norm(dim=1) / (ref.norm(dim=1) + eps)  # [B]
    return per_sample.mean()


def energy_spectrum(x: Tensor, dim: int) -> Tensor:
    """Fourier energy per mode along ``dim``, averaged over every other non-batch axis.

    ``x``: ``[B, ...]`` with ``dim`` ≠ 0 → ``[B, N//2 + 1]``.  Computed in float32 because FFTs
    are not supported (or not accurate) in bf16 under autocast.
    """
    dim = dim % x.ndim
    if dim == 0:
        raise ValueError("energy_spectrum: dim must not be the batch axis 0")
    spec = torch.fft.rfft(x.float(), dim=dim, norm="ortho").abs().square()
    spec = spec.movedim(dim, -1)  # [B, ..., K]
    return spec.flatten(1, -2).mean(dim=1) if spec.ndim > 2 else spec


def spectral_energy_loss(pred: Tensor, target: Tensor, dim: int = 1, eps: float = 1e-12) -> Tensor:
    """Normalised difference of the energy spectra along the token/space axis ``dim``.

    Per sample: ``Σ_k |E_pred(k) − E_target(k)| / Σ_k E_target(k)`` with ``E`` from
    :func:`energy_spectrum`, then the batch mean.  Zero iff the spectra agree; unlike the
    original's comparison of total energy, a misplaced energy between modes is penalised.
    ``pred``, ``target``: ``[B, ...]``, e.g. latent tokens ``[B, tokens, dim]`` with ``dim=1``.
    """
    if pred.shape != target.shape:
        raise ValueError(
            "spectral_energy_loss: shapes differ, "
            f"pred {tuple(pred.shape)} vs target {tuple(target.shape)}"
        )
    e_pred = energy_spectrum(pred, dim)  # [B, K]
    e_tgt = energy_spectrum(target, dim)  # [B, K]
    per_sample = (e_pred - e_tgt).abs().sum(dim=1) / (e_tgt.sum(dim=1) + eps)
    return per_sample.mean()


def inverse_loss_weight(
    epoch: int, warmup_epochs: int, max_weight: float, base_weight: float
) -> float:
    """The original's curriculum for the inverse (reconstruction) loss weights.

    ``epoch`` is 1-based as passed by :func:`ups_kedro.training.launcher.fit`.  With
    ``W = warmup_epochs`` and ``e = epoch − 1`` (the original's 0-based index):

    * ``e < W``: 0 (forward loss only, while the networks are poorly conditioned);
    * ``W ≤ e < 2W``: ``min(base_weight · (e − W) / W, max_weight)`` (linear ramp);
    * ``e ≥ 2W``: ``min(base_weight, max_weight)``.
    """
    if epoch < 1:
        raise ValueError(f"inverse_loss_weight: epoch is 1-based, got {epoch}")
    e = epoch - 1
    if e < warmup_epochs:
        return 0.0
    if e < 2 * warmup_epochs:
        return min(base_weight * (e - warmup_epochs) / warmup_epochs, max_weight)
    return min(base_weight, max_weight)
