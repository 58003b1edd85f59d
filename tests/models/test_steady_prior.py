"""SteadyPrior: shapes, identity at init, gradients, config validation, serialisation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from ups_kedro.models.steady_prior import SteadyPrior, SteadyPriorConfig

ARCHS = ["mlp", "token_mixer"]
B, N, D, CC = 3, 8, 6, 5


def prior_cfg(architecture: str = "mlp", **kw: object) -> SteadyPriorConfig:
    base = dict(
        latent_dim=D, latent_tokens=N, cond_dim=CC, hidden_dim=16, num_steps=4,
        architecture=architecture, num_layers=2, num_heads=4,
    )
    return SteadyPriorConfig(**{**base, **kw})


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, N, D, generator=g), torch.randn(B, N, CC, generator=g)


@pytest.mark.parametrize("architecture", ARCHS)
@pytest.mark.parametrize("num_steps", [1, 4])
def test_shapes_and_identity_at_init(architecture: str, num_steps: int) -> None:
    torch.manual_seed(0)
    model = SteadyPrior(prior_cfg(architecture, num_steps=num_steps))
    z0, cond = _inputs()
    z = model(z0, cond)
    traj = model.trajectory(z0, cond)
    assert z.shape == (B, N, D)
    assert traj.shape == (B, num_steps + 1, N, D)
    # Zero-initialised last layer: an untrained prior returns the initial guess exactly.
    assert torch.equal(z, z0)
    assert torch.equal(traj, z0.unsqueeze(1).expand_as(traj))


@pytest.mark.parametrize("architecture", ARCHS)
def test_trajectory_matches_forward_and_starts_at_z0(architecture: str) -> None:
    torch.manual_seed(0)
    model = SteadyPrior(prior_cfg(architecture))
    for p in model.parameters():  # leave the identity: make every step do something
        torch.nn.init.normal_(p, std=0.2)
    z0, cond = _inputs()
    traj = model.trajectory(z0, cond)
    assert torch.equal(traj[:, 0], z0)
    torch.testing.assert_close(traj[:, -1], model(z0, cond))
    steps = (traj[:, 1:] - traj[:, :-1]).flatten(2).norm(dim=-1)  # [B, S]
    assert (steps > 0).all()


@pytest.mark.parametrize("architecture", ARCHS)
def test_every_parameter_gets_a_gradient(architecture: str) -> None:
    torch.manual_seed(0)
    model = SteadyPrior(prior_cfg(architecture))
    z0, cond = _inputs()
    target = torch.randn(B, N, D)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    # With the zero-initialised last layer only that layer has a gradient at first; one
    # optimizer step makes it non-zero, after which the gradient reaches every parameter.
    for _ in range(2):
        opt.zero_grad()
        loss = (model.trajectory(z0, cond)[:, 1:] - target.unsqueeze(1)).square().mean()
        loss.backward()
        opt.step()
    for name, p in model.named_parameters():
        assert p.grad is not None, f"{name} received no gradient"
        assert torch.isfinite(p.grad).all(), f"{name} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name} has an all-zero gradient"


@pytest.mark.parametrize("architecture", ARCHS)
def test_conditioning_and_step_fraction_matter(architecture: str) -> None:
    torch.manual_seed(0)
    model = SteadyPrior(prior_cfg(architecture, num_steps=2))
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    z0, cond = _inputs()
    assert not torch.allclose(model(z0, cond), model(z0, cond + 1.0))
    # The same drift applied twice with s/(S-1) = 0 then 1 differs from a constant fraction.
    one = SteadyPrior(prior_cfg(architecture, num_steps=1))
    one.load_state_dict(model.state_dict())
    twice = one(one(z0, cond), cond)  # fraction 0 both times
    assert not torch.allclose(twice, model(z0, cond))


def test_token_mixer_mixes_tokens_and_mlp_does_not() -> None:
    torch.manual_seed(0)
    z0, cond = _inputs()
    cond2 = cond.clone()
    cond2[:, 0] += 1.0  # change only token 0's conditioning
    for architecture, mixes in (("mlp", False), ("token_mixer", True)):
        model = SteadyPrior(prior_cfg(architecture))
        for p in model.parameters():
            torch.nn.init.normal_(p, std=0.2)
        delta = (model(z0, cond2) - model(z0, cond))[:, 1:].abs().max()
        assert (delta > 1e-6) == mixes, architecture


def test_config_is_kept_and_serialisable() -> None:
    cfg = prior_cfg("token_mixer")
    model = SteadyPrior(cfg)
    assert model.cfg is cfg
    d = dataclasses.asdict(model.cfg)
    assert d["architecture"] == "token_mixer" and d["num_steps"] == 4
    assert SteadyPriorConfig(**d) == cfg


def test_defaults() -> None:
    cfg = SteadyPriorConfig(latent_dim=4, latent_tokens=8, cond_dim=2, hidden_dim=8)
    assert (cfg.num_steps, cfg.architecture, cfg.num_layers, cfg.num_heads) == (4, "mlp", 3, 4)
    model = SteadyPrior(cfg)
    assert len(model.drift.layers) == 3  # the original's 3-layer GELU MLP


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"latent_dim": 0}, "latent_dim"),
        ({"latent_tokens": 0}, "latent_tokens"),
        ({"cond_dim": -1}, "cond_dim"),
        ({"hidden_dim": 0}, "hidden_dim"),
        ({"num_steps": 0}, "num_steps"),
        ({"architecture": "unet"}, "architecture"),
        ({"num_layers": 0}, "num_layers"),
        ({"num_heads": 0}, "num_heads"),
        ({"architecture": "token_mixer", "hidden_dim": 18, "num_heads": 4}, "num_heads"),
    ],
)
def test_config_validation_names_the_field(overrides: dict, field: str) -> None:
    with pytest.raises(ValueError, match=rf"^stage4\.{field}\b"):
        prior_cfg(**overrides).validate("stage4")
    with pytest.raises(ValueError, match=rf"steady_prior\.{field}\b"):
        SteadyPrior(prior_cfg(**overrides))


def test_mlp_head_count_is_not_checked_against_hidden_dim() -> None:
    prior_cfg("mlp", hidden_dim=18, num_heads=4).validate()  # heads unused by the MLP drift


@pytest.mark.parametrize(
    ("z_shape", "c_shape", "what"),
    [((B, N, D + 1), (B, N, CC), "z0"), ((B, N + 1, D), (B, N + 1, CC), "z0"),
     ((B, N, D), (B, N, CC + 1), "cond"), ((B, N, D), (B + 1, N, CC), "cond")],
)
def test_bad_input_shapes_are_rejected(z_shape: tuple, c_shape: tuple, what: str) -> None:
    model = SteadyPrior(prior_cfg())
    with pytest.raises(ValueError, match=what):
        model(torch.zeros(z_shape), torch.zeros(c_shape))


def test_no_conditioning_channels() -> None:
    model = SteadyPrior(prior_cfg(cond_dim=0))
    z0 = torch.randn(B, N, D)
    assert model(z0, torch.zeros(B, N, 0)).shape == (B, N, D)


def test_bf16_autocast_keeps_dtype() -> None:
    model = SteadyPrior(prior_cfg("token_mixer"))
    for p in model.parameters():
        torch.nn.init.normal_(p, std=0.2)
    z0, cond = _inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        traj = model.trajectory(z0, cond)
    assert traj.dtype == torch.float32 and torch.isfinite(traj).all()
