"""``data_processing`` in a real KedroSession with a real (temporary) MLflow store.

Both branches: the transient data set and the steady (Darcy) problem of Stage 4.
"""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import mlflow
import numpy as np
import pytest

from ups_kedro.data.darcy import darcy_grid
from ups_kedro.data.pdebench import open_pdebench, write_darcy_file
from tests.conftest import run_kedro

pytestmark = pytest.mark.integration


def run_steady_data(root: Path, params: dict | None = None) -> dict:
    """``kedro run --pipeline data_processing --tags steady``: the steady branch only."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(root)
    with KedroSession.create(project_path=root, env="smoke", runtime_params=params) as session:
        return session.run(pipeline_names=["data_processing"], tags=["steady"])


def _check_steady_outputs(data: Path, n_samples: int, grid: int) -> dict:
    """Disjoint splits covering the data, prepared shapes, a normaliser from train only."""
    manifest = json.loads((data / "02_intermediate" / "steady_split_manifest.json").read_text())
    splits = [set(manifest[s]) for s in ("train", "val", "test")]
    assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])
    assert set().union(*splits) == set(range(n_samples))
    for split in ("train", "val", "test"):
        sol = np.load(data / "03_primary" / f"steady_solutions_{split}" / "data.npy")
        nu = np.load(data / "03_primary" / f"steady_coefficients_{split}" / "data.npy")
        assert sol.shape == (len(manifest[split]), 1, grid, grid, 1)
        assert nu.shape == (len(manifest[split]), grid, grid, 1)
    train_u = np.load(data / "03_primary" / "steady_solutions_train" / "data.npy")
    train_nu = np.load(data / "03_primary" / "steady_coefficients_train" / "data.npy")
    normaliser = json.loads((data / "03_primary" / "steady_normaliser.json").read_text())
    assert normaliser["split_manifest_hash"] == manifest["hash"]
    assert normaliser["mean"][0] == pytest.approx(float(np.mean(train_u)), rel=1e-5)
    assert normaliser["conditioning"]["log_nu_mean"] == pytest.approx(
        float(np.log(train_nu).mean()), rel=1e-5, abs=1e-6)
    return manifest


def test_data_processing_smoke_run(project: Path) -> None:
    run_kedro(project, "data_processing")
    data = project / "data" / "smoke"
    raw = data / "01_raw" / "1D_Burgers_Sols_Nu0.01.hdf5"
    with h5py.File(raw, "r") as f:  # PDEBench layout
        assert f["tensor"].shape == (24, 201, 256)
        assert f["t-coordinate"].shape == (202,)
        assert f["x-coordinate"].shape == (256,)
        assert f.attrs["Nu"] == pytest.approx(0.01)
    manifest = json.loads((data / "02_intermediate" / "split_manifest.json").read_text())
    splits = [set(manifest[s]) for s in ("train", "val", "test")]
    assert not (splits[0] & splits[1] or splits[0] & splits[2] or splits[1] & splits[2])
    assert set().union(*splits) == set(range(24))
    train = np.load(data / "03_primary" / "fields_train" / "data.npy", mmap_mode="r")
    assert train.shape == (len(manifest["train"]), 41, 64, 1)
    normaliser = json.loads((data / "03_primary" / "normaliser.json").read_text())
    assert normaliser["mean"][0] == pytest.approx(float(np.mean(train)), abs=1e-5)

    # The steady (Darcy) problem of Stage 4, in PDEBench's Darcy layout, from the same run.
    with open_pdebench(data / "01_raw" / "2D_DarcyFlow_beta1.0_Train.hdf5") as reader:
        assert reader.layout == "darcy" and reader.n_samples == 64
        assert reader.spatial_shape == (32, 32) and reader.attrs["beta"] == 1.0
    _check_steady_outputs(data, 64, 16)  # smoke: downsample_space 2
    source = json.loads((data / "01_raw" / "steady_raw_source.json").read_text())
    assert source["source"] == "builtin" and source["system"] == "darcy"

    # The run is in the project's MLflow store with flattened params and lineage tags.
    runs = mlflow.search_runs(experiment_names=["ups_kedro"], output_format="list")
    assert len(runs) == 1
    run = runs[0]
    assert run.data.params["data_processing.builtin.system"] == "burgers"
    assert run.data.tags["ups.pipeline"] == "data_processing"
    assert run.data.tags["ups.config_env"] == "smoke"
    assert "ups.git_commit" in run.data.tags


def test_bad_parameter_fails_before_writing(project: Path) -> None:
    with pytest.raises(Exception, match=r"data_processing\.split\.val_fractoin"):
        run_kedro(project, "data_processing", params={"data_processing": {"split": {"val_fractoin": 0.3}}})
    assert not (project / "data" / "smoke" / "02_intermediate" / "split_manifest.json").exists()


def test_switching_to_2d_with_1d_token_settings_fails_before_generating(project: Path) -> None:
    """Issue 17: a system switch used to generate the 2D data, then fail in the autoencoder.

    The default ``latent.tokens: null`` follows the grid (one token per patch), so the switch
    alone is consistent (tests/data/test_latent_grid.py); a token count the user set for 1D is
    refused before anything is generated, naming both keys.
    """
    with pytest.raises(Exception, match=r"data_processing\.builtin\.system='vorticity2d'.*"
                       r"autoencoder\.latent\.tokens=8 must be a perfect square"):
        run_kedro(project, "data_processing",
                  params={"data_processing": {"builtin": {"system": "vorticity2d"}},
                          "autoencoder": {"latent": {"tokens": 8}}})
    assert not (project / "data" / "smoke" / "01_raw").exists()


def test_missing_file_source_is_clear(project: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"data_processing\.file\.path: no file at"):
        run_kedro(project, "data_processing", params={
            "data_processing": {"source": "file", "file": {"path": "nope.hdf5"}}})


def test_steady_data_from_a_pdebench_darcy_file(project: Path) -> None:
    """``data_processing.steady.source: file`` reads a real PDEBench Darcy file."""
    path = project / "2D_DarcyFlow_beta0.5_Train.hdf5"
    rng = np.random.default_rng(0)
    nu = np.where(rng.random((20, 8, 8)) > 0.5, 1.0, 0.1)
    x, y = darcy_grid(8)
    write_darcy_file(path, rng.random((20, 1, 8, 8)), nu, x, y, attrs={"beta": 0.5})
    run_steady_data(project, params={"data_processing": {"steady": {
        "source": "file", "file": {"path": path.name, "max_samples": 15}}}})
    data = project / "data" / "smoke"
    source = json.loads((data / "01_raw" / "steady_raw_source.json").read_text())
    assert source["source"] == "file" and source["n_samples"] == 15 and source["beta"] == 0.5
    manifest = _check_steady_outputs(data, 15, 4)  # smoke: downsample_space 2
    val_nu = np.load(data / "03_primary" / "steady_coefficients_val" / "data.npy")
    np.testing.assert_allclose(val_nu[..., 0], nu[manifest["val"]][:, ::2, ::2])
    assert not (data / "03_primary" / "fields_train").exists()  # --tags steady: steady only
    with pytest.raises(FileNotFoundError,
                       match=r"data_processing\.steady\.file\.path: no file at"):
        run_steady_data(project, params={"data_processing": {"steady": {
            "source": "file", "file": {"path": "nope.hdf5"}}}})


def test_partial_rerun_of_switched_off_steady_data_is_refused() -> None:
    from ups_kedro.data.steady import skipped_record
    from ups_kedro.pipelines.data_processing import nodes

    from ups_kedro.config import ConfigError

    with pytest.raises(ConfigError,
                       match=r"data_processing\.steady\.builtin\.n_samples must be ≥ 3"):
        nodes.acquire_steady_data({"steady": {"builtin": {"n_samples": 2}}})
    off = {"steady": {"enabled": False}}
    record = nodes.acquire_steady_data(off)
    assert record["skipped"] and "steady.enabled is false" in record["reason"]
    assert nodes.split_steady_samples(record, off)["skipped"]
    with pytest.raises(ValueError, match="steady_raw_source were written with data_processing"):
        nodes.split_steady_samples(skipped_record("data_processing", "x", "off"), {})
