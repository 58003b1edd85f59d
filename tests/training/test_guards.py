"""One run per stage state (lock), torch threads, seeds derived from the top-level seed, and
the run-level tags fit() hands to its callback."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
from training_support import RegressionData, RegressionTask, make_model, resume_cfg, resume_data

from ups_kedro.config import ConfigError, parse
from ups_kedro.training import seeds, threads
from ups_kedro.training.config import TrainConfig
from ups_kedro.training.lock import LOCK_NAME, StageLock, StageLockedError
from ups_kedro.training.launcher import fit

SRC = Path(__file__).resolve().parents[2] / "src"


def _hold_lock_in_subprocess(state_dir: Path) -> subprocess.Popen:
    """Another process holding the stage lock (as a concurrent `kedro run` would)."""
    code = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        from ups_kedro.training.lock import StageLock
        with StageLock(Path({str(state_dir)!r}), "operator", "run-abc123"):
            print("held", flush=True)
            time.sleep(60)
    """)
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, env=env,
                            text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "held"
    return proc


def test_a_second_run_of_a_locked_stage_fails_with_the_holder(tmp_path: Path) -> None:
    proc = _hold_lock_in_subprocess(tmp_path)
    try:
        train, val = resume_data()
        with pytest.raises(StageLockedError) as info:
            fit(make_model(), RegressionTask(), train, val, resume_cfg(epochs=1),
                stage="operator", state_dir=tmp_path)
        message = str(info.value)
        assert message.startswith(f"operator is locked by pid {proc.pid}, run run-abc123")
        assert f"wait for it or remove {tmp_path / LOCK_NAME} if that process is gone" in message
        assert not (tmp_path / "last.pt").exists()  # nothing written, nothing resumed
    finally:
        proc.kill()
        proc.wait()


def test_a_killed_holder_leaves_a_stale_lock_that_is_taken_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    proc = _hold_lock_in_subprocess(tmp_path)
    proc.kill()  # SIGKILL: the lock file still names it, the kernel dropped its flock
    proc.wait()
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == proc.pid
    train, val = resume_data()
    with caplog.at_level(logging.WARNING, logger="ups_kedro.training.lock"):
        result = fit(make_model(), RegressionTask(), train, val, resume_cfg(epochs=1),
                     stage="operator", state_dir=tmp_path)
    assert result.epochs_run == 1
    assert f"taking over the stale lock {tmp_path / LOCK_NAME} of pid {proc.pid}" in caplog.text
    assert (tmp_path / LOCK_NAME).read_text() == ""  # released: no holder


def test_lock_is_released_when_training_fails(tmp_path: Path) -> None:
    from training_support import FailAt

    train, val = resume_data()
    with pytest.raises(KeyboardInterrupt):
        fit(make_model(), FailAt(2, 1), train, val, resume_cfg(), stage="s", state_dir=tmp_path)
    with StageLock(tmp_path, "s") as lock:  # free again, in this very process
        assert lock.held
    resumed = fit(make_model(), RegressionTask(), train, val, resume_cfg(), stage="s",
                  state_dir=tmp_path)
    assert resumed.resumed_from == 1 and resumed.epochs_run == 5  # its own state: resumed


def test_same_process_cannot_take_a_held_lock_twice(tmp_path: Path) -> None:
    with StageLock(tmp_path, "s", "run-1"), pytest.raises(StageLockedError, match="run run-1"):
        StageLock(tmp_path, "s").acquire()


# ------------------------------------------------------------------------------------------
# run-level tags through the callback


class Recorder:
    run_id = "mlflow-run-1"

    def __init__(self) -> None:
        self.tags: dict[str, str] = {}
        self.epochs: list[int] = []

    def __call__(self, epoch: int, metrics: dict) -> None:
        self.epochs.append(epoch)

    def set_tags(self, tags: dict) -> None:
        self.tags.update(tags)


def test_resumed_from_seed_and_threads_reach_the_callback(tmp_path: Path) -> None:
    from training_support import FailAt

    train, val = resume_data()
    first = Recorder()
    with pytest.raises(KeyboardInterrupt):
        fit(make_model(), FailAt(3, 1), train, val, resume_cfg(), stage="s", state_dir=tmp_path,
            on_epoch_end=first)
    assert first.tags["resumed_from"] == "0" and first.tags["seed"] == "7"
    assert float(first.tags["initial_val_loss"]) > 0
    second = Recorder()
    fit(make_model(), RegressionTask(), train, val, resume_cfg(), stage="s",
        state_dir=tmp_path, on_epoch_end=second)
    assert second.tags["resumed_from"] == "2"
    assert int(second.tags["num_threads"]) >= 1


# ------------------------------------------------------------------------------------------
# threads


def test_num_threads_is_applied_during_fit_and_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    before = torch.get_num_threads()
    seen: list[int] = []

    class Probe(RegressionTask):
        def training_loss(self, model, batch, epoch):
            seen.append(torch.get_num_threads())
            return super().training_loss(model, batch, epoch)

    want = 2 if before == 1 else 1
    fit(make_model(), Probe(), RegressionData(16), None,
        TrainConfig(epochs=1, batch_size=8, progress=False, num_threads=want), stage="t")
    assert set(seen) == {want} and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="t.train.num_threads must be ≥ 1"):
        TrainConfig(epochs=1, batch_size=8, num_threads=0).validate("t.train")


def test_automatic_threads_follow_idle_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "usable_cores", lambda: 8)
    monkeypatch.setattr(threads, "other_load", lambda: 0.1)
    assert threads.choose_threads(None)[0] == 4  # idle machine: capped
    monkeypatch.setattr(threads, "other_load", lambda: 7.6)
    assert threads.choose_threads(None)[0] == 1  # another job took the cores
    monkeypatch.setattr(threads, "other_load", lambda: 5.0)
    assert threads.choose_threads(None)[0] == 3
    assert threads.choose_threads(6)[0] == 6  # explicit wins
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    assert threads.choose_threads(None)[0] is None  # the environment already decided


def test_other_load_sees_a_busy_process() -> None:
    if threads.other_load(0.05) is None:
        pytest.skip("no /proc/stat")
    code = "import time\nt = time.monotonic()\nwhile time.monotonic() - t < 3: pass"
    busy = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.3)
        assert threads.other_load(0.5) >= 0.5  # one spinning process ≈ one core
    finally:
        busy.kill()
        busy.wait()


# ------------------------------------------------------------------------------------------
# seeds


def test_stage_seeds_derive_from_the_base_seed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(seeds, "_base_seed", None)
    values = {"epochs": 1, "batch_size": 4}
    op = parse(TrainConfig, values, "operator.train")
    ae = parse(TrainConfig, values, "autoencoder.train")
    assert op.seed == seeds.derive_seed(0, "operator") and ae.seed != op.seed
    assert seeds.derive_seed(0, "operator") == seeds.derive_seed(0, "operator")  # stable
    assert 0 <= op.seed < 2**31
    seeds.set_base_seed(3)
    again = parse(TrainConfig, values, "operator.train")
    assert again.seed == seeds.derive_seed(3, "operator") != op.seed
    explicit = parse(TrainConfig, {**values, "seed": 11}, "operator.train")
    assert explicit.seed == 11  # an explicit train.seed wins
    seeds.set_base_seed(None)


def test_base_seed_from_globals_and_runtime_params() -> None:
    assert seeds.base_seed_from({"seed": 4}, {}) == 4
    assert seeds.base_seed_from({"seed": 4}, {"seed": "9"}) == 9  # --params seed=9
    assert seeds.base_seed_from({}, {}) is None
    with pytest.raises(ValueError, match="top-level seed must be an integer"):
        seeds.base_seed_from({"seed": "abc"}, {})


def test_derived_seed_is_a_config_error_free_default() -> None:
    with pytest.raises(ConfigError, match="operator.train.seed"):
        parse(TrainConfig, {"epochs": 1, "batch_size": 4, "seed": "x"}, "operator.train")
