"""Stage 1 losses for the latent operator, with the original's names and curriculum.

Batches come from :class:`~ups_kedro.data.torch_data.LatentPairDataset`:
``{"z": [B, N, D], "z_next": [B, H, N, D]}`` and, when physical losses are on,
``"u_next": [B, H, *space, C]`` (normalised fields of the target frames).

Losses (weights in :class:`OperatorLossConfig`):

* ``forward``  — MSE(Op(z), z_next[0]) in latent space;
* ``rollout``  — mean over the H unrolled steps of MSE(Op^h(z), z_next[h-1])
  (H = ``rollout_horizon``), with gradients through the whole rollout: the operator learns to
  correct the drift its own earlier steps cause, which a one-step loss never shows it.  The
  first ``rollout_warmup_epochs`` train one step only (cheap: many optimizer steps while the
  one-step map is still poor), then ``rollout_curriculum_epochs`` > 0 grows the horizon
  linearly to H over that many epochs (0: straight to H); ``rollout_grad_steps`` truncates
  back-propagation to the last that many steps before each loss term's state (1: the
  pushforward trick — earlier steps only produce a drifted input); validation always rolls out
  the full H;
* ``spectral`` — normalised difference of Fourier energy spectra of the one-step prediction along
  the token axis;
* ``inv_enc``  — MSE(decoder(Op(z)), u_next[0]): the *prediction* decoded and compared with the true
  next field, so the gradient reaches the operator through the frozen decoder (the original computed
  it from the input latent with frozen random networks, so it trained nothing);
* ``inv_dec``  — MSE(encoder(decoder(Op(z))), Op(z)): the prediction stays on the latent manifold
  the autoencoder understands.
With ``relative_floor`` set, the forward and rollout terms are per-sample *relative* latent errors
(:func:`~ups_kedro.training.losses.relative_mse` around the latent of the all-zero field), so
decayed, small-amplitude states — which dominate the per-frame nRMSE the rollouts are scored by —
weigh as much as energetic ones.  ``input_noise`` > 0 perturbs the input latent during training
by Gaussian noise of that size relative to the sample's own latent RMS (around the same origin):
the operator then learns to map slightly-off states back towards the data, which is what it sees
after its own first steps in a rollout.
The two inverse weights follow the curriculum of :func:`~ups_kedro.training.losses.inverse_loss_weight`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from ups_kedro.training.config import OperatorLossConfig
from ups_kedro.training.losses import inverse_loss_weight, mse, relative_mse, spectral_energy_loss


class OperatorTask:
    """``StageTask`` for :class:`~ups_kedro.models.operator.LatentOperator`.

    Args:
        loss: loss weights and curriculum.
        dt: physical time step of one operator step (fed to the time embedding).
        autoencoder: frozen autoencoder (``encode``/``decode``) for the inverse losses, or None.
        latent_origin: ``[N, D]`` latent of the all-zero physical field (the "no signal" state
            for ``relative_floor`` and ``input_noise``); None: the zero latent.
        rollout_metric: ``metric(model) -> float``, lower is better (e.g. the decoded validation
            rollout nRMSE); when given, :func:`~ups_kedro.training.launcher.fit` selects the best
            epoch by it through :meth:`validation_metric` instead of the validation loss.
    """

    def __init__(self, loss: OperatorLossConfig, dt: float, autoencoder: nn.Module | None = None,
                 latent_origin: Tensor | None = None,
                 rollout_metric: Callable[[nn.Module], float] | None = None):
        if loss.needs_fields and autoencoder is None:
            raise ValueError("inverse losses need the autoencoder")
        self.loss, self.dt, self.autoencoder = loss, dt, autoencoder
        self.latent_origin = latent_origin
        self.rollout_metric = rollout_metric

    def validation_metric(self, model: nn.Module) -> float | None:
        """Best-epoch selection metric (``None``: select by the validation loss)."""
        return None if self.rollout_metric is None else float(self.rollout_metric(model))

    def _origin(self, z: Tensor) -> Tensor | None:
        return None if self.latent_origin is None else self.latent_origin.to(z.device, z.dtype)

    def _err(self, pred: Tensor, target: Tensor) -> Tensor:
        """Latent error of one step: MSE, or the relative MSE when ``relative_floor`` is set."""
        floor = self.loss.relative_floor
        if floor is None:
            return mse(pred, target)
        return relative_mse(pred, target, floor, self._origin(target))

    def _losses(self, model: nn.Module, batch: dict[str, Tensor], epoch: int | None
                ) -> tuple[Tensor, dict[str, float]]:
        cfg = self.loss
        z, z_next = batch["z"], batch["z_next"]
        if cfg.input_noise > 0 and epoch is not None:  # training only: validation stays clean
            origin = self._origin(z)
            dev = z if origin is None else z - origin
            scale = dev.float().square().flatten(1).mean(1).sqrt()  # [B] per-sample latent RMS
            scale = scale.reshape(-1, *([1] * (z.dim() - 1))).to(z.dtype)
            z = z + cfg.input_noise * scale * torch.randn_like(z)
        steps = min(cfg.horizon_at(epoch), z_next.shape[1]) if cfg.lambda_rollout > 0 else 1
        preds, state = [], z
        for h in range(steps):
            if (epoch is not None and cfg.rollout_grad_steps is not None and h > 0
                    and h % cfg.rollout_grad_steps == 0):
                state = state.detach()  # truncated back-propagation through the rollout
            state = model(state, self.dt)
            preds.append(state)
        pred1 = preds[0]
        parts: dict[str, Tensor] = {"forward": self._err(pred1, z_next[:, 0])}
        total = cfg.lambda_forward * parts["forward"]
        if cfg.lambda_rollout > 0:
            parts["rollout"] = torch.stack(
                [self._err(p, z_next[:, h]) for h, p in enumerate(preds)]).mean()
            total = total + cfg.lambda_rollout * parts["rollout"]
        if cfg.lambda_spectral > 0:
            parts["spectral"] = spectral_energy_loss(pred1, z_next[:, 0], dim=1)
            total = total + cfg.lambda_spectral * parts["spectral"]
        if cfg.needs_fields:
            # Validation (epoch None) reports the full-weight terms; training uses the curriculum.
            weights = {name: (getattr(cfg, f"lambda_{name}") if epoch is None else inverse_loss_weight(
                epoch, cfg.inverse_loss_warmup_epochs, cfg.inverse_loss_max_weight,
                getattr(cfg, f"lambda_{name}"))) for name in ("inv_enc", "inv_dec")}
            decoded = self.autoencoder.decode(pred1)
            parts["inv_enc"] = mse(decoded, batch["u_next"][:, 0])
            parts["inv_dec"] = mse(self.autoencoder.encode(decoded), pred1)
            if epoch is not None:
                total = total + weights["inv_enc"] * parts["inv_enc"] + weights["inv_dec"] * parts["inv_dec"]
        comps = {k: v.item() for k, v in parts.items()}
        if cfg.lambda_rollout > 0 and epoch is not None:
            comps["horizon"] = float(steps)  # the curriculum's current horizon, for the curves
        return total, comps

    def training_loss(self, model: nn.Module, batch: dict[str, Tensor], epoch: int
                      ) -> tuple[Tensor, dict[str, float]]:
        total, comps = self._losses(model, batch, epoch)
        if self.loss.needs_fields:
            comps["inv_weight"] = inverse_loss_weight(
                epoch, self.loss.inverse_loss_warmup_epochs, self.loss.inverse_loss_max_weight, 1.0)
        return total, comps

    def validation_loss(self, model: nn.Module, batch: dict[str, Tensor]
                        ) -> tuple[Tensor, dict[str, float]]:
        # Selection uses the latent forward (and rollout) error only, so the curriculum cannot
        # make later epochs look worse.
        return self._losses(model, batch, None)
