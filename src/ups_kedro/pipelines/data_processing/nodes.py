"""Nodes of the ``data_processing`` pipeline: thin wrappers over ``ups_kedro.data``.

Two independent branches share the block ``data_processing``: the transient data set
(``raw_source`` → ``fields_{split}`` → ``normaliser``) and the steady (Darcy) problem of
Stage 4 (block ``steady``: ``steady_raw_source`` → ``steady_solutions_{split}`` /
``steady_coefficients_{split}`` → ``steady_normaliser``).  With ``steady.enabled: false`` every
steady node writes a small ``skipped`` record instead of its artifact.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from ups_kedro.config import parse
from ups_kedro.data.config import DataProcessingConfig
from ups_kedro.data.generate import ensure_builtin_file, generator_hash
from ups_kedro.data.latent_grid import builtin_grid, check_latent_grid, strided
from ups_kedro.data.prepare import (
    SPLITS,
    check_disjoint,
    describe_source,
    fit_normaliser,
    make_split_manifest,
    prepare_split,
)
from ups_kedro.data.steady import (
    darcy_generator_hash,
    describe_darcy_source,
    ensure_darcy_file,
    fit_steady_normaliser,
    is_skipped,
    prepare_steady_split,
    skipped_array,
    skipped_record,
)
from ups_kedro.datasets.array_dataset import ArrayBundle, ChunkedArray
from ups_kedro.paths import project_root
from ups_kedro.pipelines.tracking import log_metrics, set_tags

logger = logging.getLogger(__name__)
STAGE = "data_processing"
STEADY_OFF = "data_processing.steady.enabled is false: no steady (Darcy) data was prepared"


def _config(params: dict[str, Any]) -> DataProcessingConfig:
    return parse(DataProcessingConfig, params, STAGE)


def _source_file(root: Path, path: str | None, key: str, what: str) -> Path:
    """``<key>.file.path`` resolved against the project root; a clear error if it is missing."""
    resolved = Path(path or "")
    resolved = resolved if resolved.is_absolute() else root / resolved
    if path is None or not resolved.is_file():
        raise FileNotFoundError(f"{key}.file.path: no file at {resolved}; point it at {what} "
                                f"or set {key}.source to 'builtin'")
    return resolved


def acquire_raw_data(params: dict[str, Any], autoencoder: dict[str, Any] | None = None) -> dict:
    """Generate the built-in data set (or locate the user's PDEBench file) and describe it.

    ``autoencoder`` (the raw ``autoencoder`` parameter block) is read only to check, before
    anything is generated, that its token grid fits the fields this configuration produces:
    switching ``builtin.system`` to a 2D system with 1D token settings fails here, naming both
    keys, instead of after minutes of data generation.
    """
    cfg = _config(params)
    root = project_root()
    if cfg.source == "builtin":
        b = cfg.builtin
        check_latent_grid(builtin_grid(cfg), autoencoder,
                          f"data_processing.builtin.system={b.system!r} (builtin.resolution "
                          f"{b.resolution}, downsample_space {cfg.downsample_space})")
        path, seconds = ensure_builtin_file(b, root)
        extra = {"source": "builtin", "system": b.system, "generator_hash": generator_hash(b)}
        log_metrics(STAGE, {"generation_time_sec": seconds})
        return describe_source(path, "auto", None, None, extra)
    path = _source_file(root, cfg.file.path, "data_processing", "a PDEBench HDF5 file")
    info = describe_source(path, cfg.file.layout, cfg.file.fields, cfg.file.max_samples,
                           {"source": "file"})
    check_latent_grid(tuple(strided(n, cfg.downsample_space) for n in info["spatial_shape"]),
                      autoencoder, f"data_processing.file.path={str(path)!r} "
                      f"(grid {info['spatial_shape']}, downsample_space {cfg.downsample_space})")
    return info


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


# ------------------------------------------------------------------------------------------------
# the steady (Darcy) problem of Stage 4
# ------------------------------------------------------------------------------------------------
def _steady_off(cfg: DataProcessingConfig, **inputs: Any) -> bool:
    """Whether a steady node skips; refuses skipped inputs when the block is on (a partial run)."""
    if not cfg.steady.enabled:
        return True
    stale = [name for name, record in inputs.items() if is_skipped(record)]
    if stale:
        raise ValueError(
            f"data_processing: {', '.join(stale)} were written with data_processing.steady."
            "enabled false; re-run the steady branch: `kedro run --pipeline data_processing "
            "--tags steady`")
    return False


def acquire_steady_data(params: dict[str, Any]) -> dict:
    """Generate the built-in Darcy file (or locate the PDEBench Darcy file) and describe it."""
    cfg = _config(params)
    if _steady_off(cfg):
        logger.info("data_processing: steady data skipped (%s)", STEADY_OFF)
        set_tags({"ups.data_processing.steady_skipped": "true"})
        return skipped_record(STAGE, "steady_raw_source", STEADY_OFF)
    root, steady = project_root(), cfg.steady
    if steady.source == "builtin":
        path, seconds = ensure_darcy_file(steady.builtin, root)
        log_metrics(STAGE, {"steady_generation_time_sec": seconds})
        return describe_darcy_source(path, None, None, {
            "source": "builtin", "system": "darcy",
            "generator_hash": darcy_generator_hash(steady.builtin)})
    path = _source_file(root, steady.file.path, "data_processing.steady",
                        "a PDEBench Darcy file (2D_DarcyFlow_beta*_Train.hdf5)")
    return describe_darcy_source(path, steady.file.max_samples, steady.file.beta,
                                 {"source": "file", "system": "darcy"})


def split_steady_samples(steady_raw_source: dict, params: dict[str, Any]) -> dict:
    """Seeded, disjoint train/val/test sample indices (the steady split manifest)."""
    cfg = _config(params)
    if _steady_off(cfg, steady_raw_source=steady_raw_source):
        return skipped_record(STAGE, "steady_split_manifest", STEADY_OFF)
    manifest = make_split_manifest(steady_raw_source["n_samples"], cfg.steady.split,
                                   steady_raw_source["fingerprint"], "data_processing.steady.split")
    check_disjoint(manifest)
    logger.info("Split %d steady samples: %s", steady_raw_source["n_samples"],
                {s: len(manifest[s]) for s in SPLITS})
    return manifest


def prepare_steady_data(steady_raw_source: dict, steady_split_manifest: dict,
                        params: dict[str, Any]) -> tuple[ChunkedArray | ArrayBundle, ...]:
    """Solutions ``[n, 1, X, Y, 1]`` and coefficients ``[n, X, Y, 1]`` of every split."""
    cfg = _config(params)
    if _steady_off(cfg, steady_raw_source=steady_raw_source,
                   steady_split_manifest=steady_split_manifest):
        return (*(skipped_array(STAGE, f"steady_solutions_{s}", STEADY_OFF) for s in SPLITS),
                *(skipped_array(STAGE, f"steady_coefficients_{s}", STEADY_OFF) for s in SPLITS))
    steady = cfg.steady
    pairs = [prepare_steady_split(steady_raw_source, steady_split_manifest[s], s,
                                  steady_split_manifest["hash"], steady.downsample_space,
                                  steady.chunk_size)
             for s in SPLITS]
    return (*(p[0] for p in pairs), *(p[1] for p in pairs))


def compute_steady_normaliser(steady_solutions_train: ArrayBundle,
                              steady_coefficients_train: ArrayBundle,
                              params: dict[str, Any]) -> dict:
    """Solution and conditioning statistics from the training split only."""
    cfg = _config(params)
    if _steady_off(cfg, steady_solutions_train=steady_solutions_train,
                   steady_coefficients_train=steady_coefficients_train):
        return skipped_record(STAGE, "steady_normaliser", STEADY_OFF)
    normaliser = fit_steady_normaliser(steady_solutions_train, steady_coefficients_train)
    logger.info("Steady normaliser (train only): u mean %s std %s, conditioning %s",
                normaliser["mean"], normaliser["std"], normaliser["conditioning"])
    return normaliser
