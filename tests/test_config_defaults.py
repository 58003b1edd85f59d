"""One source of defaults, bounds declared once, stage configs importable on their own.

* ``conf/base`` names only deliberate choices: a key whose value equals what the parser would
  fill in without it fails here, unless it is listed in :data:`LISTED_ON_PURPOSE` (policy and
  reasons: ``conf/README.md``).
* Field bounds are checked by the parser with the full key path, once per level.
* Every ``pipelines/<stage>/config.py`` imports without Kedro, MLflow or torch.
"""

from __future__ import annotations

import copy
import dataclasses
import fnmatch
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import yaml

import ups_kedro
from tests.conftest import REPO
from ups_kedro.config import Checked, ConfigError, bounded, follow_data, parse, to_dict
from ups_kedro.data.config import DataProcessingConfig
from ups_kedro.pipelines.autoencoder.config import AutoencoderStageConfig
from ups_kedro.pipelines.consistency_distill.config import ConsistencyDistillStageConfig
from ups_kedro.pipelines.diff_residual.config import DiffResidualStageConfig
from ups_kedro.pipelines.evaluation.config import EvaluationConfig
from ups_kedro.pipelines.inference.config import InferenceConfig
from ups_kedro.pipelines.operator.config import OperatorStageConfig
from ups_kedro.pipelines.promotion.config import PromotionConfig
from ups_kedro.pipelines.steady_prior.config import SteadyPriorStageConfig
from ups_kedro.training.config import TrainConfig

STAGES = {
    "data_processing": DataProcessingConfig, "autoencoder": AutoencoderStageConfig,
    "operator": OperatorStageConfig, "diff_residual": DiffResidualStageConfig,
    "consistency_distill": ConsistencyDistillStageConfig, "steady_prior": SteadyPriorStageConfig,
    "evaluation": EvaluationConfig, "promotion": PromotionConfig, "inference": InferenceConfig,
}

#: Keys that conf/base states although they equal the default (conf/README.md, "Defaults").
LISTED_ON_PURPOSE = (
    # Switches: which branch of the code runs, visible without reading it.
    "data_processing.source", "data_processing.builtin.system",
    "data_processing.steady.enabled", "data_processing.steady.source",
    "diff_residual.method", "diff_residual.corrector.model.kind",
    "evaluation.split", "promotion.variant", "inference.mode", "inference.source",
    # The PDEBench protocol every metric follows.
    "data_processing.downsample_space", "data_processing.downsample_time",
    "data_processing.initial_step",
    # The latent layout every later stage follows.
    "autoencoder.latent.*",
    # Every stage states its learning rate (the most tuned number of all).
    "*.train.optimizer.lr",
)

#: Stage packages whose config must not import torch (evaluation/promotion/inference take
#: their variant options from ups_kedro.evaluation.suite, which builds the torch surrogate).
TORCH_FREE = ("autoencoder", "operator", "diff_residual", "consistency_distill", "steady_prior")


def _leaves(mapping: dict, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for key, value in mapping.items():
        if isinstance(value, dict) and value:
            yield from _leaves(value, (*prefix, key))
        else:
            yield (*prefix, key)


def _without(mapping: dict, path: tuple[str, ...]) -> dict:
    out = copy.deepcopy(mapping)
    parent = out
    for key in path[:-1]:
        parent = parent[key]
    del parent[path[-1]]
    return out


def _restated_defaults(stage: str, cls: type, raw: dict) -> list[str]:
    """Key paths of ``raw`` whose removal leaves the parsed config unchanged."""
    full = to_dict(parse(cls, raw, stage))
    restated = []
    for path in _leaves(raw):
        try:
            same = to_dict(parse(cls, _without(raw, path), stage)) == full
        except ConfigError:  # a required key
            same = False
        if same:
            restated.append(".".join((stage, *path)))
    return restated


@pytest.mark.parametrize("stage", list(STAGES))
def test_conf_base_names_only_deliberate_choices(stage: str) -> None:
    """Raw YAML (interpolations unresolved: a `${globals:...}` path is a choice by itself)."""
    raw = yaml.safe_load((REPO / "conf" / "base" / f"parameters_{stage}.yml").read_text())
    restated = [key for key in _restated_defaults(stage, STAGES[stage], raw[stage])
                if not any(fnmatch.fnmatchcase(key, pat) for pat in LISTED_ON_PURPOSE)]
    assert not restated, (
        f"conf/base/parameters_{stage}.yml restates the dataclass default of {restated}: remove "
        "these keys (the default is documented at the field), or list them in "
        "LISTED_ON_PURPOSE with a reason (conf/README.md)")


def test_the_policy_check_catches_a_restated_default() -> None:
    raw = {"train": {"epochs": 1, "batch_size": 8, "optimizer": {"weight_decay": 0.0}},
           "encoder": {"patch_size": 8, "stem_hidden": 8}, "decoder": {"hidden_dim": 8},
           "val_frame_stride": 2}
    assert _restated_defaults("autoencoder", AutoencoderStageConfig, raw) == [
        "autoencoder.train.optimizer.weight_decay"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"optimizer": {"lr": -1}}, "operator.train.optimizer.lr must be > 0, got -1.0"),
        ({"optimizer": {"lr": float("nan")}}, "operator.train.optimizer.lr must be > 0, got nan"),
        ({"optimizer": {"betas": [0.9, 1.0]}},
         r"operator.train.optimizer.betas entries must each be in \[0, 1\), got \(0.9, 1.0\)"),
        ({"ema_decay": 1.0}, r"operator.train.ema_decay must be in \(0, 1\) or null, got 1.0"),
        ({"distributed": {"master_port": 70000}},
         r"operator.train.distributed.master_port must be in \[0, 65535\] \(0: any free port\)"),
        ({"scheduler": {"name": "cosine"}}, "operator.train.scheduler.name = 'cosine' is not one"),
    ],
)
def test_declared_bounds_are_enforced_by_the_parser(values: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse(TrainConfig, {"epochs": 1, "batch_size": 8, **values}, "operator.train")


def test_model_block_bounds_name_the_stage_key() -> None:
    raw = yaml.safe_load((REPO / "conf" / "base" / "parameters_operator.yml").read_text())
    raw["operator"]["model"]["dropout"] = 1.0
    with pytest.raises(ConfigError, match=r"operator\.model\.dropout must be in \[0, 1\), got 1"):
        parse(OperatorStageConfig, raw["operator"], "operator")


@dataclasses.dataclass(frozen=True)
class _Inner(Checked):
    calls: ClassVar[list[str]] = []
    n: int = bounded(1, ge=1)

    def check(self, where: str) -> None:
        self.calls.append(where)


@dataclasses.dataclass(frozen=True)
class _Outer(Checked):
    calls: ClassVar[list[str]] = []
    inner: _Inner = dataclasses.field(default_factory=_Inner)
    other: _Inner = dataclasses.field(default_factory=_Inner)

    def check(self, where: str) -> None:
        self.calls.append(where)


def test_each_level_is_checked_exactly_once() -> None:
    _Inner.calls.clear()
    _Outer.calls.clear()
    parse(_Outer, {"inner": {"n": 2}}, "x")  # `other` is defaulted: checked all the same
    assert sorted(_Inner.calls) == ["x.inner", "x.other"]
    assert _Outer.calls == ["x"]
    parsed = parse(_Outer, {}, "x")
    _Outer.calls.clear()
    parsed.validate("x")  # e.g. fit() validating what the node parsed: already checked
    assert _Outer.calls == []
    parsed.validate("y")  # another key path: checked (and named) again
    assert _Outer.calls == ["y"]
    with pytest.raises(ConfigError, match=r"x\.other\.n must be ≥ 1, got 0"):
        parse(_Outer, {"other": {"n": 0}}, "x")


def test_follow_data_fills_and_checks_sizes() -> None:
    raw = yaml.safe_load((REPO / "conf" / "base" / "parameters_operator.yml").read_text())
    model = parse(OperatorStageConfig, raw["operator"], "operator").model
    assert model.latent_dim is None
    filled = follow_data(model, "operator.model", latent_dim=16, latent_tokens=32)
    assert (filled.latent_dim, filled.latent_tokens) == (16, 32)
    stale = dataclasses.replace(model, latent_dim=8)
    with pytest.raises(ConfigError, match=r"operator\.model\.latent_dim=8 must equal the data's 16"):
        follow_data(stale, "operator.model", latent_dim=16, latent_tokens=32)


def test_stage_configs_import_without_kedro_mlflow_or_torch() -> None:
    others = [s for s in STAGES if s not in (*TORCH_FREE, "data_processing")]
    code = (  # the torch-free ones first: a later import cannot hide an earlier one's torch
        "import importlib, sys\n"
        f"for stage in {[*TORCH_FREE, *others]!r}:\n"
        "    importlib.import_module(f'ups_kedro.pipelines.{stage}.config')\n"
        f"    heavy = ['kedro', 'mlflow'] + (['torch'] if stage in {TORCH_FREE!r} else [])\n"
        "    loaded = [m for m in heavy if m in sys.modules]\n"
        "    assert not loaded, f'{stage}/config.py imports {loaded}'\n"
    )
    src = str(Path(ups_kedro.__file__).parents[1])  # this checkout's package, not an install
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([src, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=REPO, env=env, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
