"""Splits, PDEBench-protocol preparation and train-only normalisation.

Everything here streams: trajectories are read from the raw HDF5 file in chunks (h5py
slicing) and written chunk by chunk, so a multi-GB PDEBench file is never loaded whole.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ups_kedro.data.config import DataProcessingConfig, SplitConfig
from ups_kedro.data.generate import HASH_ATTR
from ups_kedro.data.pdebench import PDEBenchFormatError, open_pdebench
from ups_kedro.data.arrays import ArrayBundle, ChunkedArray

SPLITS = ("train", "val", "test")


def content_hash(obj: Any) -> str:
    """Short sha256 of a JSON-serialisable object (canonical key order)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def make_split_manifest(n_samples: int, cfg: SplitConfig, source_fingerprint: str,
                        key: str = "data_processing.split") -> dict:
    """Disjoint, seeded trajectory splits (``key`` names the parameter block in errors).

    Returns:
        ``{"train": [...], "val": [...], "test": [...], "n_samples", "seed", "mode",
        "source_fingerprint", "hash"}``; indices are sorted within each split.
    """
    n_test = max(1, round(cfg.test_fraction * n_samples))
    n_val = max(1, round(cfg.val_fraction * n_samples))
    if n_samples - n_test - n_val < 1:
        raise PDEBenchFormatError(
            f"{n_samples} samples cannot fill test ({n_test}), val ({n_val}) and a non-empty "
            f"train split: use more samples or smaller {key}.val_fraction / "
            f"{key}.test_fraction")
    rng = np.random.default_rng(cfg.seed)
    if cfg.mode == "pdebench":
        # PDEBench scores on the head of the file; val and train are drawn from the rest.
        test = np.arange(n_test)
        rest = n_test + rng.permutation(n_samples - n_test)
        val, train = rest[:n_val], rest[n_val:]
    else:
        perm = rng.permutation(n_samples)
        test, val, train = perm[:n_test], perm[n_test : n_test + n_val], perm[n_test + n_val :]
    manifest: dict[str, Any] = {
        "test": sorted(int(i) for i in test),
        "val": sorted(int(i) for i in val),
        "train": sorted(int(i) for i in train),
        "n_samples": n_samples,
        "seed": cfg.seed,
        "mode": cfg.mode,
        "source_fingerprint": source_fingerprint,
    }
    manifest["hash"] = content_hash(manifest)
    return manifest


def check_disjoint(manifest: dict) -> None:
    """Raise if any trajectory sits in two splits (a leak between train and evaluation)."""
    seen: dict[int, str] = {}
    for split in SPLITS:
        for idx in manifest[split]:
            if idx in seen:
                raise ValueError(f"trajectory {idx} is in both '{seen[idx]}' and '{split}' splits")
            seen[idx] = split


def _prepared_frames(n_frames: int, cfg: DataProcessingConfig, path: str) -> int:
    """Frames kept after time downsampling; fail clearly when the protocol cannot fit."""
    kept = len(range(0, n_frames, cfg.downsample_time))
    if kept < cfg.initial_step + 1:
        raise PDEBenchFormatError(
            f"{path}: {n_frames} frames downsampled by data_processing.downsample_time="
            f"{cfg.downsample_time} leave {kept} frames, fewer than data_processing.initial_step"
            f"={cfg.initial_step} + 1; lower downsample_time or initial_step"
        )
    return kept


def prepare_split(
    source: dict, indices: Sequence[int], cfg: DataProcessingConfig, split: str, manifest_hash: str
) -> ChunkedArray:
    """Stream one split's downsampled fields, channels-last [N, T', *space', C] float32."""
    if len(indices) == 0:
        raise PDEBenchFormatError(f"split '{split}' is empty: check data_processing.split."
                                  "val_fraction / test_fraction")
    path = source["path"]
    with open_pdebench(path, layout=source["layout"], fields=source.get("fields")) as reader:
        spatial = tuple(len(range(0, n, cfg.downsample_space)) for n in reader.spatial_shape)
        if min(spatial) < 2:
            raise PDEBenchFormatError(
                f"{path}: spatial shape {reader.spatial_shape} downsampled by "
                f"data_processing.downsample_space={cfg.downsample_space} leaves {spatial}"
            )
        _prepared_frames(reader.n_frames, cfg, path)
        coords = reader.coords(space_stride=cfg.downsample_space, time_stride=cfg.downsample_time)
        channels = list(reader.channels)
    t = np.asarray(coords["t"])
    frames = len(t)
    shape = (len(indices), frames, *spatial, len(channels))
    meta = {
        "split": split,
        "axes": ["sample", "time", *(["x", "y", "z"][: len(spatial)]), "channel"],
        "channels": channels,
        "indices": [int(i) for i in indices],
        "t": t.tolist(),
        "dt": float(t[1] - t[0]),
        "coords": [np.asarray(coords[a]).tolist() for a in ("x", "y") if a in coords],
        "initial_step": cfg.initial_step,
        "downsample_space": cfg.downsample_space,
        "downsample_time": cfg.downsample_time,
        "source_fingerprint": source["fingerprint"],
        "split_manifest_hash": manifest_hash,
    }
    return ChunkedArray(
        shape=shape,
        dtype="float32",
        chunks=_read_chunks(source, list(indices), cfg),
        meta=meta,
    )


def _read_chunks(source: dict, indices: list[int], cfg: DataProcessingConfig) -> Iterator[np.ndarray]:
    """Yield [chunk, T', *space', C] arrays; the reader checks every chunk for NaN/Inf."""
    with open_pdebench(source["path"], layout=source["layout"], fields=source.get("fields")) as reader:
        for start in range(0, len(indices), cfg.chunk_size):
            yield reader.read(
                indices[start : start + cfg.chunk_size],
                time_stride=cfg.downsample_time,
                space_stride=cfg.downsample_space,
            )


def fit_normaliser(train: ArrayBundle, chunk: int = 64) -> dict:
    """Per-channel mean and std from the TRAINING split only (float64 accumulators).

    Returns:
        ``{"channels", "mean": [C], "std": [C], "n_values", "split_manifest_hash"}``.
    """
    array = train.array
    channels = array.shape[-1]
    total = np.zeros(channels)
    total_sq = np.zeros(channels)
    count = 0
    for start in range(0, array.shape[0], chunk):
        block = np.asarray(array[start : start + chunk], dtype=np.float64).reshape(-1, channels)
        total += block.sum(axis=0)
        total_sq += np.square(block).sum(axis=0)
        count += block.shape[0]
    mean = total / count
    # Welford-free two-sums are fine in float64 for O(1)-scaled PDE fields.
    std = np.sqrt(np.maximum(total_sq / count - mean**2, 0.0))
    if np.any(std <= 1e-12):
        bad = [train.meta["channels"][i] for i in np.flatnonzero(std <= 1e-12)]
        raise ValueError(f"channel(s) {bad} are constant in the training split: cannot normalise")
    return {
        "channels": train.meta["channels"],
        "mean": mean.tolist(),
        "std": std.tolist(),
        "n_values": int(count),
        "split": "train",
        "split_manifest_hash": train.meta["split_manifest_hash"],
    }


def describe_source(path: Path, layout: str, fields: list[str] | None, max_samples: int | None,
                    extra: dict[str, Any]) -> dict:
    """Open a raw file, validate it and describe it (the ``raw_source`` dataset)."""
    with open_pdebench(path, layout=layout, fields=fields) as reader:
        n_samples = reader.n_samples if max_samples is None else min(reader.n_samples, max_samples)
        stat = path.stat()
        info = {
            "path": str(path),
            "layout": reader.layout,
            "fields": fields,
            "n_samples": int(n_samples),
            "n_frames": int(reader.n_frames),
            "spatial_shape": [int(n) for n in reader.spatial_shape],
            "channels": list(reader.channels),
            "attrs": {k: v for k, v in reader.attrs.items() if k != HASH_ATTR},
        }
    # Hashing a multi-GB file is too slow; size, mtime and shape identify it well enough.
    info["fingerprint"] = content_hash({**info, "size": stat.st_size, "mtime": int(stat.st_mtime),
                                        **extra})
    info.update(extra)
    return info
