"""Rollout protocol: frames scored, persistence, feedback of the model's own predictions."""

from __future__ import annotations

import numpy as np
import torch

from ups_kedro.evaluation.rollout import (
    latent_rollout,
    one_step_rollout,
    persistence_rollout,
    reconstruct,
    scored_frames,
)

NORM = {"mean": [0.5], "std": [2.0]}


def _fields() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.normal(size=(3, 12, 8, 1)).astype(np.float32)


def identity(x: torch.Tensor) -> torch.Tensor:
    return x


def test_scored_frames_follow_pdebench_protocol() -> None:
    assert scored_frames(41, 10).tolist() == list(range(10, 41))
    assert scored_frames(41, 10, 2).tolist() == list(range(11, 41, 2))


def test_identity_surrogate_equals_persistence() -> None:
    fields = _fields()
    pred = latent_rollout(fields, NORM, identity, identity, identity, initial_step=4, batch_size=2)
    np.testing.assert_allclose(pred, persistence_rollout(fields, 4), rtol=1e-6, atol=1e-6)
    assert pred.shape == (3, 8, 8, 1)


def test_rollout_feeds_back_its_own_predictions() -> None:
    fields = _fields()
    # A step that adds 1 (in normalised units = 2 physical) accumulates over the rollout,
    # while the teacher-forced one-step prediction always starts from the truth.
    def plus_one(z: torch.Tensor) -> torch.Tensor:
        return z + 1.0

    roll = latent_rollout(fields, NORM, identity, plus_one, identity, initial_step=4)
    np.testing.assert_allclose(roll[:, -1], fields[:, 3] + 2.0 * 8, rtol=1e-5)
    one = one_step_rollout(fields, NORM, identity, plus_one, identity, initial_step=4)
    np.testing.assert_allclose(one, fields[:, 3:11] + 2.0, rtol=1e-5, atol=1e-5)


def test_reconstruct_identity_is_exact() -> None:
    fields = _fields()
    np.testing.assert_allclose(reconstruct(fields, NORM, identity, identity, batch_size=5), fields,
                               rtol=1e-6, atol=1e-6)
