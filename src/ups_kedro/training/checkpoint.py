"""Full, resumable training state and how it is written.

A :class:`TrainState` holds everything needed to continue a run at an epoch boundary with
bit-identical results on CPU: weights, EMA, optimizer, scheduler, (GradScaler slot), counters,
best-so-far weights, the metric history and every random-number-generator state that the next
epoch reads (torch, CUDA, numpy, Python ``random`` and the DataLoader's shuffling generator).

It is stored as one dict of tensors and plain Python values, so it loads with
``torch.load(weights_only=True)`` (no pickled code, no numpy objects).  ``fingerprint`` ties a
state to one run configuration: a resume only happens when it matches.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ups_kedro.atomic import atomic_file
from ups_kedro.config import to_dict

STATE_FORMAT = 1


def atomic_torch_save(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to a temporary file beside ``path``, fsync it, then ``os.replace``.

    A kill at any moment leaves either the previous file or the complete new one; fsync makes
    the same hold after a power cut, which matters for the resume state written every epoch.
    """
    with atomic_file(path) as tmp:
        with open(tmp, "wb") as handle:
            torch.save(obj, handle)
            handle.flush()
            os.fsync(handle.fileno())


def run_fingerprint(config: Any, identity: str = "") -> str:
    """sha256 (hex, 16 chars) of a config (dataclass or plain values) and an identity string.

    ``identity`` is what the caller knows about the data and model (split hash, encoder hash,
    architecture); anything that must match for a resume to be meaningful.
    """
    plain = to_dict(config) if dataclasses.is_dataclass(config) else config
    text = json.dumps({"config": plain, "identity": identity}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# RNG states as weights_only-safe values


def capture_rng_state(loader_generator: torch.Generator | None) -> dict[str, Any]:
    """Every RNG state an epoch reads, as tensors / ints / floats / lists / strings."""
    np_name, np_keys, np_pos, np_has_gauss, np_cached = np.random.get_state()
    py_version, py_internal, py_gauss_next = random.getstate()
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "name": str(np_name),
            "keys": torch.from_numpy(np.asarray(np_keys, dtype=np.int64)),
            "pos": int(np_pos),
            "has_gauss": int(np_has_gauss),
            "cached_gaussian": float(np_cached),
        },
        "python": {
            "version": int(py_version),
            "internal": [int(v) for v in py_internal],
            "gauss_next": py_gauss_next,  # None or float
        },
        "loader": None if loader_generator is None else loader_generator.get_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None,
    }
    return state


def restore_rng_state(state: dict[str, Any], loader_generator: torch.Generator | None) -> None:
    """Inverse of :func:`capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    npst = state["numpy"]
    np.random.set_state(
        (
            npst["name"],
            npst["keys"].numpy().astype(np.uint32),
            npst["pos"],
            npst["has_gauss"],
            npst["cached_gaussian"],
        )
    )
    pyst = state["python"]
    random.setstate((pyst["version"], tuple(pyst["internal"]), pyst["gauss_next"]))
    if loader_generator is not None and state["loader"] is not None:
        loader_generator.set_state(state["loader"])
    if state.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------------------------
# The state itself


@dataclass
class TrainState:
    """Everything at the end of a completed epoch.

    ``epoch`` is the number of completed epochs (1-based epoch index of the last one);
    ``finished`` is set when the run ended (all epochs or an early stop), so the next run with
    the same fingerprint starts afresh instead of resuming.
    """

    fingerprint: str
    stage: str
    epoch: int
    global_step: int
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    rng: dict[str, Any]
    best_val: float
    best_epoch: int
    best_model: dict[str, torch.Tensor]
    epochs_since_improve: int
    history: list[dict[str, float]] = field(default_factory=list)
    ema: dict[str, Any] | None = None
    best_ema: dict[str, torch.Tensor] | None = None
    scaler: dict[str, Any] | None = None  # GradScaler slot; bf16 autocast needs none
    finished: bool = False
    stopped_reason: str | None = None
    # Data-parallel runs: RNG states of ranks 1..N-1 (``rng`` is rank 0's), so a resumed
    # N-process run continues every rank's stream.  ``None`` for single-process runs.
    rank_rngs: list[dict[str, Any]] | None = None
    # The untrained network's validation loss (divergence guard); ``None``: not measured.
    initial_val: float | None = None
    # State the task keeps across epochs (``StageTask.extra_state``), e.g. Stage 3's EMA target
    # network; ``None`` for tasks without any.
    task_state: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        # Shallow on purpose: dataclasses.asdict would deep-copy every weight tensor.
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"format": STATE_FORMAT, **fields}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        fmt = data.get("format")
        if fmt != STATE_FORMAT:
            raise ValueError(f"unsupported training-state format {fmt!r} (expected {STATE_FORMAT})")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def save_train_state(state: TrainState, path: str | os.PathLike[str]) -> None:
    """Write ``state`` atomically to ``path``."""
    atomic_torch_save(state.to_dict(), path)


def load_train_state(path: str | os.PathLike[str], map_location: str = "cpu") -> TrainState:
    """Read a state written by :func:`save_train_state` (``weights_only=True``)."""
    data = torch.load(Path(path), map_location=map_location, weights_only=True)
    if not isinstance(data, dict):
        raise ValueError(f"{path} is not a training state (got {type(data).__name__})")
    return TrainState.from_dict(data)


def clone_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Detached CPU copies, so later in-place training updates cannot alter a saved 'best'."""
    return {k: v.detach().to("cpu", copy=True) for k, v in state.items()}
