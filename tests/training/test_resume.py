"""Exact resume: an interrupted and resumed run equals an uninterrupted one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch
from training_support import FailAt, NoisyTask, make_model, resume_cfg, resume_data, strip_timing

import ups_kedro
from ups_kedro.training.launcher import fit
from ups_kedro.training.task import FitResult

HERE = Path(__file__).resolve().parent


def _uninterrupted() -> FitResult:
    train, val = resume_data()
    return fit(
        make_model(), NoisyTask(), train, val, resume_cfg(), stage="resume_test",
        fingerprint="data-v1",
    )


def _resume(state_dir: Path, calls: list) -> FitResult:
    train, val = resume_data()
    # A different initial model on purpose: the saved state must overwrite everything.
    return fit(
        make_model(seed=99), NoisyTask(), train, val, resume_cfg(), stage="resume_test",
        state_dir=state_dir, fingerprint="data-v1", on_epoch_end=lambda e, m: calls.append((e, m)),
    )


def _assert_same(resumed: FitResult, straight: FitResult) -> None:
    assert resumed.epochs_run == straight.epochs_run == 5
    assert resumed.best_epoch == straight.best_epoch
    assert resumed.stopped_reason == straight.stopped_reason
    for key, value in straight.model_state.items():
        assert torch.equal(resumed.model_state[key], value), key
        assert torch.equal(resumed.ema_state[key], straight.ema_state[key]), key
    assert strip_timing(resumed.history) == strip_timing(straight.history)


def test_resume_after_exception_is_exact(tmp_path: Path) -> None:
    straight = _uninterrupted()
    train, val = resume_data()
    first_calls: list = []
    try:
        fit(
            make_model(), FailAt(3, 2), train, val, resume_cfg(), stage="resume_test",
            state_dir=tmp_path, fingerprint="data-v1",
            on_epoch_end=lambda e, m: first_calls.append((e, m)),
        )
    except KeyboardInterrupt:
        pass
    else:
        raise AssertionError("the simulated kill did not happen")
    assert [e for e, _ in first_calls] == [1, 2]
    calls: list = []
    resumed = _resume(tmp_path, calls)
    assert resumed.resumed_from == 2
    _assert_same(resumed, straight)
    # Epochs 1-2 are replayed first, with the values logged before the kill.
    assert [e for e, _ in calls] == [1, 2, 3, 4, 5]
    assert calls[:2] == first_calls
    assert torch.load(tmp_path / "last.pt", weights_only=True)["finished"]


def test_resume_after_sigkill_is_exact(tmp_path: Path) -> None:
    env = dict(os.environ)
    src = str(Path(ups_kedro.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([src, str(HERE), env.get("PYTHONPATH", "")])
    proc = subprocess.run(
        [sys.executable, str(HERE / "training_support.py"), str(tmp_path), "3", "4"],
        env=env, capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert saved["epoch"] == 2 and not saved["finished"]
    assert not list(tmp_path.glob(".*.tmp"))  # no half-written temporary
    calls: list = []
    resumed = _resume(tmp_path, calls)
    assert resumed.resumed_from == 2
    _assert_same(resumed, _uninterrupted())
    assert [e for e, _ in calls] == [1, 2, 3, 4, 5]
