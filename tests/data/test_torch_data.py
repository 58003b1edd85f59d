"""torch views over memory-mapped fields and latents."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ups_kedro.data.torch_data import FrameDataset, LatentPairDataset

NORM = {"mean": [1.0], "std": [2.0]}


def test_frame_dataset_normalises_and_strides() -> None:
    fields = np.arange(2 * 5 * 3, dtype=np.float32).reshape(2, 5, 3, 1)
    ds = FrameDataset(fields, NORM, frame_stride=2)
    assert len(ds) == 6  # frames 0, 2, 4 of two trajectories
    torch.testing.assert_close(ds[4]["u"], (torch.from_numpy(fields[1, 2]) - 1) / 2)


def test_latent_pairs_windows_and_fields() -> None:
    lat = np.arange(2 * 7 * 1 * 1, dtype=np.float32).reshape(2, 7, 1, 1)
    fields = np.arange(2 * 7 * 2 * 1, dtype=np.float32).reshape(2, 7, 2, 1)
    ds = LatentPairDataset(lat, horizon=2, time_stride=2, fields=fields, normaliser=NORM)
    assert len(ds) == 2 * 3  # starts 0, 1, 2 (t0 + 4 ≤ 6)
    item = ds[4]  # trajectory 1, start 1
    assert item["z"].item() == lat[1, 1, 0, 0]
    assert item["z_next"].flatten().tolist() == [lat[1, 3, 0, 0], lat[1, 5, 0, 0]]
    torch.testing.assert_close(item["u_next"], (torch.from_numpy(fields[1, [3, 5]]) - 1) / 2)


def test_latent_pairs_too_short_is_clear() -> None:
    with pytest.raises(ValueError, match="rollout_horizon"):
        LatentPairDataset(np.zeros((1, 3, 1, 1), np.float32), horizon=3)
