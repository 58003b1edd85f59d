"""Stage 4 (steady prior) as a predictor and its scoring: no Kedro, no MLflow.

:class:`SteadyPredictor` / :func:`predict_steady` map coefficient fields (and an optional
initial guess) to the decoded steady field; :func:`score_steady` is the steady-field nRMSE by
refinement step that the ``steady_prior`` and ``evaluation`` pipelines log and inference uses.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ups_kedro.checks import require_same
from ups_kedro.config import ConfigError
from ups_kedro.data.steady import conditioning_fields, is_skipped, mean_field, skip_reason
from ups_kedro.data.torch_data import normaliser_tensors
from ups_kedro.datasets.array_dataset import ArrayBundle
from ups_kedro.evaluation import metrics
from ups_kedro.evaluation.rollout import reconstruct
from ups_kedro.training.artifacts import freeze, load_module
from ups_kedro.training.steady import conditioning_tokens

@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` torch threads (None: unchanged), restoring the count afterwards."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def encode_solutions(autoencoder, solutions: np.ndarray, normaliser: dict,
                     batch_size: int = 256) -> torch.Tensor:
    """``z* [n, N, D]`` of physical solutions ``[n, 1, X, Y, C]`` (or ``[n, X, Y, C]``)."""
    mean, std = normaliser_tensors(normaliser)
    n = solutions.shape[0]
    out = []
    for start in range(0, n, batch_size):
        u = torch.from_numpy(np.asarray(solutions[start:start + batch_size], dtype=np.float32))
        u = u.reshape(u.shape[0], *u.shape[-3:])  # drop the single time axis
        out.append(autoencoder.encode((u - mean) / std))
    return torch.cat(out)


def steady_conditioning(nu: np.ndarray, beta: float | np.ndarray, normaliser: dict,
                        latent_tokens: int) -> torch.Tensor:
    """Conditioning tokens ``[n, N, Cc]`` of coefficient fields and forcing(s)."""
    fields = conditioning_fields(nu, beta, normaliser)
    side = round(latent_tokens ** 0.5)
    if side * side != latent_tokens or any(n % side for n in fields.shape[1:3]):
        raise ConfigError(
            f"steady_prior.autoencoder.latent.tokens={latent_tokens} must be a square whose "
            f"root divides the grid {tuple(fields.shape[1:3])}: the conditioning is cut into "
            "the same token grid")
    return conditioning_tokens(torch.from_numpy(fields), latent_tokens)


class SteadyPredictor:
    """Steady-mode inference: conditioning (+ optional initial guess) → decoded steady field.

    Build it once with :meth:`from_checkpoints`; every output is physical and channels-last.
    """

    def __init__(self, prior, autoencoder, z0: torch.Tensor, normaliser: dict,
                 beta: float) -> None:
        self.prior, self.autoencoder = freeze(prior), freeze(autoencoder)
        self.z0, self.normaliser, self.beta = z0.float(), normaliser, float(beta)
        self.mean, self.std = normaliser_tensors(normaliser)
        self.tokens = autoencoder.cfg.encoder.latent_tokens
        self.num_steps = prior.cfg.num_steps

    @classmethod
    def from_checkpoints(cls, prior_checkpoint: dict, autoencoder_checkpoint: dict
                         ) -> SteadyPredictor:
        skipped = [c for c in (prior_checkpoint, autoencoder_checkpoint) if is_skipped(c)]
        if skipped:
            raise ValueError(
                f"no steady prior to run: Stage 4 was skipped when it was written "
                f"({skip_reason(skipped[0])}); set steady_prior.train.epochs > 0 (with "
                "data_processing.steady.enabled: true) and re-run the pipelines")
        require_same("encoder", autoencoder_checkpoint["lineage"]["encoder_hash"],
                     prior_checkpoint["lineage"]["encoder_hash"],
                     "The steady prior was trained on another autoencoder's latents: re-run it.")
        return cls(load_module(prior_checkpoint), load_module(autoencoder_checkpoint),
                   prior_checkpoint["z0"], prior_checkpoint["normaliser"],
                   prior_checkpoint["beta"])

    def _decode(self, z: torch.Tensor) -> np.ndarray:
        return (self.autoencoder.decode(z) * self.std + self.mean).numpy()

    @torch.no_grad()
    def latent_trajectory(self, nu: np.ndarray, beta: float | np.ndarray | None = None,
                          initial_guess: np.ndarray | None = None) -> torch.Tensor:
        """Latent states ``[n, num_steps + 1, N, D]`` (``[:, 0]`` is the initial guess).

        Args:
            nu: coefficient fields ``[n, X, Y]`` or ``[n, X, Y, 1]``.
            beta: forcing (scalar or ``[n]``); default: the training forcing.
            initial_guess: optional physical field ``[n, X, Y, C]`` (or ``[n, 1, X, Y, C]``),
                encoded as ``z0``; default: the training-mean latent.
        """
        cond = steady_conditioning(nu, self.beta if beta is None else beta, self.normaliser,
                                   self.tokens)
        if initial_guess is None:
            z0 = self.z0.expand(cond.shape[0], -1, -1)
        else:
            z0 = encode_solutions(self.autoencoder, np.asarray(initial_guess), self.normaliser)
        return self.prior.trajectory(z0, cond)

    @torch.no_grad()
    def trajectory(self, nu: np.ndarray, beta: float | np.ndarray | None = None,
                   initial_guess: np.ndarray | None = None, batch_size: int = 64) -> np.ndarray:
        """Decoded fields after 0..num_steps refinements: ``[n, num_steps + 1, X, Y, C]``."""
        out = []
        beta_arr = np.broadcast_to(np.asarray(self.beta if beta is None else beta,
                                              dtype=np.float64).reshape(-1), (len(nu),))
        for start in range(0, len(nu), batch_size):
            sl = slice(start, start + batch_size)
            states = self.latent_trajectory(
                nu[sl], beta_arr[sl], None if initial_guess is None else initial_guess[sl])
            b, s = states.shape[:2]
            out.append(self._decode(states.reshape(b * s, *states.shape[2:]))
                       .reshape(b, s, *self.autoencoder.cfg.encoder.grid_shape, -1))
        return np.concatenate(out)

    @torch.no_grad()
    def predict(self, nu: np.ndarray, beta: float | np.ndarray | None = None,
                initial_guess: np.ndarray | None = None, steps: int | None = None) -> np.ndarray:
        """The decoded steady field ``[n, X, Y, C]`` after ``steps`` (default all) refinements."""
        steps = self.num_steps if steps is None else steps
        if not 0 <= steps <= self.num_steps:
            raise ValueError(f"steps must be in 0..{self.num_steps}, got {steps}")
        return self._decode(self.latent_trajectory(nu, beta, initial_guess)[:, steps])


def predict_steady(prior_checkpoint: dict, autoencoder_checkpoint: dict, nu: np.ndarray,
                   beta: float | np.ndarray | None = None,
                   initial_guess: np.ndarray | None = None,
                   steps: int | None = None) -> np.ndarray:
    """One-call steady-mode inference (see :class:`SteadyPredictor`): ``[n, X, Y, C]``."""
    predictor = SteadyPredictor.from_checkpoints(prior_checkpoint, autoencoder_checkpoint)
    return predictor.predict(nu, beta, initial_guess, steps)


def _nrmse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean PDEBench nRMSE of steady fields ``[n, 1, X, Y, C]`` (T = 1)."""
    return float(metrics.nrmse(pred, truth).mean())


def score_steady(checkpoint: dict, autoencoder_checkpoint: dict, solutions_train: ArrayBundle,
                 solutions: ArrayBundle, coefficients: ArrayBundle, batch_size: int = 64,
                 threads: int | None = None) -> dict[str, Any]:
    """Decoded steady-field nRMSE on one split after each refinement, beside the baselines.

    Keys: ``nrmse`` (all refinements), ``nrmse_step_k``, ``nrmse_by_step`` (list, k = 0 is the
    initial guess), ``nrmse_initial_guess``, ``nrmse_mean_field`` (training-mean field),
    ``recon_nrmse`` (the autoencoder's floor), ``gain_vs_*``, ``n`` (samples).
    """
    predictor = SteadyPredictor.from_checkpoints(checkpoint, autoencoder_checkpoint)
    truth = np.asarray(solutions.array, dtype=np.float32)  # [n, 1, X, Y, C]
    with torch_threads(threads):
        fields = predictor.trajectory(np.asarray(coefficients.array), coefficients.meta["beta"],
                                      batch_size=batch_size)  # [n, S+1, X, Y, C]
        recon = reconstruct(truth, predictor.normaliser, predictor.autoencoder.encode,
                            predictor.autoencoder.decode, batch_size)
    by_step = [_nrmse(fields[:, k:k + 1], truth) for k in range(fields.shape[1])]
    baseline_mean = _nrmse(np.broadcast_to(mean_field(solutions_train.array), truth.shape), truth)
    return {
        "nrmse": by_step[-1],
        "nrmse_initial_guess": by_step[0],
        "nrmse_mean_field": baseline_mean,
        "recon_nrmse": _nrmse(recon, truth),
        **{f"nrmse_step_{k}": v for k, v in enumerate(by_step) if k > 0},
        "gain_vs_initial_guess": by_step[0] / max(by_step[-1], 1e-12),
        "gain_vs_mean_field": baseline_mean / max(by_step[-1], 1e-12),
        "nrmse_by_step": by_step,
        "n": int(truth.shape[0]),
    }
