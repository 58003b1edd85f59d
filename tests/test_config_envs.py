"""Every configuration environment parses: conf/base, and base merged with each other
environment folder (smoke, smoke2d, vorticity2d, gpu, …; conf/local is the user's own).

A key that a refactor renamed or a value of the wrong type in an environment nobody runs on
this machine (conf/gpu) fails here, not on the user's GPU node.
"""

from __future__ import annotations

import pytest
from kedro.config import OmegaConfigLoader

from tests.conftest import REPO
from ups_kedro.config import parse
from ups_kedro.data.config import DataProcessingConfig
from ups_kedro.pipelines.autoencoder.config import AutoencoderStageConfig
from ups_kedro.pipelines.consistency_distill.config import ConsistencyDistillStageConfig
from ups_kedro.pipelines.diff_residual.config import DiffResidualStageConfig
from ups_kedro.pipelines.evaluation.config import EvaluationConfig
from ups_kedro.pipelines.inference.config import InferenceConfig
from ups_kedro.pipelines.operator.config import OperatorStageConfig
from ups_kedro.pipelines.promotion.config import PromotionConfig
from ups_kedro.pipelines.steady_prior.config import SteadyPriorStageConfig
from ups_kedro.settings import CONFIG_LOADER_ARGS

STAGES = {
    "data_processing": DataProcessingConfig, "autoencoder": AutoencoderStageConfig,
    "operator": OperatorStageConfig, "diff_residual": DiffResidualStageConfig,
    "consistency_distill": ConsistencyDistillStageConfig, "steady_prior": SteadyPriorStageConfig,
    "evaluation": EvaluationConfig, "promotion": PromotionConfig, "inference": InferenceConfig,
}


ENVS = sorted(p.name for p in (REPO / "conf").iterdir()
              if p.is_dir() and p.name not in ("base", "local"))


def test_the_shipped_environments_are_all_checked() -> None:
    assert {"smoke", "smoke2d", "vorticity2d", "gpu"} <= set(ENVS)


@pytest.mark.parametrize("env", ["base", *ENVS])
def test_every_stage_block_parses(env: str) -> None:
    args = {**CONFIG_LOADER_ARGS, "default_run_env": env}
    loader = OmegaConfigLoader(str(REPO / "conf"), **args)
    params = loader["parameters"]
    assert set(STAGES) <= set(params)
    for stage, cls in STAGES.items():
        parse(cls, params[stage], stage)
