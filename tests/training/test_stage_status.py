"""Stage fingerprints, status files and JSONL lines (no Kedro session: fast)."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

from ups_kedro.training.stage_status import append_jsonl
from ups_kedro.training import stage_status as st
from ups_kedro.training.lock import StageLock


@dataclass(frozen=True)
class _Train:
    epochs: int = 2
    seed: int = 7
    num_threads: int | None = None


@dataclass(frozen=True)
class _Cfg:
    train: _Train = field(default_factory=_Train)
    eval: dict = field(default_factory=lambda: {"batch_size": 4})
    force: bool = False


@dataclass
class _Bundle:
    array: np.ndarray
    meta: dict


def _status(**kw) -> st.StageStatus:
    base = {"stage": "operator", "fingerprint": "ab" * 8, "state": st.FINISHED,
            "components": {"params": {}}, "run_id": "r1"}
    return st.StageStatus(**{**base, **kw})


def test_status_round_trip_and_hand_edit_is_refused(tmp_path: Path) -> None:
    st.write_status(tmp_path, _status(epochs_done=3))
    assert st.read_status(tmp_path).epochs_done == 3
    path = tmp_path / st.STATUS_NAME
    body = json.loads(path.read_text())
    body["fingerprint"] = "0" * 16
    path.write_text(json.dumps(body))
    with pytest.raises(st.StatusFileError, match=f"{path}.*edited or corrupted"):
        st.read_status(tmp_path)
    path.write_text('{"format": 1, "stage"')
    with pytest.raises(st.StatusFileError, match=f"{path} is unreadable"):
        st.read_status(tmp_path)
    assert st.read_status(tmp_path / "nowhere") is None


def test_running_without_a_live_lock_holder_is_killed(tmp_path: Path) -> None:
    dead = _status(state=st.RUNNING, pid=2**22 + 12345, host=os.uname().nodename)
    assert st.effective_state(dead, tmp_path) == st.KILLED
    with StageLock(tmp_path, "operator"):
        assert st.lock_is_held(tmp_path)
        assert st.effective_state(dead, tmp_path) == st.RUNNING
    assert not st.lock_is_held(tmp_path)
    assert st.effective_state(_status(), tmp_path) == st.FINISHED


def test_fingerprint_follows_params_inputs_and_seed_not_eval_or_force() -> None:
    bundle = _Bundle(np.zeros((2, 3)), {"split": "train", "encoder_hash": "e1"})
    ckpt = {"kind": "x", "state_dict": {}, "lineage": {"training_id": "t1"}}
    base = st.components("operator", _Cfg(), {"latents": bundle, "ae": ckpt}, 7)
    same = st.components("operator", _Cfg(eval={"batch_size": 99}, force=True,
                                          train=_Train(num_threads=2)),
                         {"latents": bundle, "ae": ckpt}, 7)
    assert st.fingerprint(base) == st.fingerprint(same)
    more = st.components("operator", _Cfg(train=_Train(epochs=3)),
                         {"latents": bundle, "ae": ckpt}, 7)
    assert st.explain(base, more) == "parameter train.epochs: 2 → 3"
    other = st.components("operator", _Cfg(), {"latents": _Bundle(
        bundle.array, {**bundle.meta, "encoder_hash": "e2"}), "ae": {
        **ckpt, "lineage": {"training_id": "t2"}}}, 8)
    why = st.explain(base, other)
    assert "input ae changed" in why and "input latents changed" in why and "seed 7 → 8" in why


def test_jsonl_lines_are_whole_and_a_replayed_epoch_is_written_once(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "operator.jsonl"
    for epoch in (1, 2, 1, 2, 3):
        append_jsonl(path, {"training_id": "t", "epoch": epoch, "loss": float("nan")})
    append_jsonl(path, {"training_id": "u", "epoch": 1, "loss": 0.5})
    lines = path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [(r["training_id"], r["epoch"]) for r in records] == [
        ("t", 1), ("t", 2), ("t", 3), ("u", 1)]
    assert path.read_text().endswith("\n")
