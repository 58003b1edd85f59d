"""The autoencoder stage's losses (the original's "inverse" losses, made to train something).

* ``inv_enc`` — reconstruction: MSE(decode(encode(u)), u), in normalised units;
* ``inv_dec`` — latent consistency: MSE(encode(decode(z)), z) with z = encode(u) held fixed
  as the target, so a decoded latent re-encodes to itself (the operator's predictions then stay
  on the latent manifold the decoder understands).

With ``loss.relative_floor`` set, ``inv_enc`` is instead the per-sample *relative* squared error
``‖û−u‖² / (‖u‖² + floor²·n)`` (normalised units, ``n`` values per sample), batch-averaged: the
metric every stage is scored by (per-frame nRMSE) divides by the frame's norm, so decayed,
small-amplitude frames count as much as energetic ones; a plain MSE neglects them (1D Burgers:
late frames' nRMSE was 3-5x the early frames').

Validation also reports ``recon_nrmse``: PDEBench's per-frame nRMSE of the reconstruction in
physical (de-normalised) units — the floor under every later stage's error.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from ups_kedro.training.config import AutoencoderLossConfig
from ups_kedro.training.losses import mse, relative_mse


def physical_nrmse(pred: Tensor, true: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """Mean over samples and channels of ‖pred−true‖/‖true‖ over space, in physical units.

    Args:
        pred, true: [B, *space, C] normalised fields; mean, std: [C].
    """
    p, t = pred * std + mean, true * std + mean
    dims = tuple(range(1, pred.ndim - 1))
    err = torch.linalg.vector_norm(p - t, dim=dims)
    ref = torch.linalg.vector_norm(t, dim=dims).clamp_min(1e-12)
    return (err / ref).mean()


class AutoencoderTask:
    """``StageTask`` for :class:`~ups_kedro.models.autoencoder.Autoencoder` on ``{"u": [B, *space, C]}``."""

    def __init__(self, loss: AutoencoderLossConfig, mean: Tensor, std: Tensor) -> None:
        self.loss, self.mean, self.std = loss, mean, std

    def _losses(self, model: nn.Module, u: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        z = model.encode(u)
        u_hat = model.decode(z)
        floor = self.loss.relative_floor
        inv_enc = mse(u_hat, u) if floor is None else relative_mse(u_hat, u, floor)
        if self.loss.lambda_inv_dec > 0:
            inv_dec = mse(model.encode(u_hat), z.detach())
        else:
            inv_dec = torch.zeros((), device=u.device)
        total = self.loss.lambda_inv_enc * inv_enc + self.loss.lambda_inv_dec * inv_dec
        return total, inv_enc, inv_dec, u_hat

    def training_loss(self, model: nn.Module, batch: dict[str, Tensor], epoch: int
                      ) -> tuple[Tensor, dict[str, float]]:
        total, inv_enc, inv_dec, _ = self._losses(model, batch["u"])
        return total, {"inv_enc": inv_enc.item(), "inv_dec": inv_dec.item()}

    def validation_loss(self, model: nn.Module, batch: dict[str, Tensor]
                        ) -> tuple[Tensor, dict[str, float]]:
        u = batch["u"]
        total, inv_enc, inv_dec, u_hat = self._losses(model, u)
        nrmse = physical_nrmse(u_hat.float(), u.float(), self.mean.to(u.device), self.std.to(u.device))
        return total, {"inv_enc": inv_enc.item(), "inv_dec": inv_dec.item(),
                       "recon_nrmse": nrmse.item()}
