"""Reading inference inputs: NumPy and PDEBench HDF5, with clear errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ups_kedro.data.initial_condition import read_coefficients, read_initial_condition
from ups_kedro.data.pdebench import write_darcy_file, write_tensor_file


def test_numpy_initial_condition_gets_a_channel_axis(tmp_path: Path) -> None:
    np.save(tmp_path / "u0.npy", np.arange(12, dtype=np.float64).reshape(3, 4))
    u0 = read_initial_condition(tmp_path / "u0.npy", [2, 0], frame=0)
    assert u0.shape == (2, 4, 1) and u0.dtype == np.float32 and u0[0, 0, 0] == 8


def test_hdf5_frame_and_stride(tmp_path: Path) -> None:
    tensor = np.random.default_rng(0).normal(size=(3, 5, 8)).astype(np.float32)
    path = write_tensor_file(tmp_path / "b.hdf5", tensor, x=(np.arange(8) + 0.5) / 8,
                             t=np.linspace(0, 1, 6))
    u0 = read_initial_condition(path, [1], frame=3, space_stride=2)
    np.testing.assert_array_equal(u0[0, :, 0], tensor[1, 3, ::2])
    with pytest.raises(ValueError, match="outside the file's 5 frames"):
        read_initial_condition(path, [1], frame=5)
    with pytest.raises(ValueError, match="steady mode needs a Darcy file"):
        read_coefficients(path, [0])


def test_darcy_coefficients(tmp_path: Path) -> None:
    nu = np.random.default_rng(1).uniform(0.1, 1, size=(2, 4, 4)).astype(np.float32)
    grid = (np.arange(4) + 0.5) / 4
    path = write_darcy_file(tmp_path / "d.hdf5", np.zeros((2, 1, 4, 4)), nu, grid, grid)
    np.testing.assert_array_equal(read_coefficients(path, None), nu)


def test_bad_paths_say_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="does not exist; give an .h5/.hdf5"):
        read_initial_condition(tmp_path / "missing.h5", None, 0)
    (tmp_path / "u0.csv").write_text("1,2\n")
    with pytest.raises(ValueError, match="expected .h5, .hdf5 or .npy"):
        read_initial_condition(tmp_path / "u0.csv", None, 0)
    np.save(tmp_path / "bad.npy", np.full((2, 4), np.nan))
    with pytest.raises(ValueError, match="NaN or Inf"):
        read_initial_condition(tmp_path / "bad.npy", None, 0)
