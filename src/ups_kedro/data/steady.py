"""Steady-state data for Stage 4: Darcy flow in PDEBench's Darcy layout, splits, normaliser.

Prepared by the ``data_processing`` pipeline (block ``data_processing.steady``, datasets
``data_processing.steady_*``); trained on by ``steady_prior``.

Problem (PDEBench ``2D_DarcyFlow_beta*.hdf5``): ``-div(nu(x) grad u(x)) = beta`` on the unit
square with ``u = 0`` on the boundary, a random two-valued coefficient ``nu`` and a constant
forcing ``beta`` (solver and coefficients: :mod:`ups_kedro.data.darcy`).

* The built-in data set is written as a PDEBench Darcy file (``tensor`` [N, 1, X, Y],
  ``nu`` [N, X, Y], attr ``beta``) under ``output_dir``; it is regenerated only when its
  generator settings change (their hash is the file attribute ``ups_generator_hash``, as in
  :mod:`ups_kedro.data.generate`).  A real PDEBench Darcy file is read the same way.
* Prepared arrays per split: solutions ``[n, 1, X, Y, 1]`` (one "frame", channels-last, so the
  autoencoder and the PDEBench metrics take them unchanged) and coefficients ``[n, X, Y, 1]``.
* The normaliser comes from the training split only: per-channel mean/std of ``u`` (what the
  autoencoder sees) and mean/std of ``log nu`` plus the forcing scale (what the prior's
  conditioning sees, :func:`conditioning_fields`).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ups_kedro.data.config import DarcyBuiltinConfig, DarcyFileConfig, SteadyDataConfig
from ups_kedro.data.darcy import darcy_grid, generate_darcy
from ups_kedro.data.generate import reuse_or_generate, settings_hash
from ups_kedro.data.pdebench import PDEBenchFormatError, open_pdebench, write_darcy_file
from ups_kedro.data.prepare import describe_source, fit_normaliser
from ups_kedro.data.arrays import ArrayBundle, ChunkedArray

logger = logging.getLogger(__name__)

#: Bump when the generator changes in a way that alters the data for the same settings.
GENERATOR_VERSION = 1
#: Channels of :func:`conditioning_fields`, in order.
CONDITIONING_CHANNELS: tuple[str, ...] = ("log_nu", "beta")


# ------------------------------------------------------------------------------------------------
# "skipped" records (``data_processing.steady.enabled: false`` or ``steady_prior.train.epochs: 0``)
# ------------------------------------------------------------------------------------------------
def skipped_record(stage: str, what: str, reason: str) -> dict:
    """The small JSON record a switched-off step writes in place of its artifact."""
    return {"skipped": True, "stage": stage, "what": what, "reason": reason}


def skipped_array(stage: str, what: str, reason: str) -> ArrayBundle:
    """:func:`skipped_record` as an (empty) array dataset."""
    return ArrayBundle(np.zeros((0,), dtype=np.float32), skipped_record(stage, what, reason))


def is_skipped(record: Any) -> bool:
    """True for a :func:`skipped_record` (a JSON dict, an array bundle or a checkpoint)."""
    if isinstance(record, ArrayBundle):
        record = record.meta
    return isinstance(record, dict) and bool(record.get("skipped"))


def skip_reason(record: Any) -> str:
    """The ``reason`` of a skipped record ('' when it has none)."""
    meta = record.meta if isinstance(record, ArrayBundle) else record
    return str(meta.get("reason", "")) if isinstance(meta, dict) else ""


# ------------------------------------------------------------------------------------------------
# the built-in data set
# ------------------------------------------------------------------------------------------------
def darcy_generator_hash(cfg: DarcyBuiltinConfig) -> str:
    """Hash of everything that determines the generated data (``output_dir`` excluded)."""
    return settings_hash(cfg, GENERATOR_VERSION, generator="darcy")


def darcy_filename(cfg: DarcyBuiltinConfig) -> str:
    """PDEBench's name for a Darcy file of this forcing."""
    return f"2D_DarcyFlow_beta{cfg.beta}_Train.hdf5"


def ensure_darcy_file(cfg: DarcyBuiltinConfig, root: Path) -> tuple[Path, float]:
    """Generate the built-in Darcy file unless an identical one already exists.

    Returns:
        (path of the PDEBench Darcy file, seconds spent generating; 0.0 when reused).
    """
    path = (root / cfg.output_dir / darcy_filename(cfg)).resolve()

    def write(target: Path, attrs: dict) -> None:
        solution, nu = generate_darcy(
            np.random.default_rng(cfg.seed), cfg.n_samples, cfg.resolution, cfg.beta,
            kind=cfg.coefficient, high=cfg.high, contrast=cfg.contrast)
        x, y = darcy_grid(cfg.resolution)
        write_darcy_file(target, solution, nu, x, y, attrs={
            "beta": cfg.beta, "coefficient": cfg.coefficient, "high": cfg.high,
            "contrast": cfg.contrast, **attrs})

    return path, reuse_or_generate(path, darcy_generator_hash(cfg), write)


def describe_darcy_source(path: Path, max_samples: int | None, beta: float | None,
                          extra: dict[str, Any]) -> dict:
    """Validate a Darcy file and describe it (the ``raw_source`` record), forcing included.

    ``beta`` overrides the file's ``beta`` attribute; one of the two must exist.
    """
    info = describe_source(path, "darcy", None, max_samples, extra)
    if beta is None:
        beta = info["attrs"].get("beta")
        if beta is None:
            raise PDEBenchFormatError(
                f"{path} has no 'beta' attribute: set data_processing.steady.file.beta to its forcing")
    beta = float(np.asarray(beta).reshape(-1)[0])
    if not (math.isfinite(beta) and beta > 0):
        raise PDEBenchFormatError(f"{path}: the forcing beta must be > 0, got {beta}")
    info["beta"] = beta
    return info


# ------------------------------------------------------------------------------------------------
# prepared splits and the normaliser
# ------------------------------------------------------------------------------------------------
def prepare_steady_split(
    source: dict, indices: Sequence[int], split: str, manifest_hash: str,
    downsample_space: int = 1, chunk_size: int = 64,
) -> tuple[ChunkedArray, ChunkedArray]:
    """Stream one split: solutions ``[n, 1, X', Y', 1]`` and coefficients ``[n, X', Y', 1]``."""
    if len(indices) == 0:
        raise PDEBenchFormatError(f"split '{split}' is empty: check data_processing.steady.split")
    path = source["path"]
    with open_pdebench(path, layout="darcy") as reader:
        coords = reader.coords(space_stride=downsample_space)  # also checks the stride
        spatial = tuple(len(c) for c in (coords["x"], coords["y"]))
    meta = {
        "split": split,
        "indices": [int(i) for i in indices],
        "coords": [np.asarray(coords[a]).tolist() for a in ("x", "y")],
        "beta": float(source["beta"]),
        "downsample_space": downsample_space,
        "source_fingerprint": source["fingerprint"],
        "split_manifest_hash": manifest_hash,
    }
    n = len(indices)
    solutions = ChunkedArray(
        (n, 1, *spatial, 1), "float32",
        _chunks(path, list(indices), downsample_space, chunk_size, coefficient=False),
        {**meta, "axes": ["sample", "time", "x", "y", "channel"], "channels": ["u"],
         "t": [0.0], "dt": 1.0, "initial_step": 0})
    coefficients = ChunkedArray(
        (n, *spatial, 1), "float32",
        _chunks(path, list(indices), downsample_space, chunk_size, coefficient=True),
        {**meta, "axes": ["sample", "x", "y", "channel"], "channels": ["nu"]})
    return solutions, coefficients


def _chunks(path: str, indices: list[int], stride: int, chunk: int,
            coefficient: bool) -> Iterator[np.ndarray]:
    with open_pdebench(path, layout="darcy") as reader:
        for start in range(0, len(indices), chunk):
            idx = indices[start:start + chunk]
            yield (reader.read_coefficient(idx, space_stride=stride) if coefficient
                   else reader.read(idx, space_stride=stride))


def fit_steady_normaliser(solutions_train: ArrayBundle, coefficients_train: ArrayBundle) -> dict:
    """Statistics from the TRAINING split only.

    Returns:
        :func:`~ups_kedro.data.prepare.fit_normaliser` of the solutions (``mean``/``std`` per
        channel, what the autoencoder normalises with) plus ``conditioning``:
        ``{"channels", "log_nu_mean", "log_nu_std", "beta_scale"}``.
    """
    normaliser = fit_normaliser(solutions_train)
    log_nu = np.log(np.asarray(coefficients_train.array, dtype=np.float64))
    std = float(log_nu.std())
    if not std > 1e-12:
        raise ValueError("the coefficient nu is constant over the training split: nothing to "
                         "condition on")
    normaliser["conditioning"] = {
        "channels": list(CONDITIONING_CHANNELS),
        "log_nu_mean": float(log_nu.mean()),
        "log_nu_std": std,
        "beta_scale": float(coefficients_train.meta["beta"]),
    }
    return normaliser


def conditioning_fields(nu: np.ndarray, beta: float | np.ndarray, normaliser: dict) -> np.ndarray:
    """What defines a steady state, as channels: ``[n, X, Y, 2]`` float32.

    Channel 0 is ``(log nu - mean) / std`` (training statistics), channel 1 the forcing
    ``beta / beta_scale`` (1 for the training forcing), constant over the domain.

    Args:
        nu: coefficient ``[n, X, Y]`` or ``[n, X, Y, 1]``, > 0.
        beta: the forcing, a scalar or one per sample ``[n]``.
        normaliser: from :func:`fit_steady_normaliser`.
    """
    nu = np.asarray(nu, dtype=np.float64)
    if nu.ndim == 4 and nu.shape[-1] == 1:
        nu = nu[..., 0]
    if nu.ndim != 3:
        raise ValueError(f"nu must be [n, X, Y] or [n, X, Y, 1], got {nu.shape}")
    if not np.all(nu > 0):
        raise ValueError("nu must be strictly positive")
    stats = normaliser["conditioning"]
    beta = np.broadcast_to(np.asarray(beta, dtype=np.float64).reshape(-1), (nu.shape[0],))
    log_nu = (np.log(nu) - stats["log_nu_mean"]) / stats["log_nu_std"]
    forcing = np.broadcast_to((beta / stats["beta_scale"])[:, None, None], nu.shape)
    return np.stack([log_nu, forcing], axis=-1).astype(np.float32)


def mean_field(solutions_train: np.ndarray, chunk: int = 256) -> np.ndarray:
    """The training-mean steady field ``[1, 1, X, Y, C]`` (the trivial baseline)."""
    total = np.zeros(solutions_train.shape[1:], dtype=np.float64)
    for start in range(0, solutions_train.shape[0], chunk):
        total += np.asarray(solutions_train[start:start + chunk], dtype=np.float64).sum(axis=0)
    return (total / solutions_train.shape[0])[None].astype(np.float32)


__all__ = [
    "CONDITIONING_CHANNELS",
    "DarcyBuiltinConfig",
    "DarcyFileConfig",
    "SteadyDataConfig",
    "conditioning_fields",
    "darcy_filename",
    "darcy_generator_hash",
    "describe_darcy_source",
    "ensure_darcy_file",
    "fit_steady_normaliser",
    "is_skipped",
    "mean_field",
    "prepare_steady_split",
    "skip_reason",
    "skipped_array",
    "skipped_record",
]
