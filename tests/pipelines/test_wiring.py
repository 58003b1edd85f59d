"""Each pipeline's wiring on an in-memory catalog (the Kedro spaceflights way).

No session, no MLflow run, no catalog files: the smoke parameters (``conf/base`` + ``conf/smoke``,
trimmed to one epoch and a handful of trajectories) go into a :class:`~kedro.io.DataCatalog` of
:class:`~kedro.io.MemoryDataset` s and each stage's ``create_pipeline()`` runs with a
:class:`~kedro.runner.SequentialRunner`, consuming what the previous stage produced — the real
nodes on real (tiny) data, so a wrong dataset name, input order or node signature fails here in
seconds instead of in a full ``kedro run``.
"""

from __future__ import annotations

import copy
import importlib
import pkgutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import project_copy

from ups_kedro.stages import TRANSIENT_STAGES

#: The in-memory chain, in order; every registered corrector runs in it.
STAGES = ("data_processing", *TRANSIENT_STAGES, "steady_prior", "evaluation")


def _smoke_config(root: Path) -> tuple[dict, dict]:
    """The smoke ``(parameters, catalog)`` with one epoch per stage and few trajectories."""
    from kedro.config import OmegaConfigLoader

    from ups_kedro.settings import CONFIG_LOADER_ARGS

    loader = OmegaConfigLoader(str(root / "conf"), env="smoke", **CONFIG_LOADER_ARGS)
    params = copy.deepcopy(loader["parameters"])
    for stage in ("autoencoder", "operator", "diff_residual", "steady_prior"):
        params[stage]["train"]["epochs"] = 1
    params["consistency_distill"]["rollout"]["train"]["epochs"] = 1
    params["evaluation"]["max_trajectories"] = 4
    params["evaluation"]["variants"]["solver_reference"] = False
    return params, loader["catalog"]


def _catalog(catalog_config: dict):
    """Memory datasets, except the streamed arrays (their nodes return a chunk writer that only
    the real :class:`~ups_kedro.datasets.ArrayDataset` turns into an array bundle).

    The runner releases a memory dataset once its last consumer in *that* pipeline ran; the
    next stage (and the assertions) still need it, so nothing is released here.
    """
    from kedro.io import DataCatalog

    class KeepingCatalog(DataCatalog):
        def release(self, ds_name: str) -> None:
            pass

    return KeepingCatalog.from_config({
        name: entry for name, entry in catalog_config.items()
        if isinstance(entry, dict) and str(entry.get("type", "")).endswith("ArrayDataset")})


def _run(pipeline_name: str, catalog, params: dict) -> dict:
    """Run ``pipelines/<name>.create_pipeline()`` on ``catalog`` (outputs stay in memory)."""
    from kedro.io import MemoryDataset
    from kedro.runner import SequentialRunner

    module = importlib.import_module(f"ups_kedro.pipelines.{pipeline_name}")
    pipeline = module.create_pipeline()
    for name in pipeline.datasets():
        if name.startswith("params:") and name not in catalog:
            key = name.removeprefix("params:")
            catalog[name] = MemoryDataset(copy.deepcopy(params[key]), copy_mode="assign")
        elif name not in catalog:
            catalog[name] = MemoryDataset(copy_mode="assign")
    SequentialRunner().run(pipeline, catalog)
    return {name: catalog.load(name) for name in pipeline.all_outputs()}


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple]:
    """The transient chain and Stage 4 run in memory, stage by stage; ``(root, catalog,
    params, outputs by stage)``."""
    from ups_kedro import paths

    torch.set_num_threads(1)
    with project_copy(tmp_path_factory.mktemp("wiring")) as root:
        paths.set_project_root(root)  # state dirs and raw files go under the copy
        params, catalog_config = _smoke_config(root)
        catalog = _catalog(catalog_config)
        outputs = {stage: _run(stage, catalog, params) for stage in STAGES}
        yield root, catalog, params, outputs


def test_every_stage_produces_its_outputs_in_memory(chain) -> None:
    _, catalog, _, outputs = chain
    ae, op = catalog.load("autoencoder.checkpoint"), catalog.load("operator.checkpoint")
    diff, student = (catalog.load(f"{s}.checkpoint") for s in ("diff_residual",
                                                                 "consistency_distill"))
    assert op["lineage"]["encoder_hash"] == ae["lineage"]["encoder_hash"]
    assert diff["lineage"]["operator_run_id"] == op["lineage"]["mlflow_run_id"]  # None: no run
    assert student["kind"] == diff["kind"] == "rollout_corrector"
    assert outputs["autoencoder"]["autoencoder.latents_train"].array.ndim == 4
    assert np.isfinite(outputs["operator"]["operator.metrics"]["val_operator_nrmse"])
    assert "val_consistency_distill_1step_nrmse" in outputs["consistency_distill"][
        "consistency_distill.metrics"]
    steady = outputs["steady_prior"]["steady_prior.metrics"]
    assert steady["skipped"] is False and len(steady["nrmse_by_step"]) >= 2


def test_evaluation_rolls_out_every_registered_corrector(chain) -> None:
    from ups_kedro.stages import CORRECTORS

    _, _, _, outputs = chain
    table = outputs["evaluation"]["evaluation.metrics_table"]
    variants = set(table["variant"] if "variant" in table.columns else table.index)
    assert {"persistence", "operator", "diff_residual", "consistency_distill_1step",
            "consistency_distill_2step"} <= variants
    assert all(any(v.startswith(c.name) for v in variants) for c in CORRECTORS)
    assert "<table" in outputs["evaluation"]["evaluation.report"]
    assert outputs["evaluation"]["evaluation.steady_metrics"]["skipped"] is False


def test_promotion_gates_in_memory_without_a_champion(chain) -> None:
    """No champion in the copy's empty registry; smoke models fail the first-run gate, so
    nothing is registered and the leaderboard is this attempt alone (no MLflow run is active)."""
    _, catalog, params, _ = chain
    out = _run("promotion", catalog, params)
    validation = out["promotion.validation_gate"]
    assert validation["candidate_variant"] in validation["candidate_scores"]
    assert {"operator", "diff_residual", "consistency_distill_1step"} <= set(
        validation["candidate_scores"])
    decision = out["promotion.decision"]
    assert decision["promoted"] is False and decision["version"] is None
    assert len(out["promotion.leaderboard"]) == 1


def test_inference_from_checkpoint_files(chain) -> None:
    """``source: checkpoints`` (transient) and steady mode, from files written by the chain."""
    from ups_kedro.stages import TRANSIENT_STAGES

    root, catalog, params, _ = chain
    models = root / "wiring-models"
    models.mkdir(exist_ok=True)
    paths = {}
    for stage in (*TRANSIENT_STAGES, "steady_prior"):
        torch.save(catalog.load(f"{stage}.checkpoint"), models / f"{stage}.pt")
        paths[stage] = str(models / f"{stage}.pt")
    torch.save(catalog.load("steady_prior.autoencoder_checkpoint"), models / "steady_ae.pt")
    paths["steady_autoencoder"] = str(models / "steady_ae.pt")
    fields = catalog.load("data_processing.fields_val").array
    np.save(root / "u0.npy", np.asarray(fields[:2, 0], np.float32))
    transient = copy.deepcopy(params)
    transient["inference"].update(source="checkpoints", variant="consistency_distill_1step",
                                  n_steps=3, checkpoints=paths,
                                  initial_condition={"path": "u0.npy", "samples": None})
    out = _run("inference", _catalog({}), transient)
    trajectory = out["inference.trajectory"]
    assert trajectory["tensor"].shape[:2] == (2, 4)
    assert trajectory["attrs"]["variant"] == "consistency_distill_1step"
    assert np.isfinite(trajectory["tensor"]).all()


def test_every_stage_pipeline_runs_here() -> None:
    """Every pipeline package (so every ``nodes.py``) is run by this module's in-memory chain or
    its promotion/inference tests: a new stage fails here until its wiring is tested."""
    import ups_kedro.pipelines as pipelines

    stages = {m.name for m in pkgutil.iter_modules(pipelines.__path__) if m.ispkg}
    assert stages == {*STAGES, "promotion", "inference"}
