"""Model kinds -> (config dataclass, module class), so a checkpoint can rebuild its module.

A checkpoint stores ``{"kind": model_kind(m), "config": model_config(m), ...}``;
``build_model(kind, config)`` rebuilds the same architecture.  Config dicts are parsed strictly
by :func:`ups_kedro.config.parse`: unknown or missing keys raise ``ValueError`` naming them, and
YAML/JSON lists become tuples.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from torch import nn

from ups_kedro.config import ConfigError, parse, to_dict
from ups_kedro.models.autoencoder import Autoencoder
from ups_kedro.models.autoencoder_config import (
    AnyPointDecoderConfig,
    AutoencoderConfig,
    GridEncoderConfig,
)
from ups_kedro.models.corrector import RolloutCorrector
from ups_kedro.models.corrector_config import DiffusionResidualConfig, RolloutCorrectorConfig
from ups_kedro.models.decoder import AnyPointDecoder
from ups_kedro.models.diffusion_residual import DiffusionResidual
from ups_kedro.models.encoder import GridEncoder
from ups_kedro.models.operator import LatentOperator
from ups_kedro.models.operator_config import LatentOperatorConfig
from ups_kedro.models.steady_prior import SteadyPrior
from ups_kedro.models.steady_prior_config import SteadyPriorConfig

MODEL_KINDS: dict[str, tuple[type, type[nn.Module]]] = {
    "grid_encoder": (GridEncoderConfig, GridEncoder),
    "any_point_decoder": (AnyPointDecoderConfig, AnyPointDecoder),
    "latent_operator": (LatentOperatorConfig, LatentOperator),
    "autoencoder": (AutoencoderConfig, Autoencoder),
    # Stage 2 teacher and Stage 3 student share the class; config.parameterisation tells them apart.
    "diffusion_residual": (DiffusionResidualConfig, DiffusionResidual),
    "steady_prior": (SteadyPriorConfig, SteadyPrior),
    # Stage 2 default (and its Stage 3 student): corrector trained through its own rollout.
    "rollout_corrector": (RolloutCorrectorConfig, RolloutCorrector),
}


def _kind_entry(kind: str) -> tuple[type, type[nn.Module]]:
    if kind not in MODEL_KINDS:
        known = ", ".join(sorted(MODEL_KINDS))
        raise ValueError(f"unknown model kind {kind!r}; known kinds: {known}")
    return MODEL_KINDS[kind]


def build_config(kind: str, config: Mapping[str, Any] | Any) -> Any:
    """Mapping (or an already-built config dataclass) -> validated config dataclass of ``kind``."""
    cfg_cls, _ = _kind_entry(kind)
    if isinstance(config, cfg_cls):
        config.validate()
    elif dataclasses.is_dataclass(config):
        raise ValueError(
            f"model kind {kind!r} takes a {cfg_cls.__name__}, got {type(config).__name__}"
        )
    else:
        config = parse(cfg_cls, config, kind)
    unset = _unset_sizes(config, kind)
    if unset:
        raise ConfigError(f"{', '.join(unset)} not set: they follow the data (a stage fills "
                          "them in with ups_kedro.config.follow_data)")
    return config


def _unset_sizes(config: Any, where: str) -> list[str]:
    """Key paths of the ``FOLLOWS_DATA`` sizes still ``None`` in ``config`` and its parts."""
    unset = [f"{where}.{n}" for n in getattr(config, "FOLLOWS_DATA", ())
             if getattr(config, n) is None]
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            unset += _unset_sizes(value, f"{where}.{f.name}")
    return unset


def build_model(kind: str, config: Mapping[str, Any] | Any) -> nn.Module:
    """Build a freshly initialised module of ``kind`` from its config dict (or dataclass)."""
    _, module_cls = _kind_entry(kind)
    return module_cls(build_config(kind, config))


def model_kind(module: nn.Module) -> str:
    """The registry kind of ``module`` (unwraps ``torch.compile``'s ``_orig_mod``)."""
    module = getattr(module, "_orig_mod", module)
    for kind, (_, module_cls) in MODEL_KINDS.items():
        if type(module) is module_cls:
            return kind
    raise ValueError(f"{type(module).__name__} is not a registered model kind")


def model_config(module: nn.Module) -> dict[str, Any]:
    """The plain dict a checkpoint stores beside the weights.

    ``dataclasses.asdict(module.cfg)`` with tuples as lists, so it is also valid JSON/YAML
    (``yaml.safe_dump`` rejects tuples); :func:`build_model` turns the lists back into tuples.
    """
    module = getattr(module, "_orig_mod", module)
    return to_dict(module.cfg)


__all__ = ["MODEL_KINDS", "build_config", "build_model", "model_config", "model_kind"]
