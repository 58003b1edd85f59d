"""Stage tasks for the residual diffusion model and its consistency distillation."""

from __future__ import annotations

import copy
import math
from dataclasses import replace

import pytest
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ups_kedro.models.diffusion_residual import (
    DiffusionResidual,
    DiffusionResidualConfig,
    consistency_sample,
    make_consistency_student,
    sample_residual,
)
from ups_kedro.models.schedules import NoiseSchedule, TauSampling
from ups_kedro.training.config import OptimizerConfig, TrainConfig
from ups_kedro.training.consistency_distill import ConsistencyDistillTask
from ups_kedro.training.diff_residual import ResidualDiffusionTask
from ups_kedro.training.teacher_cache import (
    OperatorPredictionCache,
    estimate_residual_scale,
    precompute_operator_predictions,
)
from ups_kedro.training.launcher import fit
from ups_kedro.training.losses import relative_l2

N_TOK, DIM = 4, 4


@pytest.fixture
def one_thread():
    """Tensors here are tiny: intra-op threads cost more than they save (≈ 2.5× per step)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class CountingOperator(nn.Module):
    """A frozen per-token linear map that counts the samples it has seen."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.lin = nn.Linear(DIM, DIM)
        self.calls = 0

    def forward(self, z: Tensor) -> Tensor:
        self.calls += z.shape[0]
        return self.lin(z)


class LatentPairs(Dataset):
    """``z ~ N(0, 1)``, ``z_next = Op(z) + r`` with ``r = 0.1·tanh(Op(z)) + 0.002·noise``."""

    def __init__(self, n: int, seed: int, op: nn.Module, with_index: bool = True) -> None:
        g = torch.Generator().manual_seed(seed)
        self.z = torch.randn(n, N_TOK, DIM, generator=g)
        with torch.no_grad():
            pred = op(self.z)
        op.calls = 0  # type: ignore[assignment]
        self.z_next = pred + 0.1 * torch.tanh(pred) + 0.002 * torch.randn(pred.shape, generator=g)
        self.with_index = with_index

    def __len__(self) -> int:
        return len(self.z)

    def __getitem__(self, i: int) -> dict[str, Tensor]:
        item = {"z": self.z[i], "z_next": self.z_next[i]}
        if self.with_index:
            item["index"] = torch.tensor(i)
        return item


class GaussianTeacher(nn.Module):
    """Exact denoiser for r ~ N(μ, s²): D(x, σ) = (s²x + σ²μ)/(s² + σ²), independent of ẑ."""

    def __init__(self, mu: float, s: float) -> None:
        super().__init__()
        self.mu, self.s = mu, s

    def denoise(self, x: Tensor, cond: Tensor, sigma: Tensor | float) -> Tensor:
        sig = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1)
        sig = sig.expand(x.shape[0]) if sig.numel() == 1 else sig
        s2 = sig[:, None, None] ** 2
        return (self.s**2 * x + s2 * self.mu) / (self.s**2 + s2)


def _model(scale: float, **kw) -> DiffusionResidual:
    torch.manual_seed(0)
    cfg = DiffusionResidualConfig(latent_dim=DIM, latent_tokens=N_TOK, hidden_dim=32,
                                  residual_scale=scale, **kw)
    return DiffusionResidual(cfg)


# ------------------------------------------------------------------------------------------
# operator predictions


def test_precompute_is_float32_without_autocast_and_scale_is_rms() -> None:
    op = CountingOperator()
    z = torch.randn(10, N_TOK, DIM)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        pred = precompute_operator_predictions(op, z, batch_size=3)
    assert pred.dtype == torch.float32
    assert torch.allclose(pred, op.lin(z), atol=1e-6)  # not bf16-rounded
    assert not any(p.requires_grad for p in op.parameters())
    r = 0.01 * torch.randn(10, N_TOK, DIM)
    rms = float(r.pow(2).mean().sqrt())
    assert estimate_residual_scale(pred + r, pred) == pytest.approx(rms, rel=1e-5)
    with pytest.raises(ValueError, match="residual"):
        estimate_residual_scale(pred, pred)


def test_cache_runs_operator_once_per_sample_and_detects_changed_items() -> None:
    op = CountingOperator()
    cache = OperatorPredictionCache()
    z = torch.randn(40, N_TOK, DIM)
    predict = lambda zz: op(zz).detach()  # noqa: E731
    for _ in range(3):  # three "epochs", shuffled
        for chunk in torch.randperm(40).split(16):
            got = cache.lookup(chunk, z[chunk], predict)
            assert torch.allclose(got, op.lin(z[chunk]))
    assert op.calls == 40 and cache.misses == 40 and cache.hits == 80
    with pytest.raises(ValueError, match="cache=False"):
        cache.lookup(torch.tensor([3]), z[[3]] + 1.0, predict)


# ------------------------------------------------------------------------------------------
# stage 2


def test_f_space_loss_equals_edm_weighted_mse() -> None:
    sched = NoiseSchedule()
    model = _model(1.0)
    with torch.no_grad():  # an arbitrary, non-zero network
        model.out.weight.normal_()
    task = ResidualDiffusionTask(None, sched, residual_scale=1.0)
    r, cond = torch.randn(6, N_TOK, DIM), torch.randn(6, N_TOK, DIM)
    sigma = torch.tensor([0.05, 0.2, 0.7, 1.0, 3.0, 15.0])
    torch.manual_seed(3)
    loss, parts = task.denoising_loss(model, r, cond, sigma)
    torch.manual_seed(3)
    eps = torch.randn_like(r)
    den = model.denoise(r + sigma[:, None, None] * eps, cond, sigma)
    direct = (sched.loss_weight(sigma)[:, None, None] * (den - r) ** 2).mean()
    assert loss.item() == pytest.approx(direct.item(), rel=1e-4)
    assert set(parts) == {"mse", "spectral", "relative"}


def test_relative_term_weighs_each_sample_by_its_residual_energy() -> None:
    """``relative`` = mean over samples of λ(σ)·|D − r|² / (|r|² + floor²) (means per sample)."""
    sched = NoiseSchedule()
    model = _model(1.0)
    with torch.no_grad():
        model.out.weight.normal_()
    floor = 0.05
    task = ResidualDiffusionTask(None, sched, residual_scale=1.0, lambda_relative=2.0,
                                 relative_floor=floor)
    r = torch.randn(4, N_TOK, DIM) * torch.tensor([1.0, 0.1, 0.01, 1e-4])[:, None, None]
    cond = torch.randn(4, N_TOK, DIM)
    sigma = torch.tensor([0.01, 0.1, 1.0, 5.0])
    torch.manual_seed(5)
    loss, parts = task.denoising_loss(model, r, cond, sigma)
    torch.manual_seed(5)
    eps = torch.randn_like(r)
    den = model.denoise(r + sigma[:, None, None] * eps, cond, sigma)
    per = (sched.loss_weight(sigma)[:, None, None] * (den - r) ** 2).flatten(1).mean(1)
    want_rel = (per / (r.pow(2).flatten(1).mean(1) + floor**2)).mean()
    assert parts["relative"] == pytest.approx(want_rel.item(), rel=1e-3)
    assert parts["mse"] == pytest.approx(per.mean().item(), rel=1e-3)
    assert loss.item() == pytest.approx(per.mean().item() + 2.0 * want_rel.item(), rel=1e-3)
    with pytest.raises(ValueError, match="relative_floor"):
        ResidualDiffusionTask(None, sched, relative_floor=0.0)


def test_task_rejects_mismatched_schedule_or_scale() -> None:
    model = _model(0.5)
    batch = {"z": torch.randn(2, N_TOK, DIM), "z_next": torch.randn(2, N_TOK, DIM)}
    bad = ResidualDiffusionTask(nn.Identity(), NoiseSchedule(sigma_min=1e-3), residual_scale=0.5)
    with pytest.raises(ValueError, match="schedule"):
        bad.training_loss(model, batch, 1)
    bad = ResidualDiffusionTask(nn.Identity(), model.schedule, residual_scale=0.25)
    with pytest.raises(ValueError, match="residual_scale"):
        bad.training_loss(model, batch, 1)
    student = make_consistency_student(model)
    wrong = ResidualDiffusionTask(nn.Identity(), model.schedule, residual_scale=0.5)
    with pytest.raises(ValueError, match="edm"):
        wrong.training_loss(student, batch, 1)


def test_residual_diffusion_trains_with_fit_and_caches_the_operator(one_thread: None) -> None:
    op = CountingOperator()
    train, val = LatentPairs(256, 1, op), LatentPairs(64, 2, op)
    scale = estimate_residual_scale(train.z_next, precompute_operator_predictions(op, train.z))
    op.calls = 0
    model = _model(scale)
    task = ResidualDiffusionTask(
        op, model.schedule, tau_sampling=TauSampling("beta", 1.2, 1.2), lambda_relative=0.01,
        residual_scale=scale, val_num_sigmas=6, val_sample_steps=6,
    )
    cfg = TrainConfig(epochs=12, batch_size=32, optimizer=OptimizerConfig(lr=1e-2), progress=False)
    result = fit(model, task, train, val, cfg, stage="diff_residual")
    hist = result.history
    want = {"val_mse", "val_spectral", "val_relative", "val_sampled_residual_rel_err"}
    assert want <= set(hist[0])
    # The zero-init model is near the unit F-space loss.  The fixed σ grid's lowest levels
    # keep a floor of about 1 each (below the residual's conditional spread, the weighted
    # loss of even the optimal denoiser is ≈ 1), so "far below" means about half here.
    assert hist[0]["val_loss"] > 0.8
    assert hist[-1]["val_loss"] < 0.65 * hist[0]["val_loss"]
    assert hist[-1]["loss"] < 0.65 * hist[0]["loss"]
    # Samples start as unconditional draws (rel. error ≈ √2) and learn to follow ẑ.
    assert hist[-1]["val_sampled_residual_rel_err"] < 0.5 * hist[0]["val_sampled_residual_rel_err"]
    # Teacher caching: each train and val sample went through the operator exactly once.
    assert op.calls == 256 + 64


def test_validation_is_deterministic_under_a_seed() -> None:
    op = CountingOperator()
    data = LatentPairs(8, 3, op, with_index=False)
    batch = {"z": data.z, "z_next": data.z_next}
    model = _model(0.1)
    task = ResidualDiffusionTask(op, model.schedule, residual_scale=0.1, val_sample_steps=3)
    out = []
    for _ in range(2):
        torch.manual_seed(11)
        with torch.no_grad():
            loss, parts = task.validation_loss(model, batch)
        out.append((loss.item(), parts))
    assert out[0] == out[1]


# ------------------------------------------------------------------------------------------
# stage 3


def _student(sched: NoiseSchedule, hidden: int = 32, seed: int = 0) -> DiffusionResidual:
    torch.manual_seed(seed)
    cfg = DiffusionResidualConfig(
        latent_dim=DIM, latent_tokens=N_TOK, hidden_dim=hidden, parameterisation="consistency",
        sigma_min=sched.sigma_min, sigma_max=sched.sigma_max, rho=sched.rho,
        sigma_data=sched.sigma_data,
    )
    return DiffusionResidual(cfg)


def _gaussian_batch(b: int, mu: float, s: float, seed: int) -> dict[str, Tensor]:
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(b, N_TOK, DIM, generator=g)
    return {"z": z, "z_next": z + mu + s * torch.randn(b, N_TOK, DIM, generator=g)}


def test_teacher_heun_step_follows_the_exact_ode() -> None:
    mu, s = 0.3, 0.4
    task = ConsistencyDistillTask(GaussianTeacher(mu, s), NoiseSchedule(), operator=nn.Identity())
    x = torch.randn(5, N_TOK, DIM)
    s_hi, s_lo = torch.full((5,), 2.0), torch.full((5,), 1.9)
    # PF-ODE for Gaussian data: x − μ ∝ √(s² + σ²).
    exact = mu + (x - mu) * math.sqrt(s**2 + 1.9**2) / math.sqrt(s**2 + 2.0**2)
    heun = task.teacher_step(x, torch.zeros_like(x), s_hi, s_lo)
    task.teacher_solver = "euler"
    euler = task.teacher_step(x, torch.zeros_like(x), s_hi, s_lo)
    err_h, err_e = ((heun - exact).abs().max().item(), (euler - exact).abs().max().item())
    assert err_h < 3e-5 and err_h < 0.1 * err_e  # local error O(h³) vs O(h²)


def test_micro_batching_gives_the_same_loss_and_gradients_as_one_pass() -> None:
    sched = NoiseSchedule()
    batch = _gaussian_batch(12, 0.2, 0.5, 0)
    grads, values = [], []
    for micro in (None, 5):
        student = _student(sched)
        with torch.no_grad():
            student.out.weight.normal_()  # non-zero gradients everywhere
        task = ConsistencyDistillTask(
            GaussianTeacher(0.2, 0.5), sched, operator=nn.Identity(), distill_num_taus=3,
            distill_micro_batch=micro, n_levels=10,
        )
        torch.manual_seed(7)
        loss, parts = task.training_loss(student, batch, epoch=1)
        (loss / 2).backward()  # as fit does with accum_steps = 2
        values.append((loss.item(), parts))
        grads.append([p.grad.clone() for p in student.parameters()])
    assert values[0][0] == pytest.approx(values[1][0], rel=1e-5)
    assert values[0][1]["num_taus"] == 3.0
    for a, b in zip(*grads, strict=True):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


def test_tau_schedule_tiles_and_operator_runs_once_per_batch() -> None:
    op = CountingOperator()
    task = ConsistencyDistillTask(
        GaussianTeacher(0.0, 1.0), NoiseSchedule(), operator=op, tau_schedule=[5, 4, 3],
        cache=False,
    )
    assert [task.taus_for_epoch(e) for e in (1, 2, 3, 4, 9)] == [5, 4, 3, 3, 3]
    student = _student(NoiseSchedule())
    batch = _gaussian_batch(6, 0.0, 1.0, 1)
    _, parts = task.training_loss(student, batch, epoch=2)
    assert parts["num_taus"] == 4.0
    assert op.calls == 6  # ẑ once per batch, reused by all 4 τ values
    with pytest.raises(ValueError, match="tau_schedule"):
        ConsistencyDistillTask(GaussianTeacher(0.0, 1.0), NoiseSchedule(), tau_schedule=[])


def test_target_network_is_an_ema_updated_once_per_optimizer_step() -> None:
    sched = NoiseSchedule()
    student = _student(sched)
    task = ConsistencyDistillTask(GaussianTeacher(0.0, 1.0), sched, operator=nn.Identity(),
                                  target_ema=0.9)
    opt = torch.optim.SGD(student.parameters(), lr=0.1)
    batch = _gaussian_batch(4, 0.0, 1.0, 2)
    loss, _ = task.training_loss(student, batch, 1)  # first call: θ⁻ = θ
    assert task.target is not None and task.target is not student
    before = copy.deepcopy(task.target.state_dict())
    for a, b in zip(before.values(), student.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    loss.backward()
    task.training_loss(student, batch, 1)  # no optimizer step yet (accumulating): no update
    for a, b in zip(before.values(), task.target.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    opt.step()
    task.training_loss(student, batch, 1)
    task.training_loss(student, batch, 1)  # still the same weights: folded in once only
    for name, t in task.target.state_dict().items():
        want = 0.9 * before[name] + 0.1 * student.state_dict()[name]
        assert torch.allclose(t, want, atol=1e-6), name
    assert all(not p.requires_grad for p in task.target.parameters())


def test_student_schedule_must_match_the_task() -> None:
    task = ConsistencyDistillTask(GaussianTeacher(0.0, 1.0), NoiseSchedule(sigma_min=1e-3),
                                  operator=nn.Identity())
    with pytest.raises(ValueError, match="schedule"):
        task.training_loss(_student(NoiseSchedule()), _gaussian_batch(2, 0.0, 1.0, 0), 1)


def test_consistency_distillation_moves_one_step_student_to_teacher_sampler(
    one_thread: None,
) -> None:
    """The key test: CD on a fixed analytic teacher pulls f_θ(σ_max ε, σ_max) to the ODE end."""
    mu, s = 0.5, 0.2
    sched = NoiseSchedule(sigma_min=1e-3, sigma_max=5.0, rho=7.0, sigma_data=1.0)
    teacher = GaussianTeacher(mu, s)
    student = _student(sched, hidden=32)
    task = ConsistencyDistillTask(
        teacher, sched, operator=nn.Identity(), n_levels=8, distill_num_taus=2,
        target_ema=0.9, val_teacher_steps=32,
    )
    g = torch.Generator().manual_seed(5)
    cond = torch.randn(256, N_TOK, DIM, generator=g)
    eps = torch.randn(256, N_TOK, DIM, generator=g)
    teacher_out, nfe = sample_residual(teacher, cond, 32, sched, noise=eps)
    assert nfe == 63

    def gap() -> float:
        one, _ = consistency_sample(student, cond, 1, sched, noise=eps)
        return float(relative_l2(one, teacher_out))

    before = gap()
    opt = torch.optim.Adam(student.parameters(), lr=5e-3)
    torch.manual_seed(0)
    for step in range(250):
        loss, _ = task.training_loss(student, _gaussian_batch(32, mu, s, 100 + step), 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    after = gap()
    assert before > 0.8  # zero-init student: f(σ_max ε) = c_skip·σ_max ε ≈ 0.2 ε
    # Information flows up from the σ_min boundary one level at a time, so this is slow at
    # first (≈ 0.12–0.25 after 250 steps across seeds; exact would be 0).
    assert after < 0.4 * before
    # The boundary condition survives training exactly.
    x = torch.randn(3, N_TOK, DIM)
    assert torch.equal(student.denoise(x, torch.zeros_like(x), sched.levels(8)[0]), x)
    # And the task's own validation reports the same gap metric.
    with torch.no_grad():
        val_batch = {**_gaussian_batch(16, mu, s, 1), "cond": cond[:16]}
        val_loss, parts = task.validation_loss(student, val_batch)
    assert set(parts) == {"teacher_gap", "cd", "student_rel_err", "teacher_rel_err"}
    assert val_loss.item() == parts["teacher_gap"] < 0.5 * before
    assert parts["teacher_rel_err"] < parts["student_rel_err"] + 0.1


def test_distillation_runs_under_fit_with_micro_batches_and_accumulation() -> None:
    op = CountingOperator()
    train, val = LatentPairs(48, 1, op), LatentPairs(16, 2, op)
    teacher = _model(0.1)
    with torch.no_grad():
        teacher.out.weight.normal_(std=0.1)
    student = make_consistency_student(teacher)
    task = ConsistencyDistillTask(
        teacher, teacher.schedule, operator=op, n_levels=6, distill_micro_batch=20,
        tau_schedule=[3, 2], val_teacher_steps=3,
    )
    cfg = TrainConfig(epochs=2, batch_size=16, accum_steps=2, ema_decay=0.99, progress=False,
                      optimizer=OptimizerConfig(lr=1e-3))
    result = fit(student, task, train, val, cfg, stage="consistency_distill")
    assert [h["loss_num_taus"] for h in result.history] == [3.0, 2.0]
    assert all(math.isfinite(h["val_loss"]) for h in result.history)
    assert {"val_teacher_gap", "val_student_rel_err"} <= set(result.history[0])
    # The teacher was never modified and stays frozen; the student is a separate model.
    assert teacher.config.parameterisation == "edm"
    assert student.config == replace(teacher.config, parameterisation="consistency")
    assert not any(p.requires_grad for p in teacher.parameters())


class _KilledAt(ConsistencyDistillTask):
    """The EDM Stage 3 task, killed (KeyboardInterrupt) at the first step of ``epoch``."""

    kill_epoch = 2

    def training_loss(self, model, batch, epoch):
        if epoch == self.kill_epoch:
            raise KeyboardInterrupt
        return super().training_loss(model, batch, epoch)


def _distill(task_cls, state_dir, student_seed: int = 0):
    op = CountingOperator()
    train, val = LatentPairs(32, 1, op), LatentPairs(16, 2, op)
    teacher = _model(0.1)
    with torch.no_grad():
        teacher.out.weight.normal_(std=0.1)
    torch.manual_seed(student_seed)
    student = make_consistency_student(teacher)
    task = task_cls(teacher, teacher.schedule, operator=op, n_levels=6, target_ema=0.9,
                    val_teacher_steps=2)
    cfg = TrainConfig(epochs=3, batch_size=8, ema_decay=0.9, progress=False,
                      optimizer=OptimizerConfig(lr=1e-3))
    return fit(student, task, train, val, cfg, stage="consistency_distill",
               state_dir=state_dir, fingerprint="distill-v1")


def test_distillation_resumes_with_its_target_network(tmp_path) -> None:
    """Stage 3's EMA target network is part of the resumable state: a run killed after epoch 1
    and resumed ends bit-identical to an uninterrupted one (without the target it would restart
    from a copy of the student and drift)."""
    straight = _distill(ConsistencyDistillTask, tmp_path / "straight")
    with pytest.raises(KeyboardInterrupt):
        _distill(_KilledAt, tmp_path / "killed")
    saved = torch.load(tmp_path / "killed" / "last.pt", weights_only=True)
    assert saved["epoch"] == 1 and saved["task_state"] is not None
    resumed = _distill(ConsistencyDistillTask, tmp_path / "killed", student_seed=7)
    assert resumed.resumed_from == 1
    for key, value in straight.model_state.items():
        assert torch.equal(resumed.model_state[key], value), key
