"""Self-describing checkpoint dicts: build them from a fit, rebuild modules from them.

A checkpoint is ``{"kind", "config", "state_dict", "ema_state_dict", "normaliser", "lineage",
"metrics", "train_config"}`` with plain values and tensors only, so it loads with
``torch.load(weights_only=True)`` and never needs the code that trained it to be importable
beyond the model registry.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch
from torch import nn

from ups_kedro.config import to_dict
from ups_kedro.models.registry import build_model, model_config, model_kind
from ups_kedro.training.task import FitResult


def make_checkpoint(
    model: nn.Module,
    result: FitResult,
    *,
    train_config: Any,
    lineage: dict[str, Any],
    normaliser: dict | None = None,
    metrics: dict[str, float] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The checkpoint dict of a finished :func:`~ups_kedro.training.launcher.fit`."""
    return {
        "kind": model_kind(model),
        "config": model_config(model),
        "state_dict": result.model_state,
        "ema_state_dict": result.ema_state,
        "normaliser": normaliser,
        "lineage": lineage,
        "metrics": {"best_epoch": result.best_epoch, "best_val_loss": result.best_val_loss,
                    "epochs_run": result.epochs_run, **(metrics or {})},
        "stopped_reason": result.stopped_reason,
        "train_config": to_dict(train_config),
        **(extra or {}),
    }


def load_module(ckpt: dict[str, Any], prefer_ema: bool = True) -> nn.Module:
    """Rebuild the module of a checkpoint in eval mode (EMA weights when present and preferred).

    EMA weights are what validation selected on when EMA was enabled, so they are the default.
    """
    model = build_model(ckpt["kind"], ckpt["config"])
    ema = ckpt.get("ema_state_dict")
    model.load_state_dict(ema if (prefer_ema and ema is not None) else ckpt["state_dict"])
    return model.eval()


def module_hash(module: nn.Module) -> str:
    """sha256 (16 hex) of a module's config and weights: the identity of an encoder.

    Latent tensors record this hash; a stage given latents from another encoder refuses them.
    """
    digest = hashlib.sha256()
    try:
        digest.update(json.dumps(model_config(module), sort_keys=True, default=str).encode())
    except (AttributeError, ValueError):
        digest.update(type(module).__name__.encode())
    for name, tensor in sorted(module.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def freeze(module: nn.Module) -> nn.Module:
    """Eval mode and ``requires_grad=False`` for every parameter (a frozen teacher/decoder)."""
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    return module


@torch.no_grad()
def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
