"""Exponential moving average of model weights, on ``torch.optim.swa_utils.AveragedModel``.

Update rule (``n`` = number of updates already folded in, AveragedModel's ``n_averaged``):

* update 1 (``n = 0``): the EMA copies the weights (AveragedModel semantics), so the random
  initialisation is never part of the average;
* update ``n + 1`` (``n ≥ 1``): ``ema ← d·ema + (1 − d)·θ`` with
  ``d = min(ema_decay, (1 + n) / (10 + n))`` when warm-up is on, else ``d = ema_decay``.

So the second update uses ``d = 2/11``, the tenth ``10/19``, and ``d`` reaches 0.999 only after
about 9000 updates: early EMA weights follow the fast-moving model instead of freezing near
the first steps.  Buffers (e.g. normalisation statistics) are averaged the same way so the
EMA module is self-contained; integer buffers are copied.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel


def warmup_decay(ema_decay: float, n_averaged: int, warmup: bool = True) -> float:
    """Decay applied when folding in an update after ``n_averaged`` (≥ 1) earlier ones."""
    if not warmup:
        return ema_decay
    return min(ema_decay, (1.0 + n_averaged) / (10.0 + n_averaged))


def _make_multi_avg_fn(ema_decay: float, warmup: bool):
    """A ``multi_avg_fn`` for AveragedModel implementing :func:`warmup_decay`."""

    @torch.no_grad()
    def update(ema_params: list[Tensor], params: list[Tensor], n_averaged: Tensor | int) -> None:
        decay = warmup_decay(ema_decay, int(n_averaged), warmup)
        if torch.is_floating_point(ema_params[0]) or torch.is_complex(ema_params[0]):
            # lerp(ema, θ, 1−d) = ema + (1−d)(θ − ema) = d·ema + (1−d)·θ, in one fused pass.
            torch._foreach_lerp_(ema_params, params, 1.0 - decay)
        else:
            # Integer buffers (e.g. BatchNorm's num_batches_tracked) cannot be averaged.
            for ema_p, p in zip(ema_params, params, strict=True):
                ema_p.copy_(p)

    return update


def create_ema(model: nn.Module, ema_decay: float, warmup: bool = True) -> AveragedModel:
    """An EMA of ``model`` (a deep copy on the same device, kept in eval mode)."""
    ema = AveragedModel(
        model, multi_avg_fn=_make_multi_avg_fn(ema_decay, warmup), use_buffers=True
    )
    ema.eval()
    # The copy never trains; freezing it keeps it out of autograd.
    for p in ema.parameters():
        p.requires_grad_(False)
    return ema


def ema_module(ema: AveragedModel) -> nn.Module:
    """The averaged network itself (same class and state-dict keys as the trained model)."""
    return ema.module


def ema_state(ema: AveragedModel) -> dict[str, Any]:
    """Full EMA state for resume: the averaged weights plus the update count."""
    return {"module": ema.module.state_dict(), "n_averaged": int(ema.n_averaged.item())}


def load_ema_state(ema: AveragedModel, state: dict[str, Any]) -> None:
    """Restore what :func:`ema_state` returned."""
    ema.module.load_state_dict(state["module"])
    ema.n_averaged.fill_(int(state["n_averaged"]))
