"""The rollout HDF5 file: PDEBench layout, lossless round trip, atomic write."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from ups_kedro.evaluation.rollout_file import RolloutSet, read_rollouts, write_rollouts


def _rollouts(channels: int = 1) -> RolloutSet:
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(3, 5, 8, channels)).astype(np.float32)
    return RolloutSet(
        given=rng.normal(size=(3, 2, 8, channels)).astype(np.float32), truth=truth,
        predictions={"persistence": truth * 0, "operator": truth + 1},
        times=np.linspace(0, 0.3, 7), coords=[np.linspace(0, 1, 8)],
        channels=[f"c{i}" for i in range(channels)], initial_step=2, split="test",
        sample_index=np.array([4, 7, 9]), variant_info={"operator": {"ms_per_trajectory": 2.5}},
        notes=["a note"])


@pytest.mark.parametrize("channels", [1, 2])
def test_round_trip(tmp_path: Path, channels: int) -> None:
    rs = _rollouts(channels)
    write_rollouts(tmp_path / "r.h5", rs)
    back = read_rollouts(tmp_path / "r.h5")
    np.testing.assert_array_equal(back.truth, rs.truth)
    np.testing.assert_array_equal(back.given, rs.given)
    np.testing.assert_array_equal(back.predictions["operator"], rs.predictions["operator"])
    np.testing.assert_allclose(back.times, rs.times, rtol=1e-6)
    assert back.variant_info["operator"] == {"ms_per_trajectory": 2.5}
    assert back.notes == ["a note"] and back.sample_index.tolist() == [4, 7, 9]


def test_single_channel_file_is_pdebench_tensor_layout(tmp_path: Path) -> None:
    write_rollouts(tmp_path / "r.h5", _rollouts())
    with h5py.File(tmp_path / "r.h5") as f:
        assert f["tensor"].shape == (3, 7, 8)  # [N, T, X] with the given frames first
        assert f["t-coordinate"].shape == (8,)  # PDEBench: T + 1 entries
        assert f["x-coordinate"].shape == (8,)


def test_shapes_must_agree() -> None:
    rs = _rollouts()
    with pytest.raises(ValueError, match="every variant must predict the same frames"):
        RolloutSet(rs.given, rs.truth, {"bad": rs.truth[:, :2]}, rs.times, rs.coords,
                   rs.channels, 2)
