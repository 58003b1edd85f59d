"""Tests for ups_kedro.data.pdebench: PDEBench HDF5 writers and the lazy reader."""

from __future__ import annotations

import os
import pickle
import tracemalloc
from pathlib import Path

import h5py
import numpy as np
import pytest

from ups_kedro.data import pdebench
from ups_kedro.data.pdebench import (
    PDEBenchFormatError,
    check_finite,
    open_pdebench,
    write_darcy_file,
    write_group_file,
    write_multifield_file,
    write_tensor_file,
)

RNG = np.random.default_rng(0)


def _rand(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


def _grid(n: int) -> np.ndarray:
    return (np.arange(n) + 0.5) / n


def _times(n: int, dt: float = 0.01) -> np.ndarray:
    return np.arange(n) * dt


def _make_tensor(
    path: Path, n: int = 6, t: int = 21, x: int = 16, y: int | None = None
) -> np.ndarray:
    shape = (n, t, x) if y is None else (n, t, x, y)
    data = _rand(*shape)
    write_tensor_file(
        path, data, _grid(x), _times(t + 1), y=None if y is None else _grid(y), attrs={"Nu": 0.01}
    )
    return data


def _no_temp_files(directory: Path) -> bool:
    return not [p for p in directory.iterdir() if p.name.endswith(".tmp")]


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("y", [None, 8])
def test_tensor_round_trip(tmp_path: Path, y: int | None) -> None:
    path = tmp_path / "burgers.hdf5"
    data = _make_tensor(path, y=y)
    with open_pdebench(path) as reader:
        assert reader.layout == "tensor"
        assert reader.path == path
        assert reader.n_samples == 6 and reader.n_frames == 21
        assert reader.spatial_shape == ((16,) if y is None else (16, 8))
        assert reader.channels == ["u"]
        np.testing.assert_allclose(reader.x, _grid(16), rtol=1e-6)
        assert (reader.y is None) == (y is None)
        # T+1 stored times -> T frame times, frame k at t[k].
        assert reader.t.shape == (21,)
        np.testing.assert_allclose(reader.t, _times(21), atol=1e-6)
        assert reader.attrs == {"Nu": pytest.approx(0.01)}
        assert isinstance(reader.attrs["Nu"], float)
        out = reader.read(slice(None))
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out, data[..., None])
    with h5py.File(path) as f:  # the PDEBench on-disk layout itself
        assert f["tensor"].dtype == np.float32 and f["t-coordinate"].shape == (22,)


@pytest.mark.parametrize("y", [None, 8])
def test_multifield_round_trip_and_channel_order(tmp_path: Path, y: int | None) -> None:
    path = tmp_path / "cfd.hdf5"
    spatial = (16,) if y is None else (16, 8)
    # Given out of PDEBench order on purpose: channels must come back density, pressure, Vx.
    fields = {name: _rand(4, 5, *spatial) for name in ["Vx", "pressure", "density"]}
    write_multifield_file(
        path, fields, _grid(16), _times(6), y=None if y is None else _grid(8),
        attrs={"eta": 0.1, "zeta": 0.1, "M": 1.0},
    )
    with open_pdebench(path) as reader:
        assert reader.layout == "multifield"
        assert reader.channels == ["density", "pressure", "Vx"]
        assert reader.n_frames == 5 and reader.t.shape == (5,)
        assert reader.attrs["M"] == 1.0
        out = reader.read([0, 3])
    expected = np.stack([fields[c] for c in ["density", "pressure", "Vx"]], axis=-1)[[0, 3]]
    np.testing.assert_array_equal(out, expected)
    with open_pdebench(path, fields=["Vx", "density"]) as reader:
        assert reader.channels == ["Vx", "density"]
        np.testing.assert_array_equal(
            reader.read([1])[..., 0], fields["Vx"][[1]]
        )


@pytest.mark.parametrize("spatial", [(16,), (8, 4)])
def test_group_round_trip(tmp_path: Path, spatial: tuple[int, ...]) -> None:
    path = tmp_path / "diff_react.h5"
    data = _rand(3, 5, *spatial, 2)
    y = _grid(spatial[1]) if len(spatial) == 2 else None
    write_group_file(path, data, _grid(spatial[0]), _times(5), y=y, attrs={"D": 0.5})
    with h5py.File(path) as f:
        assert sorted(f.keys()) == ["0000", "0001", "0002"]
        assert f["0001/data"].shape == (5, *spatial, 2) and "grid/t" in f["0001"]
    with open_pdebench(path) as reader:
        assert reader.layout == "group"
        assert reader.channels == ["c0", "c1"]
        assert reader.spatial_shape == spatial and reader.n_frames == 5
        np.testing.assert_allclose(reader.t, _times(5), atol=1e-7)
        np.testing.assert_array_equal(reader.read(slice(None)), data)
    with open_pdebench(path, fields=["c1"]) as reader:
        np.testing.assert_array_equal(reader.read([2, 0]), data[[2, 0]][..., 1:])


def test_darcy_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "darcy.hdf5"
    sol, nu = _rand(4, 1, 8, 8), _rand(4, 8, 8)
    write_darcy_file(path, sol, nu, _grid(8), _grid(8), attrs={"beta": 1.0})
    with open_pdebench(path) as reader:
        assert reader.layout == "darcy" and reader.attrs == {"beta": 1.0}
        assert reader.n_frames == 1 and reader.t.shape == (1,)
        out = reader.read([3, 1])
        assert out.shape == (2, 1, 8, 8, 1)
        np.testing.assert_array_equal(out[..., 0], sol[[3, 1]])
        coef = reader.read_coefficient([3, 1], space_stride=2)
        np.testing.assert_array_equal(coef[..., 0], nu[[3, 1]][:, ::2, ::2])
        assert reader.read([0], space_stride=4).shape == (1, 1, 2, 2, 1)


# ----------------------------------------------------------------------------- reading


def test_strides_t_stop_and_coords(tmp_path: Path) -> None:
    path = tmp_path / "b.hdf5"
    data = _make_tensor(path, t=21, x=16, y=8)
    with open_pdebench(path) as reader:
        out = reader.read([1, 2], time_stride=5, space_stride=4)
        np.testing.assert_array_equal(out[..., 0], data[1:3, ::5, ::4, ::4])
        assert out.shape == (2, 5, 4, 2, 1)
        out = reader.read([0], time_stride=2, t_stop=10)
        np.testing.assert_array_equal(out[..., 0], data[:1, 0:10:2])
        c = reader.coords(space_stride=4, time_stride=5)
        np.testing.assert_allclose(c["x"], _grid(16)[::4], rtol=1e-6)
        np.testing.assert_allclose(c["y"], _grid(8)[::4], rtol=1e-6)
        np.testing.assert_allclose(c["t"], _times(21)[::5], atol=1e-6)


def test_unsorted_duplicate_and_negative_indices_keep_order(tmp_path: Path) -> None:
    path = tmp_path / "b.hdf5"
    data = _make_tensor(path, n=10)
    order = [7, 2, 3, 2, 9, -1, 0]
    with open_pdebench(path) as reader:
        out = reader.read(order)
        np.testing.assert_array_equal(out[..., 0], data[order])
        np.testing.assert_array_equal(reader.read(np.array([5, 4]))[..., 0], data[[5, 4]])
        np.testing.assert_array_equal(reader.read(slice(8, 2, -3))[..., 0], data[8:2:-3])
        assert reader.read([]).shape == (0, 21, 16, 1)


def test_reads_split_into_blocks_still_correct(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "b.hdf5"
    data = _make_tensor(path, n=10)
    monkeypatch.setattr(pdebench.reader, "_MAX_BLOCK_BYTES", 21 * 16 * 4 * 3)  # 3 samples per read
    with open_pdebench(path) as reader:
        np.testing.assert_array_equal(reader.read(slice(None))[..., 0], data)
        order = [9, 0, 1, 2, 3, 4]
        np.testing.assert_array_equal(reader.read(order)[..., 0], data[order])


@pytest.mark.parametrize("layout", ["tensor", "multifield", "group", "darcy"])
def test_auto_layout_detection(tmp_path: Path, layout: str) -> None:
    path = tmp_path / f"{layout}.h5"
    if layout == "tensor":
        _make_tensor(path)
    elif layout == "multifield":
        write_multifield_file(path, {"density": _rand(2, 3, 8)}, _grid(8), _times(4))
    elif layout == "group":
        write_group_file(path, _rand(2, 3, 8, 1), _grid(8), _times(3))
    else:
        write_darcy_file(path, _rand(2, 1, 4, 4), _rand(2, 4, 4), _grid(4), _grid(4))
    with open_pdebench(path) as reader:
        assert reader.layout == layout
    with open_pdebench(path, layout=layout) as reader:
        assert reader.layout == layout


def test_reader_without_with_close_and_pickle(tmp_path: Path) -> None:
    path = tmp_path / "b.hdf5"
    data = _make_tensor(path)
    reader = open_pdebench(path, fields=["u"])
    clone = pickle.loads(pickle.dumps(reader))
    np.testing.assert_array_equal(clone.read([1])[..., 0], data[[1]])
    clone.close()
    reader.close()
    reader.close()  # idempotent
    with pytest.raises(PDEBenchFormatError, match="closed"):
        reader.read([0])
    assert "b.hdf5" in repr(reader)


def test_read_is_lazy(tmp_path: Path, monkeypatch) -> None:
    """Reading 2 of 200 samples must touch ~2 samples' bytes, not the whole dataset."""
    path = tmp_path / "big.hdf5"
    n, t, x = 200, 11, 1024
    write_tensor_file(path, np.ones((n, t, x), np.float32), _grid(x), _times(t + 1))
    full_bytes = n * t * x * 4  # ~9 MB

    bytes_read: list[int] = []
    original = h5py.Dataset.__getitem__

    def counting_getitem(self, args, *rest, **kw):
        result = original(self, args, *rest, **kw)
        if self.name == "/tensor":
            bytes_read.append(np.asarray(result).nbytes)
        return result

    monkeypatch.setattr(h5py.Dataset, "__getitem__", counting_getitem)
    with open_pdebench(path) as reader:
        tracemalloc.start()
        out = reader.read([150, 3])
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    assert out.shape == (2, t, x, 1)
    assert sum(bytes_read) == 2 * t * x * 4
    assert peak < full_bytes / 20


# ----------------------------------------------------------------------------- reader errors


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.hdf5"
    with pytest.raises(FileNotFoundError, match="nope.hdf5"):
        open_pdebench(path)
    with pytest.raises(PDEBenchFormatError, match="does not exist"):
        open_pdebench(path)


def test_not_hdf5(tmp_path: Path) -> None:
    path = tmp_path / "fake.hdf5"
    path.write_text("<html>not found</html>")
    with pytest.raises(PDEBenchFormatError, match=r"fake\.hdf5 is not an HDF5 file"):
        open_pdebench(path)


def test_unknown_layout_and_undetectable(tmp_path: Path) -> None:
    path = tmp_path / "odd.h5"
    with h5py.File(path, "w") as f:
        f["velocity"] = np.zeros((2, 3, 4, 4, 2))
    with pytest.raises(PDEBenchFormatError, match=r"odd\.h5.*velocity"):
        open_pdebench(path)
    with pytest.raises(PDEBenchFormatError, match="unknown layout 'weird'"):
        open_pdebench(path, layout="weird")


def test_wrong_explicit_layout_names_key_and_suggests(tmp_path: Path) -> None:
    path = tmp_path / "cfd.hdf5"
    write_multifield_file(path, {"density": _rand(2, 3, 8)}, _grid(8), _times(4))
    with pytest.raises(PDEBenchFormatError) as err:
        open_pdebench(path, layout="tensor")
    msg = str(err.value)
    assert "cfd.hdf5" in msg and "'tensor'" in msg and "density" in msg
    assert "set data_processing.file.layout to 'multifield'" in msg


def test_missing_coordinate(tmp_path: Path) -> None:
    path = tmp_path / "b.hdf5"
    with h5py.File(path, "w") as f:
        f["tensor"] = np.zeros((2, 3, 8), np.float32)
        f["t-coordinate"] = _times(4)
    with pytest.raises(PDEBenchFormatError, match=r"b\.hdf5 has no dataset 'x-coordinate'"):
        open_pdebench(path)


def test_wrong_rank(tmp_path: Path) -> None:
    path = tmp_path / "b.hdf5"
    with h5py.File(path, "w") as f:
        f["tensor"] = np.zeros((2, 8), np.float32)
    with pytest.raises(PDEBenchFormatError, match=r"b\.hdf5.*'tensor'.*rank 2"):
        open_pdebench(path)


def test_mismatched_field_shapes(tmp_path: Path) -> None:
    path = tmp_path / "cfd.hdf5"
    with h5py.File(path, "w") as f:
        f["density"] = np.zeros((2, 3, 8), np.float32)
        f["Vx"] = np.zeros((2, 3, 4), np.float32)
    with pytest.raises(PDEBenchFormatError, match=r"cfd\.hdf5: field 'Vx' has shape"):
        open_pdebench(path)


@pytest.mark.parametrize(
    ("key", "bad", "shape"),
    [("x-coordinate", _grid(7), (7,)), ("t-coordinate", _times(9), (9,))],
)
def test_coordinate_length_mismatch(tmp_path: Path, key: str, bad: np.ndarray, shape) -> None:
    path = tmp_path / "b.hdf5"
    with h5py.File(path, "w") as f:
        f["tensor"] = np.zeros((2, 3, 8), np.float32)
        f["x-coordinate"] = _grid(8)
        f["t-coordinate"] = _times(4)
        del f[key]
        f[key] = bad
    with pytest.raises(PDEBenchFormatError, match=rf"b\.hdf5: coordinate '{key}' has shape"):
        open_pdebench(path)


def test_group_inconsistent_sample(tmp_path: Path) -> None:
    path = tmp_path / "g.h5"
    write_group_file(path, _rand(3, 4, 8, 1), _grid(8), _times(4))
    with h5py.File(path, "a") as f:
        del f["0002/data"]
        f["0002/data"] = np.zeros((4, 6, 1), np.float32)
    with open_pdebench(path) as reader:
        reader.read([0, 1])
        with pytest.raises(PDEBenchFormatError, match=r"g\.h5: group '0002'"):
            reader.read([2])


def test_index_out_of_range(tmp_path: Path) -> None:
    path = tmp_path / "b.hdf5"
    _make_tensor(path, n=6)
    with open_pdebench(path) as reader:
        msg = r"b\.hdf5.*index 6 is out of range.*6 samples"
        with pytest.raises(PDEBenchFormatError, match=msg):
            reader.read([0, 6])
        with pytest.raises(PDEBenchFormatError, match="index -7"):
            reader.read([-7])
        with pytest.raises(PDEBenchFormatError, match="1-D sequence of ints"):
            reader.read([0.5])


def test_stride_errors(tmp_path: Path) -> None:
    path = tmp_path / "b.hdf5"
    _make_tensor(path, t=21, x=16)
    with open_pdebench(path) as reader:
        with pytest.raises(PDEBenchFormatError, match=r"space_stride=3 does not divide the 16"):
            reader.read([0], space_stride=3)
        with pytest.raises(PDEBenchFormatError, match=r"space_stride=16 leaves 1 point"):
            reader.read([0], space_stride=16)
        with pytest.raises(PDEBenchFormatError, match=r"time_stride=21 .* leaves 1 frame"):
            reader.read([0], time_stride=21)
        with pytest.raises(PDEBenchFormatError, match=r"time_stride=0 is invalid"):
            reader.read([0], time_stride=0)
        with pytest.raises(PDEBenchFormatError, match=r"t_stop=22 is invalid"):
            reader.read([0], t_stop=22)
        with pytest.raises(PDEBenchFormatError, match=r"space_stride=3"):
            reader.coords(space_stride=3)


def test_unknown_fields_and_coefficient_on_non_darcy(tmp_path: Path) -> None:
    path = tmp_path / "b.hdf5"
    _make_tensor(path)
    msg = r"b\.hdf5.*no field\(s\) \['density'\].*\['u'\]"
    with pytest.raises(PDEBenchFormatError, match=msg):
        open_pdebench(path, fields=["density"])
    with open_pdebench(path) as reader:
        with pytest.raises(PDEBenchFormatError, match="read_coefficient"):
            reader.read_coefficient([0])


def test_read_rejects_non_finite_naming_sample(tmp_path: Path) -> None:
    path = tmp_path / "b.hdf5"
    _make_tensor(path, n=6)
    with h5py.File(path, "a") as f:
        f["tensor"][4, 2, 3] = np.nan
    with open_pdebench(path) as reader:
        reader.read([0, 1, 5])
        with pytest.raises(PDEBenchFormatError, match=r"b\.hdf5.*NaN/Inf.*sample index: 4"):
            reader.read([1, 4])


def test_check_finite_helper() -> None:
    ok = np.zeros((3, 2))
    assert check_finite(ok, "x") is ok
    bad = np.zeros((3, 2))
    bad[2, 1] = np.inf
    with pytest.raises(PDEBenchFormatError, match=r"my array contains NaN/Inf in 1 sample.*: 2"):
        check_finite(bad, "my array")
    with pytest.raises(PDEBenchFormatError, match=r"index: 42"):
        check_finite(bad, "my array", sample_ids=[40, 41, 42])


# ----------------------------------------------------------------------------- writer errors


def test_writer_validation_errors(tmp_path: Path) -> None:
    path = tmp_path / "w.hdf5"
    with pytest.raises(PDEBenchFormatError, match=r"w\.hdf5: coordinate 't'.*\(4,\).*T\+1"):
        write_tensor_file(path, _rand(2, 4, 8), _grid(8), _times(4))
    with pytest.raises(PDEBenchFormatError, match=r"w\.hdf5.*but y is None"):
        write_tensor_file(path, _rand(2, 4, 8, 8), _grid(8), _times(5))
    with pytest.raises(PDEBenchFormatError, match=r"w\.hdf5.*'tensor' has shape \(2, 8\)"):
        write_tensor_file(path, _rand(2, 8), _grid(8), _times(5))
    with pytest.raises(PDEBenchFormatError, match=r"field 'Vx' has shape"):
        write_multifield_file(
            path, {"density": _rand(2, 4, 8), "Vx": _rand(2, 4, 4)}, _grid(8), _times(5)
        )
    with pytest.raises(PDEBenchFormatError, match=r"\['rho'\] are not PDEBench"):
        write_multifield_file(path, {"rho": _rand(2, 4, 8)}, _grid(8), _times(5))
    with pytest.raises(PDEBenchFormatError, match=r"'nu' has shape"):
        write_darcy_file(path, _rand(2, 1, 8, 8), _rand(2, 8, 4), _grid(8), _grid(8))
    with pytest.raises(PDEBenchFormatError, match=r"attribute 'beta' is None"):
        write_darcy_file(
            path, _rand(2, 1, 4, 4), _rand(2, 4, 4), _grid(4), _grid(4), {"beta": None}
        )
    assert not path.exists() and _no_temp_files(tmp_path)


# ----------------------------------------------------------------------------- atomicity


class _FailingArray:
    """Array-like whose sample ``fail_at`` cannot be read (a generator dying mid-way)."""

    def __init__(self, data: np.ndarray, fail_at: int) -> None:
        self._data, self._fail_at = data, fail_at
        self.shape, self.ndim, self.dtype = data.shape, data.ndim, data.dtype

    def __getitem__(self, key):
        start = key.start if isinstance(key, slice) else key
        stop = key.stop if isinstance(key, slice) else key + 1
        if start <= self._fail_at < stop:
            raise RuntimeError("simulated crash while producing sample")
        return self._data[key]


def test_atomic_write_nan_mid_way_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(pdebench.writers, "_MAX_BLOCK_BYTES", 4 * 8 * 4)  # one sample per block
    path = tmp_path / "b.hdf5"
    data = _rand(5, 4, 8)
    data[3, 1, 2] = np.nan  # samples 0..2 are written before this is found
    with pytest.raises(PDEBenchFormatError, match=r"b\.hdf5.*'tensor'.*sample index: 3"):
        write_tensor_file(path, data, _grid(8), _times(5))
    assert not path.exists()
    assert _no_temp_files(tmp_path)


@pytest.mark.parametrize("layout", ["tensor", "group"])
def test_atomic_write_failing_array_keeps_old_file(tmp_path: Path, monkeypatch, layout) -> None:
    monkeypatch.setattr(pdebench.writers, "_MAX_BLOCK_BYTES", 4 * 8 * 4)
    path = tmp_path / "b.h5"
    path.write_bytes(b"previous good file")
    if layout == "tensor":
        bad = _FailingArray(_rand(5, 4, 8), fail_at=3)
        call = lambda: write_tensor_file(path, bad, _grid(8), _times(5))  # noqa: E731
    else:
        bad = _FailingArray(_rand(5, 4, 8, 1), fail_at=3)
        call = lambda: write_group_file(path, bad, _grid(8), _times(4))  # noqa: E731
    with pytest.raises(RuntimeError, match="simulated crash"):
        call()
    assert path.read_bytes() == b"previous good file"
    assert _no_temp_files(tmp_path)


def test_atomic_write_replace_failure_cleans_temp(tmp_path: Path, monkeypatch) -> None:
    def boom(src, dst):
        raise OSError("disk went away")

    monkeypatch.setattr(os, "replace", boom)
    path = tmp_path / "sub" / "b.hdf5"
    with pytest.raises(OSError, match="disk went away"):
        write_tensor_file(path, _rand(2, 3, 8), _grid(8), _times(4))
    assert not path.exists() and _no_temp_files(path.parent)


def test_writer_creates_parent_and_readable_permissions(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "c.hdf5"
    _make_tensor(path)
    assert path.exists() and (path.stat().st_mode & 0o044) == 0o044


def _ns_incom_file(path: Path, n: int = 3, frames: int = 6, side: int = 8,
                   particles: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """PDEBench's 2D incompressible-NS layout (ns_incom_inhom_2d_512-*.h5), written by h5py."""
    rng = np.random.default_rng(0)
    vel = rng.standard_normal((n, frames, side, side, 2)).astype(np.float32)
    part = rng.uniform(size=(n, frames, side, side, 1)).astype(np.float32)
    with h5py.File(path, "w") as f:
        f["velocity"] = vel
        if particles:
            f["particles"] = part
        f["force"] = rng.standard_normal((n, side, side, 2)).astype(np.float32)
        f["t"] = np.tile(np.linspace(0.0, 0.5, frames, dtype=np.float32), (n, 1))
    return vel, part


def test_ns_incom_layout_reads_velocity_components_and_particles(tmp_path: Path) -> None:
    path = tmp_path / "ns_incom_inhom_2d_512-0.h5"
    vel, part = _ns_incom_file(path)
    with open_pdebench(path) as reader:
        assert reader.layout == "ns_incom"
        assert reader.channels == ["Vx", "Vy", "particles"]
        assert reader.spatial_shape == (8, 8) and reader.n_frames == 6 and reader.n_samples == 3
        out = reader.read([2, 0], time_stride=2, space_stride=2)
        np.testing.assert_array_equal(out[..., :2], vel[[2, 0], ::2, ::2, ::2])
        np.testing.assert_array_equal(out[..., 2:], part[[2, 0], ::2, ::2, ::2])
        coords = reader.coords(space_stride=2, time_stride=2)
        np.testing.assert_allclose(coords["x"], (np.arange(0, 8, 2) + 0.5) / 8)
        np.testing.assert_allclose(coords["t"], np.linspace(0, 0.5, 6)[::2], rtol=1e-6)
    with open_pdebench(path, fields=["Vy"]) as reader:
        np.testing.assert_array_equal(reader.read([1])[..., 0], vel[[1], ..., 1])


def test_ns_incom_layout_errors_name_the_problem(tmp_path: Path) -> None:
    path = tmp_path / "vel_only.h5"
    vel, _ = _ns_incom_file(path, particles=False)
    with open_pdebench(path, layout="ns_incom") as reader:
        assert reader.channels == ["Vx", "Vy"]
    bad = tmp_path / "bad.h5"
    with h5py.File(bad, "w") as f:
        f["velocity"] = np.zeros((2, 4, 8, 8, 3), dtype=np.float32)
        f["t"] = np.zeros((2, 4))
    with pytest.raises(PDEBenchFormatError, match="2 velocity components"):
        open_pdebench(bad)
    with h5py.File(bad, "w") as f:
        f["velocity"] = np.zeros((2, 4, 8, 8, 2), dtype=np.float32)
        f["t"] = np.zeros((2, 5))
    with pytest.raises(PDEBenchFormatError, match="dataset 't' has shape"):
        open_pdebench(bad)
