"""EMA warm-up rule and agreement with AveragedModel's EMA."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from ups_kedro.training.ema import create_ema, ema_state, load_ema_state, warmup_decay


def test_warmup_decay_formula() -> None:
    assert warmup_decay(0.999, 1) == pytest.approx(2 / 11)
    assert warmup_decay(0.999, 9) == pytest.approx(10 / 19)
    assert warmup_decay(0.9, 100) == 0.9  # (101/110 > 0.9) → capped
    assert warmup_decay(0.999, 1, warmup=False) == 0.999


def _set(layer: nn.Linear, value: float) -> None:
    with torch.no_grad():
        layer.weight.fill_(value)
        layer.bias.fill_(value)


def test_warmup_updates_exactly() -> None:
    layer = nn.Linear(2, 1)
    ema = create_ema(layer, 0.999, warmup=True)
    _set(layer, 1.0)
    ema.update_parameters(layer)  # update 1 copies: the random init is gone
    assert torch.all(ema.module.weight == 1.0)
    _set(layer, 2.0)
    ema.update_parameters(layer)  # n=1 → d = 2/11
    expected = 2 / 11 * 1.0 + 9 / 11 * 2.0
    assert torch.allclose(ema.module.weight, torch.full_like(layer.weight, expected))
    _set(layer, 0.0)
    ema.update_parameters(layer)  # n=2 → d = 3/12
    assert torch.allclose(ema.module.bias, torch.tensor([3 / 12 * expected]))


def test_without_warmup_matches_averaged_model() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4))
    ours = create_ema(model, 0.9, warmup=False)
    ref = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(0.9), use_buffers=True)
    for _ in range(5):
        model.train()
        model(torch.randn(8, 3))  # moves BatchNorm running stats (float and int buffers)
        with torch.no_grad():
            for p in model.parameters():
                p.add_(torch.randn_like(p))
        ours.update_parameters(model)
        ref.update_parameters(model)
    for (k, a), (_, b) in zip(ours.module.state_dict().items(), ref.module.state_dict().items()):
        if a.is_floating_point():
            assert torch.allclose(a, b), k
    assert int(ours.module[1].num_batches_tracked) == 5  # integer buffer copied


def test_state_roundtrip() -> None:
    layer = nn.Linear(2, 2)
    ema = create_ema(layer, 0.99)
    for _ in range(3):
        ema.update_parameters(layer)
    other = create_ema(nn.Linear(2, 2), 0.99)
    load_ema_state(other, ema_state(ema))
    assert int(other.n_averaged) == 3
    assert torch.equal(other.module.weight, ema.module.weight)
