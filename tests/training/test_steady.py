"""Stage 4 task: loss structure, per-step errors, data helpers and a training smoke test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch

from ups_kedro.models.steady_prior import SteadyPrior, SteadyPriorConfig
from ups_kedro.training.config import OptimizerConfig, TrainConfig
from ups_kedro.training.launcher import fit
from ups_kedro.training.steady import (
    SteadyLatentDataset,
    SteadyPriorTask,
    conditioning_tokens,
    mean_initial_guess,
    refinement_errors,
)

N, D, CC = 8, 4, 3


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Tiny models run fastest single-threaded (and do not fight other test processes)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _steady_data(m: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(cond [m, N, Cc], z_star [m, N, D])`` with ``z* = g(cond)``, one fixed smooth ``g``."""
    g = torch.Generator().manual_seed(123)  # the map is the same for every split
    w1, w2 = torch.randn(CC, 16, generator=g), torch.randn(16, D, generator=g) / 4
    cond = torch.randn(m, N, CC, generator=torch.Generator().manual_seed(seed))
    return cond, torch.tanh(cond @ w1) @ w2


def _prior(architecture: str = "mlp", **kw: object) -> SteadyPrior:
    base = dict(latent_dim=D, latent_tokens=N, cond_dim=CC, hidden_dim=32, num_steps=4,
                architecture=architecture)
    return SteadyPrior(SteadyPriorConfig(**{**base, **kw}))


def _batch(m: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    cond, z_star = _steady_data(m, seed)
    return {"z0": torch.zeros_like(z_star), "cond": cond, "z_star": z_star}


def _perturbed(model: SteadyPrior) -> SteadyPrior:
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.1)
    return model


# ---------------------------------------------------------------------------------- the loss


def test_loss_is_final_plus_weighted_intermediate() -> None:
    torch.manual_seed(0)
    model = _perturbed(_prior())
    batch = _batch()
    task = SteadyPriorTask(lambda_intermediate=0.3)
    loss, comps = task.training_loss(model, batch, epoch=1)
    traj = model.trajectory(batch["z0"], batch["cond"]).detach()
    final = (traj[:, -1] - batch["z_star"]).square().mean()
    inter = torch.stack([(traj[:, s] - batch["z_star"]).square().mean() for s in (1, 2, 3)]).mean()
    assert comps["final"] == pytest.approx(float(final), rel=1e-5)
    assert comps["intermediate"] == pytest.approx(float(inter), rel=1e-5)
    assert float(loss.detach()) == pytest.approx(float(final + 0.3 * inter), rel=1e-5)
    assert loss.requires_grad


def test_single_step_has_no_intermediate_term() -> None:
    model = _perturbed(_prior(num_steps=1))
    loss, comps = SteadyPriorTask(1.0).training_loss(model, _batch(), epoch=1)
    assert comps["intermediate"] == 0.0
    assert float(loss.detach()) == pytest.approx(comps["final"], rel=1e-6)


def test_validation_reports_error_per_refinement_step() -> None:
    model = _prior(num_steps=3)
    batch = _batch()
    with torch.no_grad():
        loss, comps = SteadyPriorTask().validation_loss(model.eval(), batch)
    assert {f"rel_err_step_{k}" for k in range(4)} <= set(comps)
    # Untrained prior = identity; z0 = 0 gives relative error exactly 1 at every step.
    for k in range(4):
        assert comps[f"rel_err_step_{k}"] == pytest.approx(1.0)
    assert float(loss) == pytest.approx(comps["final"] * 1.1, rel=1e-6)  # intermediate == final


def test_refinement_errors_match_relative_l2() -> None:
    z_star = torch.randn(5, N, D)
    states = torch.stack([torch.zeros_like(z_star), 0.5 * z_star, z_star], dim=1)
    errs = refinement_errors(states, z_star)
    assert errs == pytest.approx([1.0, 0.5, 0.0], abs=1e-6)


def test_missing_batch_key_and_bad_lambda_are_named() -> None:
    batch = _batch()
    del batch["cond"]
    with pytest.raises(KeyError, match="cond"):
        SteadyPriorTask().training_loss(_prior(), batch, epoch=1)
    with pytest.raises(ValueError, match="lambda_intermediate"):
        SteadyPriorTask(lambda_intermediate=-0.1)


# ---------------------------------------------------------------------------- data helpers


def test_conditioning_tokens_follow_the_token_grid() -> None:
    b, x, y, c = 2, 8, 12, 2
    fields = torch.arange(b * x * y * c, dtype=torch.float32).reshape(b, x, y, c)
    tokens = conditioning_tokens(fields, latent_tokens=4)  # a 2 x 2 token grid of 4 x 6 patches
    assert tokens.shape == (b, 4, 4 * 6 * c)
    # Token 1 is row 0, column 1 (row-major, first axis slowest): x in [0, 4), y in [6, 12).
    torch.testing.assert_close(tokens[:, 1], fields[:, 0:4, 6:12].reshape(b, -1))
    torch.testing.assert_close(tokens[:, 2], fields[:, 4:8, 0:6].reshape(b, -1))
    one_d = conditioning_tokens(torch.randn(2, 16, 3), latent_tokens=4)
    assert one_d.shape == (2, 4, 12)
    with pytest.raises(ValueError, match="perfect power"):
        conditioning_tokens(fields, latent_tokens=5)
    with pytest.raises(ValueError, match="divide"):
        conditioning_tokens(torch.randn(1, 10, 10, 1), latent_tokens=16)


def test_dataset_and_mean_initial_guess() -> None:
    cond, z_star = _steady_data(10, 0)
    z0 = mean_initial_guess(z_star)
    assert z0.shape == (N, D)
    ds = SteadyLatentDataset(z_star, cond, z0)
    item = ds[3]
    assert set(item) == {"z0", "cond", "z_star"} and len(ds) == 10
    torch.testing.assert_close(item["z0"], z0)
    assert torch.equal(SteadyLatentDataset(z_star, cond)[0]["z0"], torch.zeros(N, D))
    with pytest.raises(ValueError, match="z0"):
        SteadyLatentDataset(z_star, cond, torch.zeros(N + 1, D))
    with pytest.raises(ValueError, match="cond"):
        SteadyLatentDataset(z_star, cond[:, :-1])


# ------------------------------------------------------------------------------ training


def _train(model: SteadyPrior, steps: int, lr: float) -> list[float]:
    """Adam on ``z* = g(cond)`` from the training-mean guess; returns validation errors per step."""
    cond_tr, z_tr = _steady_data(256, seed=1)
    cond_va, z_va = _steady_data(128, seed=2)
    z0 = mean_initial_guess(z_tr)
    task = SteadyPriorTask(lambda_intermediate=0.1)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(0)
    for _ in range(steps):
        idx = torch.randint(0, 256, (64,), generator=gen)
        batch = {"z0": z0.expand(64, N, D), "cond": cond_tr[idx], "z_star": z_tr[idx]}
        loss, _ = task.training_loss(model, batch, epoch=1)
        opt.zero_grad()
        loss.backward()
        opt.step()
    val = {"z0": z0.expand(128, N, D), "cond": cond_va, "z_star": z_va}
    with torch.no_grad():
        _, comps = task.validation_loss(model.eval(), val)
    return [comps[f"rel_err_step_{k}"] for k in range(model.cfg.num_steps + 1)]


@pytest.mark.parametrize(
    ("architecture", "steps", "bound"),
    # Measured (validation rel. L2, steps 0..4):
    #   mlp (3 layers), 300 steps:        1.00, 0.42, 0.25, 0.15, 0.10
    #   token_mixer (1 block), 100 steps: 1.00, 0.58, 0.35, 0.21, 0.16
    [("mlp", 300, 0.25), ("token_mixer", 100, 0.35)],
)
def test_training_beats_the_initial_guess_and_refines_monotonically(
    one_thread: None, architecture: str, steps: int, bound: float
) -> None:
    torch.manual_seed(0)
    model = _prior(architecture, num_layers=3 if architecture == "mlp" else 1)
    errs = _train(model, steps, lr=3e-3)
    print(f"{architecture}: rel_err per refinement step {[round(e, 4) for e in errs]}")
    assert errs[0] == pytest.approx(1.0, abs=0.05)  # the mean guess: ~ all of the signal left
    assert errs[-1] < bound * errs[0], errs
    assert all(b <= a + 1e-6 for a, b in zip(errs, errs[1:])), errs


def test_fit_runs_the_task_and_logs_per_step_errors(one_thread: None) -> None:
    torch.manual_seed(0)
    cond_tr, z_tr = _steady_data(128, seed=1)
    cond_va, z_va = _steady_data(64, seed=2)
    z0 = mean_initial_guess(z_tr)
    cfg = TrainConfig(epochs=3, batch_size=32, optimizer=OptimizerConfig(name="adam", lr=3e-3),
                      progress=False)
    result = fit(_prior(num_steps=2), SteadyPriorTask(), SteadyLatentDataset(z_tr, cond_tr, z0),
                 SteadyLatentDataset(z_va, cond_va, z0), cfg, stage="steady_prior")
    last = result.history[-1]
    for key in ("loss", "loss_final", "loss_intermediate", "val_loss", "val_final",
                "val_rel_err_step_0", "val_rel_err_step_1", "val_rel_err_step_2"):
        assert key in last, sorted(last)
    assert last["val_rel_err_step_2"] < last["val_rel_err_step_0"]
