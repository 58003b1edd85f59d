"""Does the autoencoder's token grid fit the data the configuration will produce?

The autoencoder lays its ``latent.tokens`` out as a grid of the data's dimension over patches of
``encoder.patch_size`` points, so the number of tokens follows from the data: changing
``data_processing.builtin.system`` from a 1D to a 2D system (or the resolution) changes what is
valid.  The autoencoder checks this itself, but only after data_processing has generated and
prepared the data (minutes, gigabytes).  :func:`check_latent_grid` applies the same rules to the
grid data_processing *will* write, before anything is generated, and names the user's keys.

Pure python on purpose: the data_processing node calls it without importing torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ups_kedro.config import ConfigError
from ups_kedro.data.config import DataProcessingConfig

#: Spatial dimension of each built-in system.
SYSTEM_DIMS = {"burgers": 1, "advection": 1, "vorticity2d": 2}


def strided(n: int, stride: int) -> int:
    """Points left by ``[::stride]`` on an axis of ``n`` points (the PDEBench downsampling)."""
    return len(range(0, int(n), int(stride)))


def builtin_grid(cfg: DataProcessingConfig) -> tuple[int, ...]:
    """The spatial grid of the prepared fields of a built-in data set (no data needed)."""
    side = strided(cfg.builtin.resolution, cfg.downsample_space)
    return (side,) * SYSTEM_DIMS[cfg.builtin.system]


def _lookup(params: Mapping[str, Any] | None, path: str) -> Any:
    """``params['a']['b']`` for ``path='a.b'``; None when any level is missing."""
    node: Any = params
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return node


def _side(tokens: int, dims: int) -> int | None:
    """Tokens per axis when ``tokens`` is a positive perfect ``dims``-th power, else None."""
    if tokens < 1:
        return None
    side = round(tokens ** (1.0 / dims))
    return next((s for s in (side - 1, side, side + 1) if s >= 1 and s**dims == tokens), None)


def latent_grid_problem(grid: tuple[int, ...], autoencoder: Mapping[str, Any] | None) -> str | None:
    """Why ``autoencoder`` params cannot encode fields on ``grid``; None when they can.

    The rules are the encoder's (``models.autoencoder_config.GridEncoderConfig.check``) and,
    with the skip path (``decoder.skip_patch_size`` > 0), the one-patch-per-token rule;
    ``latent.tokens: null`` (one token per patch) always fits a grid the patches divide.  Keys
    absent from the parameters are not checked here (the autoencoder checks its own defaults).
    """
    tokens = _lookup(autoencoder, "latent.tokens")
    patch = _lookup(autoencoder, "encoder.patch_size")
    skip = bool(_lookup(autoencoder, "decoder.skip_patch_size"))
    if not isinstance(patch, int) or patch < 1:
        return None
    dims = len(grid)
    shape = "×".join(map(str, grid))
    if any(n % patch for n in grid):
        return (f"autoencoder.encoder.patch_size={patch} does not divide the {shape} grid; "
                f"choose a divisor of {grid[0]}")
    patches = [n // patch for n in grid]
    want = patches[0] ** dims  # one patch per token: the only choice with the skip path
    if not isinstance(tokens, int):
        return None  # null: one token per patch
    side = _side(tokens, dims)
    kind = "a positive integer" if dims == 1 else f"a perfect {'square' if dims == 2 else 'cube'}"
    if side is None:
        return (f"autoencoder.latent.tokens={tokens} must be {kind} for {dims}D data (the "
                f"tokens form a grid); with patch_size {patch} on {shape} set it to {want}")
    if any(p % side for p in patches):
        return (f"autoencoder.latent.tokens={tokens} ({side} per axis) must divide the "
                f"{'×'.join(map(str, patches))} patch grid evenly; set it to {want}")
    if skip and side != patches[0]:
        return (f"autoencoder.latent.tokens={tokens} with decoder.skip_patch_size needs one "
                f"token per patch: {shape} / patch_size {patch} = {want} tokens; set "
                f"autoencoder.latent.tokens={want} or null (or decoder.skip_patch_size=0)")
    return None


def check_latent_grid(grid: tuple[int, ...], autoencoder: Mapping[str, Any] | None,
                      cause: str) -> None:
    """Raise :class:`ConfigError` naming ``cause`` (the data keys) and the autoencoder keys.

    Args:
        grid: spatial shape of the prepared fields, e.g. ``(32, 32)``.
        autoencoder: the raw ``autoencoder`` parameter block.
        cause: what produced ``grid``, e.g. ``"data_processing.builtin.system='vorticity2d'
            (resolution 64, downsample_space 2)"``.
    """
    problem = latent_grid_problem(grid, autoencoder)
    if problem:
        raise ConfigError(
            f"{cause} gives {len(grid)}D fields of {'×'.join(map(str, grid))} points, which the "
            f"autoencoder cannot encode: {problem}. Nothing was generated or prepared. (For the "
            "built-in 2D data, `kedro run --env vorticity2d` is a consistent preset.)")
