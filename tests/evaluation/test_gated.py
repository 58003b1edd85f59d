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


class Scale(torch.nn.Module):
    """Op(z) = 1.1 z: the relative change of every sample and step is exactly 0.1."""

    def forward(self, z: torch.Tensor, dt: float) -> torch.Tensor:
        return 1.1 * z


def test_threshold_calibrated_as_a_quantile_of_validation_change() -> None:
    from ups_kedro.evaluation.suite import calibrate_threshold
    from ups_kedro.evaluation.surrogate import Surrogate

    identity = lambda u: u  # noqa: E731 - the "autoencoder" is the identity here
    s = Surrogate(encode=identity, decode=identity, operator=Shift(), dt=1.0, time_stride=1,
                  normaliser={"mean": [0.0], "std": [1.0]})
    # Frames of constant value c: Op adds 0.1, relative change 0.1 / c.
    values = np.array([1.0, 2.0, 4.0, 5.0], np.float32)
    fields = np.broadcast_to(values[None, :, None, None], (3, 4, 2, 4)).copy()
    # initial_step 2: frames 1.. (values 2, 4, 5) are the ones a rollout visits.
    assert calibrate_threshold(s, fields, 2, 1.0) == pytest.approx(0.1 / 2)
    assert calibrate_threshold(s, fields, 2, 0.0) == pytest.approx(0.1 / 5)
    s.operator = Scale()
    assert calibrate_threshold(s, fields, 1, 0.5) == pytest.approx(0.1)


def test_gated_rollout_corrector_sees_the_state() -> None:
    from ups_kedro.models.corrector import RolloutCorrector

    class Recorder(RolloutCorrector):
        seen: list = []

        def correct(self, z, u, generator=None, noise=True, n_steps=None):
            Recorder.seen.append((z.clone(), u.clone()))
            return u

    cfg = build_model("rollout_corrector", {"latent_dim": 4, "latent_tokens": 2}).config
    v = gated_variant("g", Shift(), 1.0, Recorder(cfg), 1, None, correct_every=1)
    _rollout(v, n_steps=2)
    z, u = Recorder.seen[0]
    torch.testing.assert_close(u, z + 0.1)  # (state, Op(state)), not (Op(state), Op(state))
    assert v.stats()["nfe_per_step"] == 2


def test_residual_quantile_and_threshold_are_exclusive() -> None:
    from ups_kedro.config import ConfigError, parse
    from ups_kedro.evaluation.suite import GatedParams

    with pytest.raises(ConfigError, match="not both"):
        parse(GatedParams, {"residual_threshold": 0.1, "residual_quantile": 0.5}, "gated")
    with pytest.raises(ConfigError, match="residual_quantile"):
        parse(GatedParams, {"residual_quantile": 1.5}, "gated")
