"""Registry round trips (config dict -> module -> checkpoint dict -> same module) and the
autoencoder: gradients, consistency checks and a tiny overfit."""

from __future__ import annotations

import dataclasses
import json
import math
import time

import pytest
import torch

from ups_kedro.models.autoencoder import Autoencoder, AutoencoderConfig
from ups_kedro.models.corrector import RolloutCorrectorConfig
from ups_kedro.models.diffusion_residual import DiffusionResidualConfig
from ups_kedro.models.registry import MODEL_KINDS, build_model, model_config, model_kind
from ups_kedro.models.steady_prior import SteadyPriorConfig

from ._helpers import GRIDS, TOKENS, assert_grads, decoder_cfg, encoder_cfg, operator_cfg


def _example(kind: str) -> tuple[object, tuple[torch.Tensor, ...]]:
    if kind == "grid_encoder":
        return encoder_cfg(2, 3), (torch.randn(2, *GRIDS[2], 3),)
    if kind == "any_point_decoder":
        return decoder_cfg(2, 3), (torch.randn(2, TOKENS[2], 8), torch.rand(5, 2))
    if kind == "latent_operator":
        return operator_cfg(), (torch.randn(2, 8, 8), 0.1)
    if kind == "diffusion_residual":
        cfg = DiffusionResidualConfig(latent_dim=8, latent_tokens=8, hidden_dim=16,
                                      architecture="token_mixer", num_layers=1)
        return cfg, (torch.randn(2, 8, 8), torch.randn(2, 8, 8), torch.full((2,), 0.5))
    if kind == "rollout_corrector":
        cfg = RolloutCorrectorConfig(latent_dim=8, latent_tokens=8, hidden_dim=16, num_blocks=1)
        return cfg, (torch.randn(2, 8, 8), torch.randn(2, 8, 8))
    if kind == "steady_prior":
        cfg = SteadyPriorConfig(latent_dim=8, latent_tokens=8, cond_dim=3, hidden_dim=16)
        return cfg, (torch.randn(2, 8, 8), torch.randn(2, 8, 3))
    return AutoencoderConfig(encoder_cfg(1, 2), decoder_cfg(1, 2)), (torch.randn(2, *GRIDS[1], 2),)


@pytest.mark.parametrize("kind", sorted(MODEL_KINDS))
def test_round_trip_through_a_json_checkpoint(kind: str) -> None:
    torch.manual_seed(0)
    cfg, inputs = _example(kind)
    model = build_model(kind, dataclasses.asdict(cfg))
    for p in model.parameters():  # make zero-initialised outputs non-trivial
        if p.abs().sum() == 0:
            torch.nn.init.normal_(p, std=0.1)
    assert model_kind(model) == kind
    # What a checkpoint stores; JSON turns every tuple into a list.
    ckpt = json.loads(json.dumps({"kind": model_kind(model), "config": model_config(model)}))
    assert ckpt["config"] == model_config(model)  # plain lists and scalars, JSON/YAML-stable
    rebuilt = build_model(ckpt["kind"], ckpt["config"])
    assert rebuilt.cfg == model.cfg
    rebuilt.load_state_dict(model.state_dict())
    model.eval()
    rebuilt.eval()
    outs = [m(*inputs) for m in (model, rebuilt)]
    outs = [o if isinstance(o, tuple) else (o,) for o in outs]
    for a, b in zip(*outs):
        assert torch.equal(a, b)


def test_lists_become_tuples_and_dataclass_configs_pass_through() -> None:
    cfg = dataclasses.asdict(encoder_cfg(1, 1))
    cfg["grid_shape"] = [32]
    cfg["fourier_freqs"] = [1, 2]
    enc = build_model("grid_encoder", cfg)
    assert enc.cfg.grid_shape == (32,) and isinstance(enc.cfg.fourier_freqs, tuple)
    assert build_model("grid_encoder", enc.cfg).cfg == enc.cfg


def test_unknown_and_missing_keys_and_kinds_are_named() -> None:
    cfg = dataclasses.asdict(operator_cfg())
    with pytest.raises(ValueError, match="latent_operator.hiden_dim"):
        build_model("latent_operator", {**cfg, "hiden_dim": 3})
    missing = {k: v for k, v in cfg.items() if k != "group_size"}
    with pytest.raises(ValueError, match="latent_operator.group_size"):
        build_model("latent_operator", missing)
    with pytest.raises(ValueError, match="latent_operator.num_heads"):
        build_model("latent_operator", {**cfg, "num_heads": 5})
    with pytest.raises(ValueError, match="unknown model kind"):
        build_model("fno", {})
    with pytest.raises(ValueError, match="not a registered"):
        model_kind(torch.nn.Linear(2, 2))


@pytest.mark.parametrize(
    ("dec_override", "field"),
    [
        ({"latent_dim": 4}, "decoder.latent_dim"),
        ({"latent_tokens": 4}, "decoder.latent_tokens"),
        ({"out_channels": 2}, "decoder.out_channels"),
    ],
)
def test_autoencoder_halves_must_agree(dec_override: dict, field: str) -> None:
    cfg = AutoencoderConfig(encoder_cfg(1, 1), decoder_cfg(1, 1, **dec_override))
    with pytest.raises(ValueError, match=rf"autoencoder\.{field}"):
        Autoencoder(cfg)


@pytest.mark.parametrize("spatial_dims", [1, 2])
@pytest.mark.parametrize("channels", [1, 3])
def test_autoencoder_shapes_and_gradients(spatial_dims: int, channels: int) -> None:
    torch.manual_seed(0)
    enc, dec = encoder_cfg(spatial_dims, channels), decoder_cfg(spatial_dims, channels)
    cfg = AutoencoderConfig(enc, dec)
    ae = Autoencoder(cfg)
    u = torch.randn(2, *GRIDS[spatial_dims], channels)
    z, u_hat = ae(u)
    assert z.shape == (2, TOKENS[spatial_dims], 8)
    assert u_hat.shape == u.shape
    fine = tuple(2 * n for n in GRIDS[spatial_dims])
    assert ae.decode(z, fine).shape == (2, *fine, channels)
    (u_hat - u).pow(2).mean().backward()
    # The stem's last conv is zero-initialised, so the convs before it get zero gradient at
    # init; perturb it and every parameter must then receive a non-zero gradient.
    assert_grads(ae, nonzero=False)
    with torch.no_grad():
        ae.encoder.stem.convs[-1].weight.normal_(std=0.1)
    ae.zero_grad()
    (ae(u)[1] - u).pow(2).mean().backward()
    assert_grads(ae, nonzero=True)


def test_autoencoder_bf16_autocast() -> None:
    torch.manual_seed(0)
    ae = Autoencoder(AutoencoderConfig(encoder_cfg(2, 3), decoder_cfg(2, 3)))
    u = torch.randn(2, *GRIDS[2], 3)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        z, u_hat = ae(u)
    assert torch.isfinite(u_hat.float()).all() and u_hat.shape == u.shape


def test_autoencoder_overfits_smooth_fields() -> None:
    """A handful of smooth periodic 1D fields is reconstructed to a few percent in 300 steps
    (~2 s; nRMSE ~0.015-0.02 over seeds 0-2)."""
    torch.manual_seed(0)
    n_points = 64
    x = (torch.arange(n_points) + 0.5) / n_points
    k = torch.tensor([1.0, 2.0, 3.0])
    amp = torch.randn(6, 3, 1)
    phase = 2 * math.pi * torch.rand(6, 3, 1)
    waves = amp * torch.sin(2 * math.pi * k[None, :, None] * x + phase)  # [6, 3, 64]
    u = waves.sum(1).unsqueeze(-1)  # [6, 64, 1]
    u = (u - u.mean()) / u.std()
    enc = encoder_cfg(1, 1, grid_shape=(n_points,), patch_size=4, latent_tokens=16)
    dec = decoder_cfg(1, 1, latent_tokens=16, num_layers=1)
    ae = Autoencoder(AutoencoderConfig(enc, dec))
    opt = torch.optim.Adam(ae.parameters(), lr=3e-3)
    # Tiny tensors: one thread is fastest and immune to a busy second core.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        start = time.perf_counter()
        for _ in range(300):
            loss = (ae(u)[1] - u).pow(2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
        elapsed = time.perf_counter() - start
    finally:
        torch.set_num_threads(threads)
    with torch.no_grad():
        nrmse = ((ae(u)[1] - u).pow(2).mean((1, 2)).sqrt() / u.pow(2).mean((1, 2)).sqrt()).mean()
    assert nrmse < 0.05, f"nRMSE {nrmse:.3g} after 300 steps ({elapsed:.1f} s)"
