"""Fault matrix: every failure leaves the store true, says what to do in one line, and the MLflow
run records how the run ended.

One smoke data store (``data_processing`` once) is shared by the module.  Cases whose point is the
data store or the MLflow record run in-process (a real KedroSession, real hooks); cases whose point
is what the terminal shows, the exit code or a signal run ``kedro run`` in a subprocess.  For each
case: the exit code (or exception), the one-line message, the MLflow run status and that no
artifact or record changed.  Cases covered elsewhere in depth (atomic writes on a full disk,
SIGKILL → bit-identical resume, config typos per key) keep one representative here.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import h5py
import mlflow
import numpy as np
import pytest
import torch

from tests.conftest import project_copy, run_kedro
from ups_kedro.cli import one_line, user_error
from ups_kedro.data.initial_condition import read_initial_condition
from ups_kedro.datasets import ArrayBundle, ArrayDataset, AtomicJSONDataset, CheckpointDataset
from ups_kedro.errors import UserError

pytestmark = pytest.mark.integration
SMOKE = Path("data") / "smoke"
RAW = SMOKE / "01_raw" / "1D_Burgers_Sols_Nu0.01.hdf5"


# ------------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------------
def snapshot(root: Path) -> dict[str, str]:
    """sha256 of every file of the data store (staged leftovers would show up as new names)."""
    out = {}
    for path in sorted((root / SMOKE).rglob("*")):
        if path.is_file() and "06_models/state" not in path.as_posix():
            out[str(path.relative_to(root))] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def last_run() -> mlflow.entities.Run:
    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0]


def nested(dotted: dict) -> dict:
    """``{"a.b": 1}`` → ``{"a": {"b": 1}}`` (what ``--params a.b=1`` gives a session)."""
    out: dict = {}
    for key, value in dotted.items():
        *parents, leaf = key.split(".")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    return out


def fails(root: Path, pipeline: str, params: dict | None = None) -> str:
    """Run in-process; it must fail with a user error; its one-line message."""
    with pytest.raises(Exception) as info:
        run_kedro(root, pipeline, params=nested(params or {}))
    err = user_error(info.value)
    assert err is not None, f"not reported as a user error: {info.value!r}"
    return one_line(err)


def kedro_cli(root: Path, *args: str, env: dict | None = None,
              timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "kedro", "run", "--env", "smoke", *args],
                          cwd=root, capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "COLUMNS": "120", **(env or {})})


def assert_one_line(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit 1, no traceback, the failure's lines ≤ 20, one ``Error:`` line with ``needles``."""
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    lines = out.splitlines()
    errors = [line for line in lines if line.startswith("Error: ")]
    assert len(errors) == 1, out[-3000:]
    # What the failure adds to the run's normal log: from its first warning to the end.
    last_node = max([i for i, line in enumerate(lines) if "Running node" in line], default=0)
    first = next(i for i, line in enumerate(lines) if i >= last_node
                 and ("WARNING" in line or "ERROR" in line or line.startswith("Error: ")))
    assert len(lines) - first <= 20, "\n".join(lines[first:])
    for needle in needles:
        assert needle in errors[0], errors[0]
    return errors[0]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A project copy with the smoke data prepared once."""
    with project_copy(tmp_path_factory.mktemp("faults")) as root:
        run_kedro(root, "data_processing")
        yield root


def _bad_copy(root: Path, name: str, nan: bool = False, nu: float | None = None) -> Path:
    """A copy of the smoke raw file, optionally with a NaN in one trajectory and another Nu."""
    path = root / name
    path.write_bytes((root / RAW).read_bytes())
    with h5py.File(path, "r+") as f:
        if nan:
            traj = f["tensor"][20]
            traj[5, 4] = np.nan  # a frame and point the protocol's downsampling keeps
            f["tensor"][20] = traj
        if nu is not None:
            f.attrs["Nu"] = nu
    return path


# ------------------------------------------------------------------------------------------------
# rejected input leaves the store true; a mismatched set is refused downstream
# ------------------------------------------------------------------------------------------------
def test_rejected_file_leaves_store_unchanged(store: Path) -> None:
    before = snapshot(store)
    bad = _bad_copy(store, "nan.hdf5", nan=True, nu=0.1)
    # Through the CLI: the terminal shows one line, exit code 1, no traceback, no warnings.
    proc = kedro_cli(store, "--pipeline", "data_processing", "--params",
                     f"data_processing.source=file,data_processing.file.path={bad}")
    assert_one_line(proc, "NaN", "sample index: 20")
    assert "eprecat" not in proc.stdout + proc.stderr
    assert snapshot(store) == before  # raw_source.json, manifest, fields, normaliser untouched
    run = last_run()
    assert run.info.status == "FAILED" and "NaN" in run.data.tags["ups.end_reason"]


def test_wrong_layout_names_the_key(store: Path) -> None:
    before = snapshot(store)
    message = fails(store, "data_processing", {
        "data_processing.source": "file", "data_processing.file.path": str(store / RAW),
        "data_processing.file.layout": "darcy"})
    assert "data_processing.file.layout" in message
    assert snapshot(store) == before


def test_too_few_samples_names_the_split_block(store: Path) -> None:
    before = snapshot(store)
    message = fails(store, "data_processing", {
        "data_processing.source": "file", "data_processing.file.path": str(store / RAW),
        "data_processing.file.max_samples": 2})
    assert "data_processing.split.val_fraction" in message
    assert snapshot(store) == before
    steady = fails(store, "data_processing", {"data_processing.steady.split.val_fraction": 1.5})
    assert steady.startswith("data_processing.steady.split.val_fraction")


def test_mismatched_set_is_refused_downstream(store: Path) -> None:
    raw = store / SMOKE / "01_raw" / "raw_source.json"
    good = raw.read_text()
    raw.write_text(good.replace('"fingerprint": "', '"fingerprint": "0'))
    try:
        before = snapshot(store)
        message = fails(store, "autoencoder")
        assert "do not belong together" in message
        assert "kedro run --pipeline data_processing" in message
        assert snapshot(store) == before
        assert last_run().info.status == "FAILED"
    finally:
        raw.write_text(good)


def test_missing_upstream_names_the_pipeline(store: Path) -> None:
    message = fails(store, "operator")  # no latents yet: the autoencoder pipeline makes them
    assert "kedro run --pipeline autoencoder" in message


# ------------------------------------------------------------------------------------------------
# bad files: checkpoints and inference inputs
# ------------------------------------------------------------------------------------------------
def test_truncated_checkpoint_says_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "operator.pt"
    torch.save({"kind": "x", "config": {}, "state_dict": {"w": torch.zeros(1000)}}, path)
    path.write_bytes(path.read_bytes()[:2000])
    with pytest.raises(Exception) as info:
        CheckpointDataset(str(path)).load()
    message = one_line(user_error(info.value))
    assert "is corrupt" in message and "Errno" not in message


def test_malicious_pickle_is_refused(tmp_path: Path) -> None:
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch pwned",))

    path = tmp_path / "evil.pt"
    path.write_bytes(pickle.dumps({"kind": "x", "config": {}, "state_dict": Evil()}))
    with pytest.raises(Exception) as info:
        CheckpointDataset(str(path)).load()
    assert "refused" in one_line(user_error(info.value))
    assert not (tmp_path / "pwned").exists() and not Path("pwned").exists()


def test_corrupt_array_says_corrupt(tmp_path: Path) -> None:
    ds = ArrayDataset(str(tmp_path / "fields"))
    ds.save(ArrayBundle(np.zeros((4, 3), np.float32), {"split": "train"}))
    data = tmp_path / "fields" / "data.npy"
    data.write_bytes(data.read_bytes()[:60])
    with pytest.raises(Exception) as info:
        ds.load()
    assert "is corrupt" in one_line(user_error(info.value))


def test_inference_inputs_in_user_terms(tmp_path: Path) -> None:
    npy = tmp_path / "u0.npy"
    np.save(npy, np.zeros((2, 64), np.float32))
    with pytest.raises(UserError, match=r"samples asks for sample\(s\) \[5\].*holds 2"):
        read_initial_condition(npy, [0, 5], frame=0)
    np.save(npy, np.zeros((2, 3, 4, 5), np.float32))
    with pytest.raises(UserError, match="inference.initial_condition.path"):
        read_initial_condition(npy, None, frame=0)
    from ups_kedro.pipelines.inference.nodes import _check_grid

    with pytest.raises(UserError, match=r"trained on \(64,\) points") as info:
        _check_grid(np.zeros((2, 32, 1)), {"config": {"encoder": {"grid_shape": [64],
                                                                  "in_channels": 1}}}, npy)
    assert "Encoder" not in str(info.value)


# ------------------------------------------------------------------------------------------------
# the terminal: one line, exit code 1, no deprecation noise; a dead tracking server fails fast
# ------------------------------------------------------------------------------------------------
def test_config_typo_did_you_mean(store: Path) -> None:
    before = snapshot(store)
    message = fails(store, "data_processing", {"data_processing.split.val_fractoin": 0.2})
    assert "val_fractoin" in message and "did you mean" in message
    assert snapshot(store) == before
    assert last_run().info.status == "FAILED"


def test_unreachable_tracking_fails_fast(store: Path) -> None:
    """Also the terminal contract of every user error: exit 1, one ``Error:`` line, no traceback
    (a pipeline-time error through the CLI: see the signal runs, and the in-process cases for
    how each error is classified)."""
    start = time.monotonic()
    proc = kedro_cli(store, "--pipelines", "data_processing",
                     env={"MLFLOW_TRACKING_URI": "http://127.0.0.1:9"})
    assert time.monotonic() - start <= 15 + 10  # 15 s allowed; slack for a loaded test machine
    assert_one_line(proc, "MLFLOW_TRACKING_URI")


# ------------------------------------------------------------------------------------------------
# run status: Ctrl-C and SIGTERM → KILLED with the reason; SIGKILL → closed by the next run
# ------------------------------------------------------------------------------------------------
def _start_training(root: Path, log: Path) -> subprocess.Popen:
    env = {**os.environ, "COLUMNS": "120"}
    with log.open("w") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "kedro", "run", "--env", "smoke", "--pipeline", "autoencoder",
             "--params", "autoencoder.train.epochs=400"],
            cwd=root, stdout=out, stderr=subprocess.STDOUT, env=env)


def _wait_for_epoch(log: Path, proc: subprocess.Popen, timeout: float = 90) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if "autoencoder epoch" in log.read_text():
            return
        assert proc.poll() is None, log.read_text()[-3000:]
        time.sleep(0.3)
    proc.kill()
    pytest.fail("training did not start")


def test_signals_end_the_run_killed(store: Path, tmp_path: Path) -> None:
    ids = {}
    for sig, code in ((signal.SIGKILL, -9), (signal.SIGINT, 130), (signal.SIGTERM, 143)):
        log = tmp_path / f"{sig.name}.log"
        proc = _start_training(store, log)
        _wait_for_epoch(log, proc)
        ids[sig.name] = last_run().info.run_id
        proc.send_signal(sig)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            # The interrupt landed where it was swallowed (e.g. inside a library's cleanup
            # that catches BaseException): a user presses Ctrl-C again, and so do we.
            proc.send_signal(sig)
        assert proc.wait(timeout=60) == code, log.read_text()[-3000:]
        if sig != signal.SIGKILL:
            text = log.read_text()
            assert f"Interrupted ({sig.name})" in text and "Traceback" not in text
            assert "eprecat" not in text
    client = mlflow.MlflowClient()
    for name in ("SIGINT", "SIGTERM"):
        run = client.get_run(ids[name])
        assert run.info.status == "KILLED"
        assert run.data.tags["ups.end_reason"] == f"interrupted by {name}"
    orphan = client.get_run(ids["SIGKILL"])  # closed by the SIGINT run that came next
    assert orphan.info.status == "KILLED"
    assert "closed by run " + ids["SIGINT"] in orphan.data.tags["ups.end_reason"]


def test_staged_saves_commit_together_or_not_at_all(tmp_path: Path) -> None:
    """The mechanism under the all-or-nothing data_processing: stage, then commit or discard."""
    record, fields = AtomicJSONDataset(str(tmp_path / "r.json")), ArrayDataset(str(tmp_path / "f"))
    record.save({"v": 1})
    fields.save(ArrayBundle(np.zeros(3, np.float32), {"v": 1}))
    for dataset in (record, fields):
        dataset.defer("t1")
    record.save({"v": 2})
    fields.save(ArrayBundle(np.ones(3, np.float32), {"v": 2}))
    assert record.load() == {"v": 2}  # the same run reads what it staged
    assert AtomicJSONDataset(str(tmp_path / "r.json")).load() == {"v": 1}  # others do not
    for dataset in (record, fields):
        dataset.discard()
    assert record.load() == {"v": 1} and fields.load().meta == {"v": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "r.json"]
    for dataset in (record, fields):
        dataset.defer("t2")
    record.save({"v": 3})
    fields.save(ArrayBundle(np.ones(3, np.float32), {"v": 3}))
    assert record.commit() and fields.commit()
    assert record.load() == {"v": 3} and fields.load().meta == {"v": 3}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["f", "r.json"]


def test_unknown_pipeline_is_one_line(store: Path) -> None:
    assert "there is no pipeline named 'operatr'" in fails(store, "operatr")
