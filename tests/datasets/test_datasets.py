"""Custom Kedro datasets: round trips, memory mapping, atomic writes, clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from kedro.io import DatasetError

from ups_kedro.datasets import (
    ArrayBundle,
    ArrayDataset,
    AtomicJSONDataset,
    CheckpointDataset,
    ChunkedArray,
)


def test_json_round_trip_and_numpy_values(tmp_path: Path) -> None:
    ds = AtomicJSONDataset(str(tmp_path / "a" / "x.json"))
    assert not ds.exists()
    ds.save({"mean": np.array([1.5, 2.0]), "n": np.int64(3)})
    assert ds.load() == {"mean": [1.5, 2.0], "n": 3}


def test_json_failed_save_keeps_old_file(tmp_path: Path) -> None:
    ds = AtomicJSONDataset(str(tmp_path / "x.json"))
    ds.save({"a": 1})
    with pytest.raises(DatasetError):
        ds.save({"a": object()})
    assert ds.load() == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["x.json"]


def test_array_bundle_round_trip_is_memmap(tmp_path: Path) -> None:
    ds = ArrayDataset(str(tmp_path / "lat"))
    arr = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    ds.save(ArrayBundle(arr, {"encoder_hash": "abc"}))
    out = ds.load()
    assert isinstance(out.array, np.memmap)
    np.testing.assert_array_equal(out.array, arr)
    assert out.meta == {"encoder_hash": "abc"}


def test_chunked_save_streams_and_validates(tmp_path: Path) -> None:
    ds = ArrayDataset(str(tmp_path / "f"))
    chunks = (np.full((2, 3), i, dtype=np.float32) for i in range(3))
    ds.save(ChunkedArray((6, 3), "float32", chunks, {"k": 1}))
    np.testing.assert_array_equal(ds.load().array[:, 0], [0, 0, 1, 1, 2, 2])
    # A short stream must not replace the good folder.
    with pytest.raises(DatasetError, match="declared shape"):
        ds.save(ChunkedArray((6, 3), "float32", iter([np.zeros((2, 3), np.float32)]), {}))
    np.testing.assert_array_equal(ds.load().array[:, 0], [0, 0, 1, 1, 2, 2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f"]


def test_array_missing_gives_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="run the pipeline that produces it"):
        ArrayDataset(str(tmp_path / "nope")).load()


def test_checkpoint_round_trip_weights_only(tmp_path: Path) -> None:
    ds = CheckpointDataset(str(tmp_path / "m.pt"))
    ckpt = {"kind": "latent_operator", "config": {"dim": 4}, "state_dict": {"w": torch.ones(2)},
            "lineage": {"encoder_hash": "e1"}}
    ds.save(ckpt)
    out = ds.load()
    assert out["kind"] == "latent_operator"
    torch.testing.assert_close(out["state_dict"]["w"], torch.ones(2))


def test_checkpoint_rejects_bare_state_dict(tmp_path: Path) -> None:
    ds = CheckpointDataset(str(tmp_path / "m.pt"))
    with pytest.raises(DatasetError, match="not a ups_kedro checkpoint"):
        ds.save({"w": torch.ones(1)})
    torch.save({"w": torch.ones(1)}, tmp_path / "m.pt")
    with pytest.raises(DatasetError, match="expected keys"):
        ds.load()
