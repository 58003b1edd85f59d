"""Self-describing model checkpoints as a Kedro dataset.

A checkpoint is one plain dict — ``kind`` (model registry name), ``config`` (plain values),
``state_dict``, optional ``ema_state_dict``, ``normaliser`` and ``lineage`` (encoder hash,
split-manifest hash, config hash, git commit, MLflow run id, upstream checkpoints) — so the
weights are never orphaned from the shape that produced them.  It is saved atomically and
loaded with ``weights_only=True``, so loading an untrusted file cannot execute code.
"""

from __future__ import annotations

import pickle
from pathlib import Path, PurePosixPath
from typing import Any

import torch
from kedro.io import AbstractDataset

from ups_kedro.datasets.staging import producer_hint
from ups_kedro.errors import CorruptArtifactError, MissingUpstreamError
from ups_kedro.training.checkpoint import atomic_torch_save

REQUIRED_KEYS = ("kind", "config", "state_dict")


class CheckpointDataset(AbstractDataset[dict[str, Any], dict[str, Any] | None]):
    """Save/load a checkpoint dict at ``filepath`` (``.pt``, local filesystem).

    ``optional: true`` makes a missing file load as ``None`` (for checkpoints of optional
    stages: evaluation skips their variants; a consumer that needs one says so itself).
    """

    def __init__(self, filepath: str, optional: bool = False,
                 metadata: dict[str, Any] | None = None) -> None:
        self._filepath = PurePosixPath(filepath)
        self._optional = optional
        self.metadata = metadata

    def load(self) -> dict[str, Any] | None:
        path = Path(self._filepath)
        if not path.is_file() and self._optional:
            return None
        if not path.is_file():
            raise MissingUpstreamError(
                f"checkpoint {path} does not exist: {producer_hint(self)}")
        return load_checkpoint_file(path, producer_hint(self, "re-run"))

    def save(self, data: dict[str, Any]) -> None:
        _check(data, Path(self._filepath))
        atomic_torch_save(data, self._filepath)

    def _exists(self) -> bool:
        return Path(self._filepath).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._filepath), "optional": self._optional}


def load_checkpoint_file(path: Path, rerun: str) -> dict[str, Any]:
    """``torch.load(weights_only=True)`` of a checkpoint, with errors that say what to do.

    ``rerun`` completes the advice ("re-run `kedro run --pipeline operator` first").
    """
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:  # weights_only refused an object: code, not weights
        raise CorruptArtifactError(
            f"checkpoint {path} was refused: it holds objects other than plain tensors and values "
            f"(only weights are ever loaded; a file with pickled code is unsafe); {rerun} to "
            "replace it with a trusted one") from exc
    except (RuntimeError, EOFError, OSError, ValueError) as exc:  # truncated / not a torch file
        raise CorruptArtifactError(
            f"checkpoint {path} is corrupt (truncated or not a torch file: {type(exc).__name__}); "
            f"delete it and {rerun}") from exc
    _check(ckpt, path)
    return ckpt


def _check(ckpt: Any, path: Path) -> None:
    if not isinstance(ckpt, dict) or any(k not in ckpt for k in REQUIRED_KEYS):
        have = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise CorruptArtifactError(
            f"{path} is not a ups_kedro checkpoint: expected keys {REQUIRED_KEYS}, got {have}")
