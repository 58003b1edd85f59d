"""Identities of the noise schedule and the preconditionings (a sign slip is invisible otherwise)."""

from __future__ import annotations

import math

import pytest
import torch

from ups_kedro.models.schedules import NoiseSchedule, TauSampling

SCHED = NoiseSchedule(sigma_min=1e-4, sigma_max=20.0, rho=7.0, sigma_data=1.0)


def test_sigma_is_monotone_with_exact_endpoints_and_inverse() -> None:
    tau = torch.linspace(0.0, 1.0, 1001)
    sigma = SCHED.sigma(tau)
    assert torch.all(sigma[1:] > sigma[:-1])
    assert sigma[0].item() == torch.tensor(1e-4).item()  # exactly float32(σ_min)
    assert sigma[-1].item() == 20.0
    assert torch.allclose(SCHED.tau(sigma), tau, atol=1e-6)
    # Out-of-range τ is clamped, not extrapolated.
    assert SCHED.sigma(torch.tensor([-0.5, 1.5])).tolist() == pytest.approx([1e-4, 20.0])


@pytest.mark.parametrize("n", [1, 2, 5, 40, 1000])
def test_discretise_strictly_decreasing_to_zero(n: int) -> None:
    grid = SCHED.discretise(n)
    assert grid.shape == (n + 1,)
    assert torch.all(grid[1:] < grid[:-1])
    assert grid[0].item() == 20.0
    assert grid[-1].item() == 0.0
    if n >= 2:
        assert grid[-2].item() == torch.tensor(1e-4).item()  # last non-zero level is σ_min


def test_discretise_and_levels_reject_too_few_points() -> None:
    with pytest.raises(ValueError, match="n_steps"):
        SCHED.discretise(0)
    with pytest.raises(ValueError, match="n must be"):
        SCHED.levels(1)
    levels = SCHED.levels(18)
    assert torch.all(levels[1:] > levels[:-1])
    assert levels[0].item() == torch.tensor(1e-4).item() and levels[-1].item() == 20.0


def test_sample_tau_uniform_and_beta_moments_and_generator() -> None:
    g = torch.Generator().manual_seed(0)
    u = SCHED.sample_tau(20000, "uniform", generator=g)
    assert u.min() >= 0 and u.max() <= 1 and abs(u.mean().item() - 0.5) < 0.01
    a, b = 2.0, 5.0
    x = SCHED.sample_tau(20000, "beta", alpha=a, beta=b, generator=torch.Generator().manual_seed(1))
    mean, var = a / (a + b), a * b / ((a + b) ** 2 * (a + b + 1))
    assert abs(x.mean().item() - mean) < 0.01
    assert abs(x.var().item() - var) < 0.003
    # α < 1 takes the boosted Gamma path.
    g = torch.Generator().manual_seed(2)
    y = SCHED.sample_tau(20000, "beta", alpha=0.5, beta=0.5, generator=g)
    assert abs(y.mean().item() - 0.5) < 0.01 and abs(y.var().item() - 0.125) < 0.005
    # Only the generator is read: same seed, same draws, whatever the global RNG does.
    torch.manual_seed(123)
    y1 = SCHED.sample_tau(50, "beta", generator=torch.Generator().manual_seed(7))
    torch.manual_seed(456)
    y2 = SCHED.sample_tau(50, "beta", generator=torch.Generator().manual_seed(7))
    assert torch.equal(y1, y2)
    with pytest.raises(ValueError, match="mode"):
        SCHED.sample_tau(3, "gaussian")  # type: ignore[arg-type]


@pytest.mark.parametrize("sigma_data", [0.5, 1.0])
def test_edm_coefficients_at_sigma_data(sigma_data: float) -> None:
    sched = NoiseSchedule(1e-4, 20.0, 7.0, sigma_data)
    s = torch.tensor([sigma_data])
    pre = sched.preconditioning(s, "edm")
    assert pre.c_skip.item() == pytest.approx(0.5)
    assert pre.c_out.item() == pytest.approx(sigma_data / math.sqrt(2.0))
    assert pre.c_in.item() == pytest.approx(1.0 / (sigma_data * math.sqrt(2.0)))
    assert pre.c_noise.item() == pytest.approx(0.25 * math.log(sigma_data))
    # λ(σ) = 1/c_out² for EDM: the weighted loss is unit-weighted in F-space.
    sig = sched.levels(50).double()
    lam = (sig**2 + sigma_data**2) / (sig * sigma_data) ** 2
    assert torch.allclose(lam * sched.c_out(sig, "edm") ** 2, torch.ones_like(sig))
    assert torch.allclose(sched.loss_weight(sig.float()).double(), lam, rtol=1e-5)
    # EDM's unit-variance training target: Var(c_skip·(r + σε) − r)/c_out² = 1 when Var(r) = σ_d².
    var = ((sched.c_skip(sig) - 1) ** 2 * sigma_data**2 + sched.c_skip(sig) ** 2 * sig**2)
    assert torch.allclose(var / sched.c_out(sig, "edm") ** 2, torch.ones_like(sig), rtol=1e-6)


def test_consistency_boundary_coefficients_are_exact() -> None:
    s_min = SCHED.sigma(torch.zeros(3))  # how the sampler and CD produce σ_min
    levels_min = SCHED.levels(18)[:1]
    for s in (s_min, levels_min):
        pre = SCHED.preconditioning(s, "consistency")
        assert torch.all(pre.c_skip == 1.0)
        assert torch.all(pre.c_out == 0.0)
    # Away from σ_min it follows Song et al.'s formulas and approaches EDM at large σ.
    sig = torch.tensor([0.1, 1.0, 20.0], dtype=torch.float64)
    sd, smin = SCHED.sigma_data, SCHED.sigma_min
    assert torch.allclose(SCHED.c_skip(sig, "consistency"), sd**2 / ((sig - smin) ** 2 + sd**2))
    assert torch.allclose(
        SCHED.c_out(sig, "consistency"), (sig - smin) * sd / torch.sqrt(sig**2 + sd**2)
    )
    big = sig[-1:]
    assert torch.allclose(SCHED.c_out(big, "consistency"), SCHED.c_out(big, "edm"), rtol=1e-4)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"sigma_min": 0.0}, "sigma_min"),
        ({"sigma_max": 1e-5}, "sigma_max"),
        ({"rho": -1.0}, "rho"),
        ({"sigma_data": 0.0}, "sigma_data"),
    ],
)
def test_schedule_validation_names_the_field(kwargs: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"schedule\.{field}"):
        NoiseSchedule(**kwargs)


def test_tau_sampling_validation() -> None:
    with pytest.raises(ValueError, match=r"x\.mode"):
        TauSampling(mode="normal").validate("x")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=r"x\.alpha"):
        TauSampling(mode="beta", alpha=0.0).validate("x")
    g = torch.Generator().manual_seed(0)
    sig = SCHED.sample_sigma(100, TauSampling("beta", 1.2, 1.2), generator=g)
    assert sig.min() >= 1e-4 and sig.max() <= 20.0
