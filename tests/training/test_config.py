"""TrainConfig validation and parsing from a parameters mapping."""

from __future__ import annotations

import pytest

from ups_kedro.config import ConfigError, parse, to_dict
from ups_kedro.training.config import OptimizerConfig, SchedulerConfig, TrainConfig
from ups_kedro.training.seeds import base_seed, derive_seed


def test_defaults_validate() -> None:
    """The defaults pass every bound, validate() fills in the derived seed, and a config built
    in code equals the parsed one (one set of checks for both)."""
    cfg = TrainConfig(epochs=1, batch_size=1)
    assert cfg.seed is None
    cfg.validate("operator.train")
    assert cfg.seed == derive_seed(base_seed(), "operator")
    assert cfg == parse(TrainConfig, {"epochs": 1, "batch_size": 1}, "operator.train")
    assert to_dict(cfg)["optimizer"] == {"name": "adamw", "lr": 1e-3, "weight_decay": 0.0,
                                         "betas": [0.9, 0.999], "momentum": 0.9}


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"accum_steps": 0}, "operator.train.accum_steps must be ≥ 1, got 0"),
        ({"batch_size": 0}, "operator.train.batch_size must be ≥ 1, got 0"),
        ({"grad_clip": 0.0}, "operator.train.grad_clip must be > 0 or null"),
        ({"ema_decay": 1.0}, "operator.train.ema_decay must be in (0, 1)"),
        ({"patience": 0}, "operator.train.patience must be ≥ 1"),
        ({"device": "tpu"}, "operator.train.device must be"),
        ({"optimizer": OptimizerConfig(lr=0.0)}, "operator.train.optimizer.lr must be > 0"),
        (
            {"scheduler": SchedulerConfig(name="bogus")},  # type: ignore[arg-type]
            "operator.train.scheduler.name must be one of",
        ),
    ],
)
def test_validate_names_the_field(overrides: dict, message: str) -> None:
    cfg = TrainConfig(**{"epochs": 1, "batch_size": 1, **overrides})
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        cfg.validate("operator.train")


def test_parse_from_parameters() -> None:
    cfg = parse(
        TrainConfig,
        {"epochs": 3, "batch_size": 4, "optimizer": {"name": "adam", "betas": [0.8, 0.9]}},
        "operator.train",
    )
    assert cfg.optimizer.betas == (0.8, 0.9)
    assert cfg.scheduler.name == "none"
    with pytest.raises(ConfigError, match="operator.train.accum_steps must be ≥ 1"):
        parse(TrainConfig, {"epochs": 3, "batch_size": 4, "accum_steps": 0}, "operator.train")
    with pytest.raises(ConfigError, match="operator.train"):
        parse(TrainConfig, {"epochs": 3, "batch_size": 4, "acum_steps": 2}, "operator.train")
