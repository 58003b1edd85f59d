"""Steady-state data for Stage 4: Darcy flow in PDEBench's Darcy layout, splits, normaliser.

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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ups_kedro.config import ConfigError
from ups_kedro.data.config import SplitConfig
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
# configuration (the ``steady_prior.data`` block)
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class DarcyBuiltinConfig:
    """The built-in Darcy data set (PDEBench's recipe by default, see ``data.darcy``).

    ``resolution`` is the solver grid (``downsample_space`` of the data block then strides
    it); ``coefficient`` is ``pdebench`` (thresholded Gaussian bumps) or ``grf`` (the FNO
    paper's thresholded Gaussian random field); ``nu`` takes the values ``high`` and
    ``high / contrast``.
    """

    n_samples: int = 256
    resolution: int = 32
    beta: float = 1.0
    coefficient: Literal["pdebench", "grf"] = "pdebench"
    high: float = 1.0
    contrast: float = 10.0
    seed: int = 0
    output_dir: str = "data/01_raw"

    def validate(self, where: str = "builtin") -> None:
        if self.n_samples < 3:
            raise ConfigError(f"{where}.n_samples must be ≥ 3 (one per split), got "
                              f"{self.n_samples}")
        if self.resolution < 4:
            raise ConfigError(f"{where}.resolution must be ≥ 4, got {self.resolution}")
        if not (math.isfinite(self.beta) and self.beta > 0):
            raise ConfigError(f"{where}.beta (the forcing) must be > 0, got {self.beta}")
        if not (math.isfinite(self.high) and self.high > 0):
            raise ConfigError(f"{where}.high must be > 0, got {self.high}")
        if not (math.isfinite(self.contrast) and self.contrast >= 1):
            raise ConfigError(f"{where}.contrast must be ≥ 1, got {self.contrast}")


@dataclass(frozen=True)
class DarcyFileConfig:
    """A real PDEBench Darcy file (``2D_DarcyFlow_beta*_Train.hdf5``).

    ``beta`` is the forcing; ``null`` reads it from the file attribute ``beta``.
    """

    path: str | None = None
    max_samples: int | None = None
    beta: float | None = None


@dataclass(frozen=True)
class SteadyDataConfig:
    """The ``steady_prior.data`` block: source, spatial downsampling, splits."""

    source: Literal["builtin", "file"] = "builtin"
    builtin: DarcyBuiltinConfig = field(default_factory=DarcyBuiltinConfig)
    file: DarcyFileConfig = field(default_factory=DarcyFileConfig)
    downsample_space: int = 1
    split: SplitConfig = field(default_factory=SplitConfig)
    chunk_size: int = 64

    def validate(self, where: str = "data") -> None:
        if self.source == "file" and not self.file.path:
            raise ConfigError(f"{where}.file.path is required when {where}.source is 'file'")
        for name in ("downsample_space", "chunk_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{where}.{name} must be ≥ 1, got {getattr(self, name)}")


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
                f"{path} has no 'beta' attribute: set steady_prior.data.file.beta to its forcing")
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
        raise PDEBenchFormatError(f"split '{split}' is empty: check steady_prior.data.split")
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
    "mean_field",
    "prepare_steady_split",
]
