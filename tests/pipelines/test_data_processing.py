"""``data_processing`` in a real KedroSession with a real (temporary) MLflow store."""

from __future__ import annotations

import json
from pathlib import Path

import h5py
import mlflow
import numpy as np
import pytest

from tests.conftest import run_kedro

pytestmark = pytest.mark.integration


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


def test_missing_file_source_is_clear(project: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"data_processing\.file\.path: no file at"):
        run_kedro(project, "data_processing", params={
            "data_processing": {"source": "file", "file": {"path": "nope.hdf5"}}})
