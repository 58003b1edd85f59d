"""Nodes of the ``data_processing`` pipeline: thin wrappers over ``ups_kedro.data``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ups_kedro.config import parse
from ups_kedro.data.config import DataProcessingConfig
from ups_kedro.data.generate import ensure_builtin_file, generator_hash
from ups_kedro.data.prepare import (
    check_disjoint,
    describe_source,
    fit_normaliser,
    make_split_manifest,
    prepare_split,
)
from ups_kedro.datasets.array_dataset import ArrayBundle, ChunkedArray
from ups_kedro.paths import project_root
from ups_kedro.pipelines.tracking import log_metrics

logger = logging.getLogger(__name__)
STAGE = "data_processing"


def _config(params: dict[str, Any]) -> DataProcessingConfig:
    return parse(DataProcessingConfig, params, STAGE)


def acquire_raw_data(params: dict[str, Any]) -> dict:
    """Generate the built-in data set (or locate the user's PDEBench file) and describe it."""
    cfg = _config(params)
    root = project_root()
    if cfg.source == "builtin":
        path, seconds = ensure_builtin_file(cfg.builtin, root)
        extra = {"source": "builtin", "system": cfg.builtin.system,
                 "generator_hash": generator_hash(cfg.builtin)}
        log_metrics(STAGE, {"generation_time_sec": seconds})
        return describe_source(path, "auto", None, None, extra)
    path = Path(cfg.file.path)
    path = path if path.is_absolute() else root / path
    if not path.is_file():
        raise FileNotFoundError(
            f"data_processing.file.path: no file at {path}; point it at a PDEBench HDF5 file "
            "or set data_processing.source to 'builtin'"
        )
    return describe_source(path, cfg.file.layout, cfg.file.fields, cfg.file.max_samples,
                           {"source": "file"})


def split_trajectories(raw_source: dict, params: dict[str, Any]) -> dict:
    """Seeded, disjoint train/val/test trajectory indices (the split manifest)."""
    cfg = _config(params)
    manifest = make_split_manifest(raw_source["n_samples"], cfg.split, raw_source["fingerprint"])
    check_disjoint(manifest)
    logger.info("Split %d trajectories: %s", raw_source["n_samples"],
                {s: len(manifest[s]) for s in ("train", "val", "test")})
    return manifest


def prepare_fields(
    raw_source: dict, split_manifest: dict, params: dict[str, Any]
) -> tuple[ChunkedArray, ChunkedArray, ChunkedArray]:
    """Downsample each split per PDEBench's protocol (physical units, channels-last)."""
    cfg = _config(params)
    return tuple(  # type: ignore[return-value]
        prepare_split(raw_source, split_manifest[s], cfg, s, split_manifest["hash"])
        for s in ("train", "val", "test")
    )


def compute_normaliser(fields_train: ArrayBundle) -> dict:
    """Per-channel statistics from the training split only."""
    normaliser = fit_normaliser(fields_train)
    logger.info("Normaliser (train only): mean %s std %s", normaliser["mean"], normaliser["std"])
    return normaliser
