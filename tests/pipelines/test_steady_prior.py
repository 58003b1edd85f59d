"""Stage 4 (``steady_prior``): Darcy data helpers, and the pipeline in a real KedroSession.

The steady data are prepared by ``data_processing`` (block ``data_processing.steady``, tag
``steady``); the runs below use ``kedro run --tags steady``: that data branch plus Stage 4.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import h5py
import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from ups_kedro.config import ConfigError
from ups_kedro.data.config import SplitConfig
from ups_kedro.data.darcy import darcy_grid, solve_darcy
from ups_kedro.data.pdebench import PDEBenchFormatError, open_pdebench, write_darcy_file
from ups_kedro.data.prepare import make_split_manifest
from ups_kedro.data.steady import (
    DarcyBuiltinConfig,
    conditioning_fields,
    darcy_generator_hash,
    describe_darcy_source,
    ensure_darcy_file,
    fit_steady_normaliser,
    mean_field,
    prepare_steady_split,
)
from ups_kedro.datasets.array_dataset import ArrayBundle, ChunkedArray
from ups_kedro.evaluation.metrics import nrmse
from ups_kedro.evaluation.steady import (
    SteadyPredictor,
    predict_steady,
    steady_conditioning,
)

SMOKE = "smoke"


def run_steady(root: Path, params: dict | None = None, pipeline: str = "__default__") -> dict:
    """``kedro run --tags steady`` (the steady data branch and Stage 4) in a real KedroSession."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(root)
    with KedroSession.create(project_path=root, env=SMOKE, runtime_params=params) as session:
        return session.run(pipeline_names=[pipeline], tags=["steady"])


def _materialise(chunked: ChunkedArray) -> ArrayBundle:
    array = np.concatenate(list(chunked.chunks))
    assert array.shape == chunked.shape
    return ArrayBundle(array, chunked.meta)


# ------------------------------------------------------------------------------------------------
# data helpers (no Kedro)
# ------------------------------------------------------------------------------------------------
def test_builtin_darcy_file_is_pdebench_layout_and_regenerated_only_on_change(
    tmp_path: Path,
) -> None:
    cfg = DarcyBuiltinConfig(n_samples=5, resolution=8, beta=2.0, output_dir="raw")
    path, seconds = ensure_darcy_file(cfg, tmp_path)
    assert path == (tmp_path / "raw" / "2D_DarcyFlow_beta2.0_Train.hdf5").resolve()
    assert seconds > 0
    with h5py.File(path, "r") as f:
        assert f["tensor"].shape == (5, 1, 8, 8) and f["nu"].shape == (5, 8, 8)
        assert f.attrs["beta"] == 2.0
        assert f.attrs["ups_generator_hash"] == darcy_generator_hash(cfg)
        u, nu = f["tensor"][:, 0], f["nu"][:]
    # The stored solution is the solver's solution of the stored coefficient and forcing.
    np.testing.assert_allclose(u[3], solve_darcy(nu[3], 2.0), rtol=1e-5, atol=1e-7)
    mtime = path.stat().st_mtime_ns
    assert ensure_darcy_file(cfg, tmp_path) == (path, 0.0)  # same settings: reused
    assert path.stat().st_mtime_ns == mtime
    other = replace(cfg, seed=1)
    assert ensure_darcy_file(other, tmp_path)[1] > 0  # new settings: regenerated
    with h5py.File(path, "r") as f:
        assert f.attrs["ups_generator_hash"] == darcy_generator_hash(other)


def _real_darcy_file(path: Path, n: int = 10, grid: int = 8, beta: float | None = 0.5) -> None:
    rng = np.random.default_rng(0)
    nu = np.where(rng.random((n, grid, grid)) > 0.5, 1.0, 0.1)
    u = rng.random((n, 1, grid, grid))
    x, y = darcy_grid(grid)
    write_darcy_file(path, u, nu, x, y, attrs=None if beta is None else {"beta": beta})


def test_real_pdebench_darcy_file_prepared_and_normalised_on_train_only(tmp_path: Path) -> None:
    path = tmp_path / "2D_DarcyFlow_beta0.5_Train.hdf5"
    _real_darcy_file(path)
    source = describe_darcy_source(path, None, None, {"source": "file"})
    assert source["layout"] == "darcy" and source["n_samples"] == 10 and source["beta"] == 0.5
    manifest = make_split_manifest(10, SplitConfig(val_fraction=0.2, test_fraction=0.2),
                                   source["fingerprint"])
    sol, coef = prepare_steady_split(source, manifest["train"], "train", manifest["hash"],
                                     downsample_space=2, chunk_size=4)
    sol, coef = _materialise(sol), _materialise(coef)
    assert sol.array.shape == (6, 1, 4, 4, 1) and coef.array.shape == (6, 4, 4, 1)
    with h5py.File(path, "r") as f:
        idx = manifest["train"]
        np.testing.assert_allclose(sol.array[:, 0, ..., 0], f["tensor"][idx, 0, ::2, ::2])
        np.testing.assert_allclose(coef.array[..., 0], f["nu"][idx, ::2, ::2])
    assert sol.meta["split_manifest_hash"] == manifest["hash"] and sol.meta["beta"] == 0.5

    normaliser = fit_steady_normaliser(sol, coef)
    assert normaliser["mean"][0] == pytest.approx(float(sol.array.mean()), rel=1e-6)
    cond = normaliser["conditioning"]
    assert cond["log_nu_mean"] == pytest.approx(float(np.log(coef.array).mean()), rel=1e-6)
    assert cond["beta_scale"] == 0.5
    assert mean_field(sol.array).shape == (1, 1, 4, 4, 1)

    fields = conditioning_fields(coef.array, 1.0, normaliser)  # [n, X, Y, 1] accepted
    assert fields.shape == (6, 4, 4, 2) and fields.dtype == np.float32
    np.testing.assert_allclose(fields[..., 1], 2.0)  # β / β_train
    np.testing.assert_allclose(fields[..., 0].mean(), 0.0, atol=1e-5)  # train statistics
    with pytest.raises(ValueError, match="strictly positive"):
        conditioning_fields(-coef.array, 1.0, normaliser)
    # 3 tokens per axis do not divide the 4×4 grid: a configuration error naming the key.
    with pytest.raises(ConfigError, match=r"steady_prior\.autoencoder\.latent\.tokens=9"):
        steady_conditioning(coef.array, 0.5, normaliser, 9)
    assert steady_conditioning(coef.array, 0.5, normaliser, 4).shape == (6, 4, 2 * 2 * 2)


def test_darcy_file_without_beta_needs_it_in_the_parameters(tmp_path: Path) -> None:
    path = tmp_path / "darcy.hdf5"
    _real_darcy_file(path, beta=None)
    with pytest.raises(PDEBenchFormatError, match=r"data_processing\.steady\.file\.beta"):
        describe_darcy_source(path, None, None, {})
    assert describe_darcy_source(path, 4, 3.0, {})["beta"] == 3.0


# ------------------------------------------------------------------------------------------------
# the pipeline in a real KedroSession (smoke env)
# ------------------------------------------------------------------------------------------------
@pytest.mark.integration
def test_steady_prior_smoke_run(project: Path) -> None:
    run_steady(project)
    data = project / "data" / "smoke"

    # (1) the built-in steady problem (written by data_processing), in PDEBench's Darcy layout
    raw = data / "01_raw" / "2D_DarcyFlow_beta1.0_Train.hdf5"
    with open_pdebench(raw) as reader:
        assert reader.layout == "darcy" and reader.n_samples == 64
        assert reader.spatial_shape == (32, 32) and reader.attrs["beta"] == 1.0
    manifest = json.loads((data / "02_intermediate" / "steady_split_manifest.json").read_text())
    splits = [set(manifest[s]) for s in ("train", "val", "test")]
    assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])
    solutions_val = np.load(data / "03_primary" / "steady_solutions_val" / "data.npy")
    nu_val = np.load(data / "03_primary" / "steady_coefficients_val" / "data.npy")
    assert solutions_val.shape == (len(manifest["val"]), 1, 16, 16, 1)  # downsample_space 2
    assert nu_val.shape == (len(manifest["val"]), 16, 16, 1)

    # (2, 3) checkpoints with lineage
    ae = torch.load(data / "06_models" / "steady_autoencoder.pt", weights_only=True)
    prior = torch.load(data / "06_models" / "steady_prior.pt", weights_only=True)
    assert ae["kind"] == "autoencoder" and prior["kind"] == "steady_prior"
    assert prior["lineage"]["encoder_hash"] == ae["lineage"]["encoder_hash"]
    assert prior["lineage"]["split_manifest_hash"] == manifest["hash"]
    assert tuple(prior["z0"].shape) == (16, 8)  # the mean training latent [tokens, dim]

    # (4) metrics: the trained prior beats the trivial baselines; error vs refinement step
    m = json.loads((data / "08_reporting" / "steady_prior_metrics.json").read_text())
    assert m["skipped"] is False and m["num_steps"] == 3
    assert m["val_nrmse"] < 0.9 * m["val_nrmse_initial_guess"]
    assert m["val_nrmse"] < m["val_nrmse_mean_field"]
    by_step = m["nrmse_by_step"]
    assert len(by_step) == 4 and by_step[0] == m["val_nrmse_initial_guess"]
    assert [m[f"val_nrmse_step_{k}"] for k in (1, 2, 3)] == by_step[1:]
    assert all(b <= a + 1e-3 for a, b in zip(by_step, by_step[1:]))  # refinement helps

    # inference in steady mode reproduces the evaluation
    pred = predict_steady(prior, ae, nu_val)  # conditioning only (mean-latent initial guess)
    assert pred.shape == (len(manifest["val"]), 16, 16, 1)
    assert float(nrmse(pred[:, None], solutions_val).mean()) == pytest.approx(m["val_nrmse"],
                                                                             rel=1e-4)
    predictor = SteadyPredictor.from_checkpoints(prior, ae)
    guess = predictor.predict(nu_val, steps=0)
    assert float(nrmse(guess[:, None], solutions_val).mean()) == pytest.approx(
        m["val_nrmse_initial_guess"], rel=1e-4)
    assert predictor.predict(nu_val[:2], initial_guess=solutions_val[:2]).shape == (2, 16, 16, 1)

    run = mlflow.search_runs(experiment_names=["ups_kedro"], output_format="list")[0]
    assert run.data.metrics["steady_prior/val_nrmse"] == pytest.approx(m["val_nrmse"])
    assert "steady_prior/val_nrmse_initial_guess" in run.data.metrics
    assert "steady_prior/autoencoder/val_recon_nrmse" in run.data.metrics
    assert "steady_prior/val_rel_err_step_3" in run.data.metrics  # per-epoch, from training
    history = MlflowClient().get_metric_history(run.info.run_id, "steady_prior/val_nrmse_by_step")
    assert [h.step for h in sorted(history, key=lambda h: h.step)] == [0, 1, 2, 3]


@pytest.mark.integration
def test_steady_prior_with_zero_epochs_is_skipped(project: Path) -> None:
    run_steady(project, params={"steady_prior": {"train": {"epochs": 0}}})
    data = project / "data" / "smoke"
    m = json.loads((data / "08_reporting" / "steady_prior_metrics.json").read_text())
    assert m["skipped"] is True and "epochs is 0" in m["reason"]
    prior = torch.load(data / "06_models" / "steady_prior.pt", weights_only=True)
    assert prior["kind"] == "skipped" and not prior["state_dict"]  # nothing trained
    with pytest.raises(ValueError, match="epochs > 0"):
        SteadyPredictor.from_checkpoints(prior, prior)
    run = mlflow.search_runs(experiment_names=["ups_kedro"], output_format="list")[0]
    assert run.data.tags["ups.steady_prior.skipped"] == "true"
    assert not any(k.startswith("steady_prior/val_") for k in run.data.metrics)
    # data_processing still prepared the steady data: they are its outputs, not the stage's
    normaliser = json.loads((data / "03_primary" / "steady_normaliser.json").read_text())
    assert "conditioning" in normaliser


@pytest.mark.integration
def test_steady_prior_without_steady_data_skips_with_a_warning(
    project: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    """``data_processing.steady.enabled: false`` → skipped records, and Stage 4 skips (warned)."""
    with caplog.at_level("WARNING", logger="ups_kedro.pipelines.steady_prior.nodes"):
        run_steady(project, params={"data_processing": {"steady": {"enabled": False}}})
    data = project / "data" / "smoke"
    assert not (data / "01_raw" / "2D_DarcyFlow_beta1.0_Train.hdf5").exists()  # nothing solved
    for name in ("01_raw/steady_raw_source.json", "02_intermediate/steady_split_manifest.json",
                 "03_primary/steady_normaliser.json"):
        record = json.loads((data / name).read_text())
        assert record["skipped"] is True and "steady.enabled is false" in record["reason"]
    m = json.loads((data / "08_reporting" / "steady_prior_metrics.json").read_text())
    assert m["skipped"] is True and m["reason"].startswith("no steady data")
    assert "data_processing.steady.enabled is false" in m["reason"]
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"
              and "steady_prior: SKIPPED" in r.getMessage()]
    assert len(warned) == 1 and "data_processing.steady.enabled: true" in warned[0]
    prior = torch.load(data / "06_models" / "steady_prior.pt", weights_only=True)
    with pytest.raises(ValueError, match="data_processing.steady.enabled is false"):
        SteadyPredictor.from_checkpoints(prior, prior)
    run = mlflow.search_runs(experiment_names=["ups_kedro"], output_format="list")[0]
    assert run.data.tags["ups.steady_prior.skipped"] == "true"
    assert run.data.tags["ups.data_processing.steady_skipped"] == "true"


def test_parameters_are_checked_and_partial_reruns_of_a_skipped_stage_refused() -> None:
    import yaml

    from tests.conftest import REPO
    from ups_kedro.config import parse
    from ups_kedro.data.steady import skipped_array, skipped_record
    from ups_kedro.pipelines.steady_prior import nodes
    from ups_kedro.pipelines.steady_prior.config import SteadyPriorStageConfig

    with pytest.raises(ConfigError, match=r"'steady_prior\.modle' \(did you mean 'model'\?\)"):
        parse(SteadyPriorStageConfig, {"modle": {}}, "steady_prior")
    with pytest.raises(ConfigError, match=r"steady_prior\.data has moved to data_processing"):
        nodes.train_steady_autoencoder({}, {}, {}, {"data": {}})
    # conf/base's block: train and the model sizes are required keys (no in-code defaults)
    base = yaml.safe_load((REPO / "conf/base/parameters_steady_prior.yml").read_text())
    base = base["steady_prior"]

    off = "data_processing.steady.enabled is false"
    no_data = [skipped_array("data_processing", "x", off)] * 2 + [
        skipped_record("data_processing", "steady_normaliser", off)]
    # no steady data: the stage skips (also with epochs > 0), the reason passed on
    ckpt = nodes.train_steady_autoencoder(*no_data, base)
    assert ckpt["kind"] == "skipped" and off in ckpt["reason"]
    # a mix of skipped and real data inputs, or a skipped checkpoint beside real data, is refused
    with pytest.raises(ValueError, match="two data_processing runs"):
        nodes.train_steady_autoencoder(no_data[0], {}, {}, base)
    with pytest.raises(ValueError, match="autoencoder_checkpoint were written by a run"):
        nodes.train_steady_prior(ckpt, {}, {}, {}, {}, {}, base)
    # epochs 0: skipped whatever the inputs
    off_params = {**base, "train": {"epochs": 0, "batch_size": 4}}
    assert nodes.evaluate_steady_prior({}, {}, {}, {}, {}, off_params)["skipped"]
