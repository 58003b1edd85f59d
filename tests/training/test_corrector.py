"""Rollout corrector trained through its own rollout: does it actually correct?"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ups_kedro.config import parse
from ups_kedro.data.torch_data import LatentPairDataset
from ups_kedro.models.corrector import RolloutCorrector, RolloutCorrectorConfig
from ups_kedro.models.registry import build_model
from ups_kedro.training.config import TrainConfig
from ups_kedro.training.corrector import UnrolledCorrectorTask, make_student, relative_error
from ups_kedro.training.launcher import fit

TOKENS, DIM, DECAY = 16, 4, 0.9


def true_step(z: torch.Tensor) -> torch.Tensor:
    """Synthetic latent dynamics: advect one token to the right (periodic) and decay."""
    return DECAY * torch.roll(z, 1, dims=1)


def biased_operator(z: torch.Tensor) -> torch.Tensor:
    """The deliberately biased 'operator': advects but misses the decay (a learnable residual)."""
    return torch.roll(z, 1, dims=1)


def synthetic_latents(n: int, frames: int, seed: int) -> np.ndarray:
    """[n, frames, TOKENS, DIM] trajectories of :func:`true_step` from smooth random states."""
    g = torch.Generator().manual_seed(seed)
    k = torch.arange(TOKENS, dtype=torch.float32)
    phase = torch.rand(n, 1, DIM, generator=g) * 6.28
    amp = 0.5 + torch.rand(n, 1, DIM, generator=g)
    z = amp * torch.sin(2 * torch.pi * k[None, :, None] / TOKENS + phase)
    out = [z]
    for _ in range(frames - 1):
        out.append(true_step(out[-1]))
    return torch.stack(out, dim=1).numpy()


def rollout_error(model: RolloutCorrector | None, latents: np.ndarray, steps: int) -> float:
    """Mean relative error over ``steps`` rollout steps from frame 0."""
    z = torch.from_numpy(latents[:, 0])
    errs = []
    with torch.no_grad():
        for h in range(1, steps + 1):
            u = biased_operator(z)
            z = u if model is None else model.correct(z, u)
            errs.append(float(relative_error(z, torch.from_numpy(latents[:, h]), 0.01).mean()))
    return float(np.mean(errs))


def test_unrolled_training_reduces_rollout_error_of_a_biased_operator(tmp_path):
    torch.manual_seed(0)
    train = LatentPairDataset(synthetic_latents(64, 8, seed=0), horizon=4)
    val_latents = synthetic_latents(16, 9, seed=1)
    val = LatentPairDataset(val_latents, horizon=4)
    model = build_model("rollout_corrector", {"latent_dim": DIM, "latent_tokens": TOKENS,
                                              "hidden_dim": 16, "num_blocks": 1})
    before = rollout_error(model, val_latents, 8)
    # Zero-initialised output: an untrained corrector is exactly the operator.
    assert before == pytest.approx(rollout_error(None, val_latents, 8), rel=1e-6)
    cfg = parse(TrainConfig, {"epochs": 8, "batch_size": 32, "progress": False,
                              "optimizer": {"name": "adamw", "lr": 3e-3}}, "train")
    result = fit(model, UnrolledCorrectorTask(biased_operator, horizon=4), train, val, cfg,
                 stage="test_corrector")
    model.load_state_dict(result.model_state)
    model.eval()
    after = rollout_error(model, val_latents, 8)
    # Beyond the training horizon too (8 steps vs 4 trained): the residual is learnt, not memorised.
    assert after < 0.25 * before, (before, after)


def test_refiner_noise_steps_nfe_and_posterior_mean():
    cfg = RolloutCorrectorConfig(latent_dim=DIM, latent_tokens=TOKENS, hidden_dim=8,
                                 num_blocks=1, kind="refiner", refine_steps=3, num_samples=2)
    model = RolloutCorrector(cfg)
    assert model.nfe == 6 and model.steps_nfe(None) == 6
    assert cfg.sigmas()[0] == pytest.approx(cfg.sigma_max)
    assert cfg.sigmas()[-1] == pytest.approx(cfg.sigma_min)
    z = torch.randn(5, TOKENS, DIM)
    u = torch.randn(5, TOKENS, DIM)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a, b = model.correct(z, u, generator=g1), model.correct(z, u, generator=g2)
    assert a.shape == u.shape and torch.equal(a, b)  # seeded noise: reproducible
    assert not torch.equal(a, u)  # the noise is applied (zero-init head adds nothing back)
    assert torch.equal(model.correct(z, u, noise=False), u)
    with pytest.raises(ValueError, match="refine_steps=3"):
        model.correct(z, u, n_steps=2)


def test_student_of_a_refiner_is_one_evaluation_and_starts_from_its_weights():
    teacher = RolloutCorrector(RolloutCorrectorConfig(
        latent_dim=DIM, latent_tokens=TOKENS, hidden_dim=8, num_blocks=1, kind="refiner",
        refine_steps=2))
    student = make_student(teacher)
    assert student.config.kind == "deterministic" and student.nfe == 1
    assert torch.equal(student.lift.weight, teacher.lift.weight)
    assert student.lift.weight is not teacher.lift.weight


def test_student_of_a_frozen_teacher_trains():
    from ups_kedro.training.artifacts import freeze

    teacher = freeze(RolloutCorrector(RolloutCorrectorConfig(latent_dim=DIM,
                                                             latent_tokens=TOKENS)))
    student = make_student(teacher)
    assert all(p.requires_grad for p in student.parameters())
    assert not any(p.requires_grad for p in teacher.parameters())


@pytest.mark.parametrize("changes, field", [
    ({"kind": "deterministic", "refine_steps": 2}, "refine_steps"),
    ({"spatial_dims": 2, "latent_tokens": 12}, "latent_tokens"),
    ({"sigma_min": 0.1, "sigma_max": 0.01}, "sigma_min"),
    ({"kernel_size": 4}, "kernel_size"),
])
def test_bad_config_names_the_field(changes, field):
    with pytest.raises(ValueError, match=field):
        build_model("rollout_corrector", {"latent_dim": DIM, "latent_tokens": TOKENS, **changes})


def test_task_refuses_short_windows():
    task = UnrolledCorrectorTask(biased_operator, horizon=3)
    model = RolloutCorrector(RolloutCorrectorConfig(latent_dim=DIM, latent_tokens=TOKENS))
    batch = {"z": torch.zeros(2, TOKENS, DIM), "z_next": torch.zeros(2, 2, TOKENS, DIM)}
    with pytest.raises(ValueError, match="horizon >= 3"):
        task.training_loss(model, batch, 1)
