"""TrainConfig validation and parsing from a parameters mapping."""

from __future__ import annotations

import pytest

from ups_kedro.config import ConfigError, parse
from ups_kedro.training.config import OptimizerConfig, SchedulerConfig, TrainConfig


def test_defaults_validate() -> None:
    TrainConfig(epochs=1, batch_size=1).validate("operator.train")


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
