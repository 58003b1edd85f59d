"""DiffusionResidual: preconditioning, boundary condition, gradients and the samplers."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from torch import Tensor, nn

from ups_kedro.models.diffusion_residual import (
    DiffusionResidual,
    DiffusionResidualConfig,
    consistency_sample,
    make_consistency_student,
    refine_latent,
    sample_residual,
)
from ups_kedro.models.schedules import NoiseSchedule

ARCHS = ("mlp", "token_mixer")


def _config(arch: str = "mlp", **kw) -> DiffusionResidualConfig:
    return DiffusionResidualConfig(
        latent_dim=4, latent_tokens=6, hidden_dim=16, architecture=arch, **kw
    )


def _randomise_output(model: DiffusionResidual, seed: int = 0) -> None:
    """Undo the zero initialisation so F is an arbitrary non-zero network."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        model.out.weight.copy_(torch.randn(model.out.weight.shape, generator=g))
        model.out.bias.copy_(torch.randn(model.out.bias.shape, generator=g))


def _sig(sigma: Tensor | float, batch: int) -> Tensor:
    s = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1)
    return s.expand(batch) if s.numel() == 1 else s


class GaussianDenoiser(nn.Module):
    """Exact denoiser for r ~ N(μ, s²) element-wise: D(x, σ) = (s²x + σ²μ)/(s² + σ²)."""

    def __init__(self, mu: float, s: float, schedule: NoiseSchedule) -> None:
        super().__init__()
        self.mu, self.s, self.schedule = mu, s, schedule

    def denoise(self, x: Tensor, cond: Tensor, sigma: Tensor | float) -> Tensor:
        s2 = _sig(sigma, x.shape[0])[:, None, None] ** 2
        return (self.s**2 * x + s2 * self.mu) / (self.s**2 + s2)


class ExactConsistency(GaussianDenoiser):
    """Exact consistency function of that ODE: f(x, σ) = μ + (x − μ)·√(s² + σ_min²)/√(s² + σ²)."""

    def denoise(self, x: Tensor, cond: Tensor, sigma: Tensor | float) -> Tensor:
        s2 = _sig(sigma, x.shape[0])[:, None, None] ** 2
        end = (self.s**2 + self.schedule.sigma_min**2) ** 0.5
        return self.mu + (x - self.mu) * end / torch.sqrt(self.s**2 + s2)


# ------------------------------------------------------------------------------------------
# config and network


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"latent_dim": 0}, "latent_dim"),
        ({"hidden_dim": 0}, "hidden_dim"),
        ({"architecture": "unet"}, "architecture"),
        ({"num_layers": 1}, "num_layers"),
        ({"architecture": "token_mixer", "num_heads": 3}, "num_heads"),
        ({"noise_embed_dim": 5}, "noise_embed_dim"),
        ({"parameterisation": "vp"}, "parameterisation"),
        ({"residual_scale": 0.0}, "residual_scale"),
        ({"sigma_min": -1.0}, "sigma_min"),
        ({"sigma_max": 1e-5}, "sigma_max"),
        ({"cond_dim": 0}, "cond_dim"),
    ],
)
def test_config_validation_names_the_field(kwargs: dict, field: str) -> None:
    base = {"latent_dim": 4, "latent_tokens": 6, "hidden_dim": 16}
    cfg = DiffusionResidualConfig(**{**base, **kwargs})
    with pytest.raises(ValueError, match=rf"diff_residual\.model\.{field}"):
        cfg.validate("diff_residual.model")


@pytest.mark.parametrize("arch", ARCHS)
def test_shapes_and_zero_init_is_skip_only(arch: str) -> None:
    torch.manual_seed(0)
    model = DiffusionResidual(_config(arch))
    r, cond, sigma = torch.randn(3, 6, 4), torch.randn(3, 6, 4), torch.tensor([1e-3, 0.5, 7.0])
    den, raw = model(r, cond, sigma)
    assert den.shape == raw.shape == (3, 6, 4) and den.dtype == torch.float32
    assert torch.all(raw == 0)
    c_skip = model.schedule.c_skip(sigma)
    assert torch.equal(den, c_skip[:, None, None] * r)
    assert torch.equal(model.denoise(r, cond, 0.5), model(r, cond, torch.full((3,), 0.5))[0])


@pytest.mark.parametrize("arch", ARCHS)
def test_consistency_boundary_condition_is_exact_for_any_network(arch: str) -> None:
    torch.manual_seed(1)
    model = DiffusionResidual(_config(arch, parameterisation="consistency", sigma_min=2e-4))
    _randomise_output(model)
    x, cond = torch.randn(5, 6, 4), torch.randn(5, 6, 4)
    s_min = model.schedule.sigma(torch.zeros(5))
    assert torch.equal(model.denoise(x, cond, s_min), x)  # bit-exact: c_skip = 1, c_out = 0
    assert torch.equal(model.denoise(x, cond, model.schedule.levels(18)[0]), x)
    assert not torch.allclose(model.denoise(x, cond, 0.1), x)  # the network does act above σ_min


@pytest.mark.parametrize("arch", ARCHS)
def test_every_parameter_gets_a_gradient(arch: str) -> None:
    torch.manual_seed(2)
    model = DiffusionResidual(_config(arch))
    _randomise_output(model)  # with a zero output layer the hidden layers' gradients are zero
    den, _ = model(torch.randn(3, 6, 4), torch.randn(3, 6, 4), torch.tensor([0.01, 0.3, 5.0]))
    den.square().mean().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None, name
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_token_mixer_uses_token_order_and_checks_token_count() -> None:
    torch.manual_seed(3)
    model = DiffusionResidual(_config("token_mixer"))
    _randomise_output(model)
    r, cond = torch.randn(2, 6, 4), torch.randn(2, 6, 4)
    perm = torch.randperm(6)
    a = model.denoise(r, cond, 1.0)[:, perm]
    b = model.denoise(r[:, perm], cond[:, perm], 1.0)
    assert not torch.allclose(a, b)  # position embedding: not permutation-equivariant
    with pytest.raises(ValueError, match="tokens"):
        model.denoise(torch.randn(2, 5, 4), torch.randn(2, 5, 4), 1.0)
    with pytest.raises(ValueError, match="cond"):
        model.denoise(r, torch.randn(2, 6, 3), 1.0)


def test_make_consistency_student_copies_teacher_weights() -> None:
    teacher = DiffusionResidual(_config())
    _randomise_output(teacher)
    student = make_consistency_student(teacher)
    assert student.config == replace(teacher.config, parameterisation="consistency")
    student_state = student.state_dict()
    for k, a in teacher.state_dict().items():
        assert torch.equal(a, student_state[k]), k
    assert teacher.config.parameterisation == "edm"


# ------------------------------------------------------------------------------------------
# samplers


SCHED = NoiseSchedule(sigma_min=1e-4, sigma_max=20.0, rho=7.0, sigma_data=1.0)


def test_heun_sampler_matches_the_exact_ode_solution_for_gaussian_data() -> None:
    mu, s = 0.3, 0.5
    oracle = GaussianDenoiser(mu, s, SCHED)
    cond = torch.zeros(4000, 2, 4)
    eps = torch.randn(4000, 2, 4, generator=torch.Generator().manual_seed(0))
    # PF-ODE for Gaussian data: x − μ ∝ √(s² + σ²), so x(0) = μ + s(x_T − μ)/√(s² + σ_max²).
    exact = mu + s * (SCHED.sigma_max * eps - mu) / (s**2 + SCHED.sigma_max**2) ** 0.5
    heun, nfe_h = sample_residual(oracle, cond, 64, SCHED, solver="heun", noise=eps)
    euler, nfe_e = sample_residual(oracle, cond, 64, SCHED, solver="euler", noise=eps)
    assert (nfe_h, nfe_e) == (127, 64)
    err_h = (heun - exact).abs().max().item()
    err_e = (euler - exact).abs().max().item()
    assert err_h < 1e-2
    assert err_h < 0.2 * err_e  # second order beats first order at the same step count
    # ... and halving the step size cuts Heun's error about fourfold (order 2).
    coarse, _ = sample_residual(oracle, cond, 32, SCHED, solver="heun", noise=eps)
    assert (coarse - exact).abs().max().item() > 3.0 * err_h
    # The sampled distribution is N(μ, s²) up to the prior's finite σ_max (the ODE starts at
    # N(0, σ_max²), not at N(μ, s² + σ_max²)): mean μ(1 − s/√(s² + σ_max²)), std s·σ_max/√(…).
    root = (s**2 + SCHED.sigma_max**2) ** 0.5
    assert abs(heun.mean().item() - mu * (1 - s / root)) < 0.01
    assert abs(heun.std().item() - s * SCHED.sigma_max / root) < 0.01


def test_heun_sampler_with_zero_spread_returns_the_mean() -> None:
    oracle = GaussianDenoiser(0.7, 0.0, SCHED)  # s → 0: D(x, σ) = μ
    g = torch.Generator().manual_seed(0)
    out, nfe = sample_residual(oracle, torch.zeros(8, 3, 4), 5, SCHED, generator=g)
    assert nfe == 9
    assert torch.allclose(out, torch.full_like(out, 0.7), atol=1e-6)


def test_sampler_nfe_counts_and_generator_reproducibility() -> None:
    torch.manual_seed(4)
    model = DiffusionResidual(_config())
    _randomise_output(model)
    cond = torch.randn(2, 6, 4)
    for n in (1, 2, 7):
        _, nfe = sample_residual(model, cond, n, solver="heun")
        assert nfe == 2 * n - 1
        _, nfe = sample_residual(model, cond, n, solver="euler")
        assert nfe == n
    student = make_consistency_student(model)
    for n in (1, 2, 4):
        _, nfe = consistency_sample(student, cond, n)
        assert nfe == n
    a, _ = consistency_sample(student, cond, 3, generator=torch.Generator().manual_seed(9))
    b, _ = consistency_sample(student, cond, 3, generator=torch.Generator().manual_seed(9))
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="solver"):
        sample_residual(model, cond, 2, solver="rk4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="intermediate"):
        consistency_sample(student, cond, 3, sigmas=[1.0])


def test_consistency_sampler_with_exact_consistency_function() -> None:
    mu, s = -0.2, 0.4
    f = ExactConsistency(mu, s, SCHED)
    cond = torch.zeros(20000, 1, 2)
    eps = torch.randn(20000, 1, 2, generator=torch.Generator().manual_seed(1))
    one, nfe = consistency_sample(f, cond, 1, SCHED, noise=eps)
    assert nfe == 1
    # One step lands on the ODE's end point μ + s(x_T − μ)/√(s² + σ_max²) (up to σ_min).
    exact = mu + s * (SCHED.sigma_max * eps - mu) / (s**2 + SCHED.sigma_max**2) ** 0.5
    assert (one - exact).abs().max().item() < 1e-5
    multi, nfe = consistency_sample(f, cond, 3, SCHED, generator=torch.Generator().manual_seed(2))
    assert nfe == 3
    assert abs(multi.mean().item() - mu) < 0.01 and abs(multi.std().item() - s) < 0.01


def test_refine_latent_adds_the_scaled_residual() -> None:
    torch.manual_seed(5)
    model = DiffusionResidual(_config(residual_scale=0.01))
    _randomise_output(model)
    z_pred = torch.randn(2, 6, 4)
    g = torch.Generator().manual_seed(3)
    z, nfe = refine_latent(model, z_pred, 3, generator=g)
    r, _ = sample_residual(model, z_pred, 3, generator=torch.Generator().manual_seed(3))
    assert nfe == 5
    assert torch.allclose(z, z_pred + 0.01 * r)
