"""Each operator loss term, *alone*, trains the operator with the right gradient.

The older test in ``test_stage_tasks.py`` switches a 1e-9 forward loss on beside the term
under test (the config requires forward or rollout), so a non-zero gradient there can come
from that forward term even if the term under test were detached.  Here the task gets only
the term (``OperatorTask`` computes any weights; ``validate`` is what refuses such a config
for a real run), and its autograd gradient must match a central finite difference of the
loss.
"""

from __future__ import annotations

import pytest
import torch

from ups_kedro.training.operator import OperatorLossConfig, OperatorTask

from .test_stage_tasks import _autoencoder, _operator


@pytest.mark.parametrize("term", ["spectral", "inv_enc", "inv_dec"])
def test_term_alone_has_the_finite_difference_gradient(term: str) -> None:
    torch.manual_seed(0)
    ae = _autoencoder().requires_grad_(False)
    op = _operator()
    cfg = OperatorLossConfig(lambda_forward=0.0, rollout_horizon=1, inverse_loss_warmup_epochs=0,
                             inverse_loss_max_weight=1.0, **{f"lambda_{term}": 1.0})
    task = OperatorTask(cfg, dt=0.05, autoencoder=ae if cfg.needs_fields else None)
    torch.manual_seed(1)
    batch = {"z": torch.randn(3, 4, 4),
             "z_next": torch.randn(3, 1, 4, 4),
             "u_next": torch.randn(3, 1, 16, 1)}

    loss, parts = task.training_loss(op, batch, epoch=1)
    assert loss.item() == pytest.approx(parts[term], rel=1e-6)  # the term and nothing else
    loss.backward()
    params = [p for p in op.parameters() if p.requires_grad]
    grads = [p.grad.detach().clone() if p.grad is not None else torch.zeros_like(p)
             for p in params]
    assert sum(float(g.abs().sum()) for g in grads) > 0
    assert all(p.grad is None for p in ae.parameters())  # the frozen autoencoder is not trained

    # Directional derivative along the gradient itself: autograd vs central difference.
    norm = torch.sqrt(sum((g * g).sum() for g in grads))
    direction = [g / norm for g in grads]
    eps = 1e-3  # float32 (the models fix some dtypes): large enough for round-off

    def loss_at(step: float) -> float:
        with torch.no_grad():
            for p, d in zip(params, direction, strict=True):
                p.add_(step * d)
            value = task.training_loss(op, batch, epoch=1)[0].item()
            for p, d in zip(params, direction, strict=True):
                p.sub_(step * d)
        return value

    numeric = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    assert numeric == pytest.approx(float(norm), rel=2e-2)
    assert loss_at(-1e-3) < loss.item()  # a small step against it lowers the term
