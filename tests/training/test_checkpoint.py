"""Atomic saves, RNG capture and the weights_only-loadable training state."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ups_kedro.training.checkpoint import (
    TrainState,
    atomic_torch_save,
    capture_rng_state,
    load_train_state,
    restore_rng_state,
    run_fingerprint,
    save_train_state,
)
from ups_kedro.training.config import TrainConfig


def _draws(gen: torch.Generator) -> tuple:
    return (
        torch.rand(3).tolist(),
        np.random.rand(3).tolist(),
        [random.random() for _ in range(3)],
        random.gauss(0, 1),
        torch.randperm(10, generator=gen).tolist(),
    )


def test_rng_roundtrip_through_weights_only_file(tmp_path: Path) -> None:
    gen = torch.Generator().manual_seed(3)
    random.gauss(0, 1)  # leaves a cached gaussian in Python's state
    np.random.standard_normal()
    state = capture_rng_state(gen)
    first = _draws(gen)
    atomic_torch_save(state, tmp_path / "rng.pt")
    restore_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), gen)
    assert _draws(gen) == first


def test_train_state_roundtrip(tmp_path: Path) -> None:
    layer = torch.nn.Linear(2, 2)
    state = TrainState(
        fingerprint="abc",
        stage="s",
        epoch=2,
        global_step=10,
        model=layer.state_dict(),
        optimizer=torch.optim.AdamW(layer.parameters()).state_dict(),
        scheduler={"epochs_stepped": 2, "main": None, "warmup": None},
        rng=capture_rng_state(None),
        best_val=float("inf"),
        best_epoch=1,
        best_model=layer.state_dict(),
        epochs_since_improve=1,
        history=[{"epoch": 1, "loss": 0.5}],
    )
    save_train_state(state, tmp_path / "last.pt")
    raw = torch.load(tmp_path / "last.pt", weights_only=True)
    assert raw["format"] == 1 and raw["fingerprint"] == "abc"
    back = load_train_state(tmp_path / "last.pt")
    assert back.history == state.history and back.best_val == float("inf")
    assert torch.equal(back.model["weight"], layer.weight)
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary left behind


def test_fingerprint_depends_on_config_and_identity() -> None:
    a = TrainConfig(epochs=2, batch_size=4)
    assert run_fingerprint(a, "x") == run_fingerprint(TrainConfig(epochs=2, batch_size=4), "x")
    assert run_fingerprint(a, "x") != run_fingerprint(a, "y")
    assert run_fingerprint(a, "x") != run_fingerprint(TrainConfig(epochs=3, batch_size=4), "x")
