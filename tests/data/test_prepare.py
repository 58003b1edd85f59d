"""Splits, PDEBench-protocol preparation and train-only normalisation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ups_kedro.config import parse
from ups_kedro.data.config import DataProcessingConfig, SplitConfig
from ups_kedro.data.pdebench import PDEBenchFormatError, write_tensor_file
from ups_kedro.data.prepare import (
    check_disjoint,
    describe_source,
    fit_normaliser,
    make_split_manifest,
    prepare_split,
)
from ups_kedro.datasets import ArrayBundle, ArrayDataset


@pytest.mark.parametrize("mode", ["random", "pdebench"])
def test_splits_disjoint_cover_and_seeded(mode: str) -> None:
    cfg = SplitConfig(seed=3, mode=mode, val_fraction=0.2, test_fraction=0.1)
    m1 = make_split_manifest(50, cfg, "fp")
    m2 = make_split_manifest(50, cfg, "fp")
    assert m1 == m2
    check_disjoint(m1)
    assert sorted(m1["train"] + m1["val"] + m1["test"]) == list(range(50))
    assert (len(m1["test"]), len(m1["val"])) == (5, 10)
    if mode == "pdebench":
        assert m1["test"] == [0, 1, 2, 3, 4]
    assert make_split_manifest(50, SplitConfig(seed=4), "fp")["hash"] != m1["hash"]


def test_split_too_small_is_clear() -> None:
    with pytest.raises(PDEBenchFormatError, match="non-empty train split"):
        make_split_manifest(2, SplitConfig(), "fp")


def test_check_disjoint_catches_leak() -> None:
    with pytest.raises(ValueError, match="trajectory 3 is in both 'train' and 'test'"):
        check_disjoint({"train": [1, 3], "val": [2], "test": [3]})


def _tensor_file(path: Path, n: int = 10, t: int = 21, x: int = 32) -> np.ndarray:
    rng = np.random.default_rng(0)
    data = rng.normal(2.0, 3.0, size=(n, t, x)).astype(np.float32)
    xs = (np.arange(x) + 0.5) / x
    write_tensor_file(path, data, x=xs, t=np.linspace(0, 1, t + 1), attrs={"Nu": 0.1})
    return data


def test_prepare_split_downsamples_and_records_meta(tmp_path: Path) -> None:
    data = _tensor_file(tmp_path / "raw.hdf5")
    cfg = parse(DataProcessingConfig, {"downsample_space": 4, "downsample_time": 5,
                                       "initial_step": 2, "chunk_size": 3}, "dp")
    source = describe_source(tmp_path / "raw.hdf5", "auto", None, None, {})
    chunked = prepare_split(source, [7, 1, 4, 2], cfg, "train", "h")
    ds = ArrayDataset(str(tmp_path / "fields"))
    ds.save(chunked)
    out = ds.load()
    assert out.array.shape == (4, 5, 8, 1)
    np.testing.assert_array_equal(out.array[..., 0], data[[7, 1, 4, 2]][:, ::5, ::4])
    assert out.meta["indices"] == [7, 1, 4, 2]
    assert out.meta["dt"] == pytest.approx(5 / 21)  # t-coordinate spacing 1/21, every 5th frame
    assert len(out.meta["coords"][0]) == 8


def test_impossible_downsampling_and_empty_split(tmp_path: Path) -> None:
    _tensor_file(tmp_path / "raw.hdf5", t=11)
    source = describe_source(tmp_path / "raw.hdf5", "auto", None, None, {})
    cfg = parse(DataProcessingConfig, {"downsample_time": 5, "initial_step": 10}, "dp")
    with pytest.raises(PDEBenchFormatError, match="downsample_time=5 leave 3 frames"):
        prepare_split(source, [0], cfg, "train", "h")
    with pytest.raises(PDEBenchFormatError, match="split 'val' is empty"):
        prepare_split(source, [], cfg, "val", "h")


def test_normaliser_uses_only_given_training_data() -> None:
    rng = np.random.default_rng(1)
    train = rng.normal([1.0, -2.0], [0.5, 4.0], size=(40, 6, 16, 2)).astype(np.float32)
    stats = fit_normaliser(ArrayBundle(train, {"channels": ["a", "b"], "split_manifest_hash": "h"}),
                           chunk=7)
    np.testing.assert_allclose(stats["mean"], train.reshape(-1, 2).mean(0), rtol=1e-5)
    np.testing.assert_allclose(stats["std"], train.reshape(-1, 2).std(0), rtol=1e-5)
    assert stats["split"] == "train"


def test_constant_channel_cannot_be_normalised() -> None:
    bundle = ArrayBundle(np.ones((2, 3, 4, 1), np.float32), {"channels": ["u"],
                                                           "split_manifest_hash": "h"})
    with pytest.raises(ValueError, match=r"\['u'\] are constant"):
        fit_normaliser(bundle)
