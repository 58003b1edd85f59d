"""Jittered rollout windows: every start frame is drawn over epochs, windows are consecutive."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ups_kedro.data.windows import JitteredWindowDataset


def _latents(n: int = 2, t: int = 11) -> np.ndarray:
    # frame index encoded in the values: latent[n, t] == 100 n + t everywhere
    return (100 * np.arange(n)[:, None] + np.arange(t)[None, :]).astype(np.float32)[
        :, :, None, None].repeat(3, 2).repeat(2, 3)


def test_windows_are_consecutive_frames_and_cover_every_start() -> None:
    torch.manual_seed(0)
    ds = JitteredWindowDataset(_latents(), horizon=3, time_stride=1, start_stride=3)
    assert ds.n_starts == 8 and ds.blocks == 3 and len(ds) == 6   # blocks {0-2}, {3-5}, {6-7}
    starts = set()
    for _ in range(60):
        for i in range(len(ds)):
            item = ds[i]
            t0 = int(item["z"][0, 0]) % 100
            frames = item["z_next"][:, 0, 0] % 100
            assert frames.tolist() == [t0 + 1, t0 + 2, t0 + 3]  # never past the last frame
            assert t0 // 3 == i % 3                            # inside its own block
            starts.add((i // 3, t0))
    assert starts == {(n, t) for n in range(2) for t in range(8)}


def test_stride_one_is_every_start_in_order() -> None:
    ds = JitteredWindowDataset(_latents(1, 6), horizon=2, time_stride=2)
    assert [int(ds[i]["z"][0, 0]) for i in range(len(ds))] == [0, 1]
    assert ds[1]["z_next"][:, 0, 0].tolist() == [3, 5]


def test_too_short_trajectories_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="rollout_horizon"):
        JitteredWindowDataset(_latents(1, 4), horizon=4)
    with pytest.raises(ValueError, match="start_stride"):
        JitteredWindowDataset(_latents(), horizon=1, start_stride=0)
