"""Strict parameter parsing: typos, wrong types and inconsistent pairs fail with the key named."""

from __future__ import annotations

import pytest

from ups_kedro.config import ConfigError, parse, to_dict
from ups_kedro.data.config import DataProcessingConfig


def test_defaults_parse() -> None:
    cfg = parse(DataProcessingConfig, {}, "data_processing")
    assert cfg.builtin.system == "burgers"
    assert to_dict(cfg)["split"]["val_fraction"] == 0.1


def test_unknown_key_names_path_and_suggests() -> None:
    with pytest.raises(ConfigError, match=r"data_processing\.split\.val_fractoin.*val_fraction"):
        parse(DataProcessingConfig, {"split": {"val_fractoin": 0.2}}, "data_processing")


def test_wrong_type_names_key() -> None:
    with pytest.raises(ConfigError, match=r"data_processing\.downsample_space must be an integer"):
        parse(DataProcessingConfig, {"downsample_space": "4"}, "data_processing")
    with pytest.raises(ConfigError, match=r"data_processing\.builtin\.n_samples"):
        parse(DataProcessingConfig, {"builtin": {"n_samples": 2.5}}, "data_processing")


def test_bool_is_not_an_int() -> None:
    with pytest.raises(ConfigError, match="must be an integer"):
        parse(DataProcessingConfig, {"initial_step": True}, "data_processing")


def test_literal_choice_suggests() -> None:
    with pytest.raises(ConfigError, match=r"'burger'.*did you mean 'burgers'"):
        parse(DataProcessingConfig, {"builtin": {"system": "burger"}}, "data_processing")


def test_inconsistent_pair() -> None:
    with pytest.raises(ConfigError, match=r"dp\.split\.val_fraction \+ dp\.split\.test_fraction"):
        parse(DataProcessingConfig, {"split": {"val_fraction": 0.5, "test_fraction": 0.5}}, "dp")
    with pytest.raises(ConfigError, match=r"file\.path is required"):
        parse(DataProcessingConfig, {"source": "file"}, "data_processing")


def test_nested_mapping_required() -> None:
    with pytest.raises(ConfigError, match=r"data_processing\.split must be a mapping"):
        parse(DataProcessingConfig, {"split": 3}, "data_processing")
