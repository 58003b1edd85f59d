"""The token-grid preflight of data_processing: the autoencoder's rules, applied before generation."""

from __future__ import annotations

import pytest

from ups_kedro.config import ConfigError, parse
from ups_kedro.data.config import DataProcessingConfig
from ups_kedro.data.latent_grid import builtin_grid, check_latent_grid, latent_grid_problem


def ae(tokens: int | None, patch: int = 8, skip: bool = True) -> dict:
    return {"latent": {"tokens": tokens}, "encoder": {"patch_size": patch},
            "decoder": {"skip_patch_size": patch if skip else 0}}


def test_builtin_grid_follows_system_resolution_and_stride() -> None:
    cfg = parse(DataProcessingConfig, {"builtin": {"system": "vorticity2d", "resolution": 64},
                                       "downsample_space": 2}, "data_processing")
    assert builtin_grid(cfg) == (32, 32)
    cfg = parse(DataProcessingConfig, {"builtin": {"resolution": 1000},
                                       "downsample_space": 3}, "data_processing")
    assert builtin_grid(cfg) == (334,)  # [::3] of 1000 points


@pytest.mark.parametrize(("grid", "params"), [
    ((256,), ae(32)),                       # the 1D base configuration
    ((64, 64), ae(64)),                     # vorticity2d: 8×8 patches, one token each
    ((64, 64), ae(16, skip=False)),         # 4×4 tokens pooling 2×2 patches
    ((64, 64), {"latent": {"dim": 8}}),     # keys absent: left to the autoencoder
    ((64, 64), ae(None)),                   # null: one token per patch, whatever the grid
    ((256,), ae(None)),
])
def test_consistent_settings_pass(grid: tuple[int, ...], params: dict) -> None:
    assert latent_grid_problem(grid, params) is None


@pytest.mark.parametrize(("grid", "params", "match"), [
    ((64, 64), ae(32), r"latent\.tokens=32 must be a perfect square .* set it to 64"),
    ((64, 64), ae(16), r"skip_patch_size needs one token per patch: 64×64 / patch_size 8 = 64"),
    ((60, 60), ae(64), r"encoder\.patch_size=8 does not divide the 60×60 grid"),
    ((64, 64), ae(9, skip=False), r"tokens=9 \(3 per axis\) must divide the 8×8 patch grid"),
])
def test_inconsistent_settings_name_the_keys(grid, params, match) -> None:
    with pytest.raises(ConfigError, match=match) as err:
        check_latent_grid(grid, params, "data_processing.builtin.system='vorticity2d'")
    assert "data_processing.builtin.system='vorticity2d'" in str(err.value)
    assert "Nothing was generated" in str(err.value)
