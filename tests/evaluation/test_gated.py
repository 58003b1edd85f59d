"""Gated correction: which steps and samples go through the corrector."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ups_kedro.evaluation.rollout import latent_rollout
from ups_kedro.evaluation.variants import gated_variant, step_residual
from ups_kedro.models.registry import build_model


def _corrector() -> torch.nn.Module:
    return build_model("diffusion_residual", {
        "latent_dim": 4, "latent_tokens": 2, "hidden_dim": 8, "num_layers": 2,
        "parameterisation": "consistency", "residual_scale": 1.0}).eval()


class Shift(torch.nn.Module):
    """Op(z) = z + 0.1: a known change per step."""

    def forward(self, z: torch.Tensor, dt: float) -> torch.Tensor:
        return z + 0.1


def test_step_residual_is_relative_rms_change() -> None:
    z = torch.ones(3, 2, 4)
    assert step_residual(z, z * 1.5).tolist() == pytest.approx([0.5] * 3)


def _rollout(variant, n_steps: int = 6) -> np.ndarray:
    fields = np.ones((2, 1 + n_steps, 2, 4), np.float32)
    identity = lambda u: u  # noqa: E731 - the "autoencoder" is the identity here
    return latent_rollout(fields, {"mean": [0.0], "std": [1.0]}, identity, variant.step,
                          identity, initial_step=1, on_start=variant.reset)


def test_every_k_steps_per_trajectory() -> None:
    v = gated_variant("g", Shift(), 1.0, _corrector(), 1, None, correct_every=3)
    _rollout(v)
    stats = v.stats()
    assert stats["corrected_fraction"] == pytest.approx(2 / 6)  # steps 3 and 6 of 6
    assert stats["nfe_per_step"] == pytest.approx(1 + 2 / 6)  # one student call each
    v.clear_stats()
    assert v.stats()["corrected_fraction"] == 0


def test_threshold_selects_fast_changing_samples() -> None:
    # Op adds 0.1 to ones: relative change 0.1 at the first step, smaller later.
    never = gated_variant("g", Shift(), 1.0, _corrector(), 1, 0.5, correct_every=0)
    _rollout(never)
    assert never.stats()["corrected_fraction"] == 0
    always = gated_variant("g", Shift(), 1.0, _corrector(), 1, 0.01, correct_every=0)
    _rollout(always)
    assert always.stats()["corrected_fraction"] == 1
