"""Built-in data sets: real solvers writing PDEBench-layout HDF5 files.

* ``burgers``   → ``1D_Burgers_Sols_Nu{nu}.hdf5``: ``tensor`` [N, T, X], ``x-coordinate`` [X],
  ``t-coordinate`` [T+1], attr ``Nu``.  ETDRK4 pseudo-spectral (see ``solvers``).
* ``advection`` → ``1D_Advection_Sols_beta{beta}.hdf5``: same layout, attr ``beta``; exact.
* ``vorticity2d`` → ``2D_Vorticity_Nu{nu}.h5``: group-per-sample layout, ``data`` [T, X, Y, 1].

A file is regenerated only when its generator settings change: the settings' hash is stored as
the file attribute ``ups_generator_hash``, and the write is atomic (temp file, then rename).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from ups_kedro.data import solvers
from ups_kedro.data.config import BuiltinConfig
from ups_kedro.data.pdebench import write_group_file, write_tensor_file

logger = logging.getLogger(__name__)

#: Bump when the generators change in a way that alters the data for the same settings.
GENERATOR_VERSION = 2
_CHUNK = 64  # trajectories solved at once: bounds memory (X=1024, T=201 → ~100 MB float64)


#: File attribute holding the settings hash, so a generated file is reused only when it matches.
HASH_ATTR = "ups_generator_hash"


def settings_hash(cfg: Any, version: int, **extra: Any) -> str:
    """Hash of a generator config dataclass (``output_dir`` excluded), its version and extras."""
    payload = {k: v for k, v in asdict(cfg).items() if k != "output_dir"}
    payload.update(extra, generator_version=version)
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def generator_hash(cfg: BuiltinConfig) -> str:
    """Hash of everything that determines the generated data (output_dir excluded)."""
    return settings_hash(cfg, GENERATOR_VERSION)


def stored_generator_hash(path: Path) -> str | None:
    """The :data:`HASH_ATTR` attribute of an HDF5 file (None when absent or unreadable)."""
    try:
        with h5py.File(path, "r") as f:
            value = f.attrs.get(HASH_ATTR)
    except OSError:
        return None
    return value.decode() if isinstance(value, bytes) else value


def reuse_or_generate(path: Path, wanted: str, write: Callable[[Path, dict], None]) -> float:
    """Call ``write(path, attrs)`` unless ``path`` already holds data of hash ``wanted``.

    ``attrs`` carries the hash for the writer to store.  Returns the seconds spent (0.0 reused).
    """
    if path.is_file() and stored_generator_hash(path) == wanted:
        logger.info("Reusing built-in data %s (generator hash %s)", path, wanted)
        return 0.0
    start = time.perf_counter()
    write(path, {HASH_ATTR: wanted})
    seconds = time.perf_counter() - start
    logger.info("Generated %s in %.1f s", path, seconds)
    return seconds


def builtin_filename(cfg: BuiltinConfig) -> str:
    """PDEBench-style file name for the configured system."""
    if cfg.system == "burgers":
        return f"1D_Burgers_Sols_Nu{cfg.nu}.hdf5"
    if cfg.system == "advection":
        return f"1D_Advection_Sols_beta{cfg.beta}.hdf5"
    return f"2D_Vorticity_Nu{cfg.nu}.h5"


def ensure_builtin_file(cfg: BuiltinConfig, root: Path) -> tuple[Path, float]:
    """Generate the configured data set unless an identical one already exists.

    Returns:
        (path of the HDF5 file, seconds spent generating; 0.0 when reused).
    """
    path = (root / cfg.output_dir / builtin_filename(cfg)).resolve()
    seconds = reuse_or_generate(path, generator_hash(cfg),
                                lambda p, attrs: _GENERATORS[cfg.system](cfg, p, attrs))
    return path, seconds


def _grid(n: int) -> np.ndarray:
    """Cell centres of a periodic [0, 1) grid, as PDEBench stores them."""
    return (np.arange(n) + 0.5) / n


def _time_axes(cfg: BuiltinConfig) -> tuple[np.ndarray, np.ndarray]:
    """Frame times [T] and PDEBench's t-coordinate [T+1] (one extra trailing entry)."""
    t = np.linspace(0.0, cfg.t_final, cfg.n_frames)
    dt = t[1] - t[0]
    return t, np.append(t, t[-1] + dt)


def _solve_in_chunks(cfg: BuiltinConfig, make_ic, solve) -> np.ndarray:
    """Initial conditions from one seeded generator, solved chunk by chunk → float32."""
    rng = np.random.default_rng(cfg.seed)
    x = _grid(cfg.resolution)
    u0 = make_ic(rng, cfg.n_samples, x)
    t, _ = _time_axes(cfg)
    out = None
    for start in range(0, cfg.n_samples, _CHUNK):
        sol = solve(u0[start : start + _CHUNK], t).astype(np.float32)
        if out is None:
            out = np.empty((cfg.n_samples, *sol.shape[1:]), dtype=np.float32)
        out[start : start + len(sol)] = sol
    return out


def _generate_burgers(cfg: BuiltinConfig, path: Path, attrs: dict) -> None:
    tensor = _solve_in_chunks(
        cfg,
        solvers.burgers_initial_conditions,
        lambda u0, t: solvers.solve_burgers(u0, nu=cfg.nu, t_save=t),
    )
    _, t_coord = _time_axes(cfg)
    write_tensor_file(path, tensor, x=_grid(cfg.resolution), t=t_coord, attrs={"Nu": cfg.nu, **attrs})


def _generate_advection(cfg: BuiltinConfig, path: Path, attrs: dict) -> None:
    tensor = _solve_in_chunks(
        cfg,
        solvers.advection_initial_conditions,
        lambda u0, t: solvers.solve_advection(u0, beta=cfg.beta, t_save=t),
    )
    _, t_coord = _time_axes(cfg)
    write_tensor_file(
        path, tensor, x=_grid(cfg.resolution), t=t_coord, attrs={"beta": cfg.beta, **attrs}
    )


def _generate_vorticity(cfg: BuiltinConfig, path: Path, attrs: dict) -> None:
    tensor = _solve_in_chunks(
        cfg,
        lambda rng, n, x: solvers.vorticity_initial_conditions(rng, n, len(x)),
        lambda w0, t: solvers.solve_vorticity2d(w0, nu=cfg.nu, t_save=t),
    )
    t, _ = _time_axes(cfg)
    x = _grid(cfg.resolution)
    write_group_file(path, tensor[..., None], x=x, y=x, t=t, attrs={"Nu": cfg.nu, **attrs})


_GENERATORS = {
    "burgers": _generate_burgers,
    "advection": _generate_advection,
    "vorticity2d": _generate_vorticity,
}
