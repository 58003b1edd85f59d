"""Decoded autoregressive rollouts following PDEBench's protocol.

Given frames ``0 .. initial_step-1`` of each trajectory, a surrogate predicts the remaining
frames by feeding its own predictions back in; predictions are compared in physical
(de-normalised) units.  The latent surrogate encodes frame ``initial_step-1`` once, steps in
latent space, and decodes every predicted latent (it never re-encodes its own output, which is
what an autoencoder-in-the-loop would hide).

All callables act on batches: ``encode(u [B, *space, C]) -> z [B, N, D]``,
``step(z) -> z_next`` and ``decode(z) -> u [B, *space, C]`` in normalised units.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from ups_kedro.data.torch_data import normaliser_tensors

Step = Callable[[torch.Tensor], torch.Tensor]


def scored_frames(n_frames: int, initial_step: int, time_stride: int = 1) -> np.ndarray:
    """Indices of the frames a rollout predicts: ``initial_step-1 + k*stride``, k ≥ 1."""
    return np.arange(initial_step - 1 + time_stride, n_frames, time_stride)


def persistence_rollout(fields: np.ndarray, initial_step: int, time_stride: int = 1) -> np.ndarray:
    """The "no change" baseline: every predicted frame equals the last given frame.

    Args:
        fields: [B, T, *space, C] physical truth.
    Returns:
        [B, K, *space, C] predictions for the frames of :func:`scored_frames`.
    """
    frames = scored_frames(fields.shape[1], initial_step, time_stride)
    last = np.asarray(fields[:, initial_step - 1], dtype=np.float32)
    return np.repeat(last[:, None], len(frames), axis=1)


@torch.no_grad()
def latent_rollout(
    fields: np.ndarray,
    normaliser: dict,
    encode: Step,
    step: Step,
    decode: Step,
    initial_step: int,
    time_stride: int = 1,
    batch_size: int = 64,
    on_start: Callable[[], None] | None = None,
) -> np.ndarray:
    """Autoregressive decoded rollout of a latent surrogate.

    Args:
        fields: [B, T, *space, C] physical truth (only frame ``initial_step-1`` is used).
        normaliser: per-channel ``mean``/``std`` (training split).
        on_start: called before each batch's rollout, so a stateful step (gated correction
            counts its steps) starts every trajectory at step 0.
    Returns:
        [B, K, *space, C] physical predictions for the frames of :func:`scored_frames`.
    """
    mean, std = normaliser_tensors(normaliser)
    n_steps = len(scored_frames(fields.shape[1], initial_step, time_stride))
    out = []
    for start in range(0, fields.shape[0], batch_size):
        u0 = torch.from_numpy(np.asarray(fields[start:start + batch_size, initial_step - 1],
                                         dtype=np.float32))
        z = encode((u0 - mean) / std)
        if on_start is not None:
            on_start()
        preds = []
        for _ in range(n_steps):
            z = step(z)
            preds.append(decode(z) * std + mean)
        out.append(torch.stack(preds, dim=1).numpy())
    return np.concatenate(out, axis=0)


@torch.no_grad()
def _map_frames(frames: np.ndarray, normaliser: dict, fn: Step, batch_size: int) -> np.ndarray:
    """Apply ``fn`` (normalised → normalised) to frames [M, *space, C] in physical units, batched."""
    mean, std = normaliser_tensors(normaliser)
    out = []
    for start in range(0, frames.shape[0], batch_size):
        u = (torch.from_numpy(np.array(frames[start:start + batch_size], np.float32)) - mean) / std
        out.append((fn(u) * std + mean).numpy())
    return np.concatenate(out)


def reconstruct(fields: np.ndarray, normaliser: dict, encode: Step, decode: Step,
                batch_size: int = 256) -> np.ndarray:
    """Decode(encode(u)) of every frame, in physical units: [B, T, *space, C]."""
    flat = np.asarray(fields, dtype=np.float32).reshape(-1, *fields.shape[2:])
    return _map_frames(flat, normaliser, lambda u: decode(encode(u)), batch_size).reshape(
        fields.shape)


def one_step_rollout(
    fields: np.ndarray,
    normaliser: dict,
    encode: Step,
    step: Step,
    decode: Step,
    initial_step: int,
    time_stride: int = 1,
    batch_size: int = 64,
) -> np.ndarray:
    """Teacher-forced one-step predictions: every scored frame from the TRUE previous frame.

    Reported beside the rollout only as a diagnostic (the original's sole metric, here decoded
    and in physical units): the gap between the two is the error accumulated by feedback.

    Returns:
        [B, K, *space, C] physical predictions for the frames of :func:`scored_frames`.
    """
    frames = scored_frames(fields.shape[1], initial_step, time_stride)
    prev = np.asarray(fields[:, frames - time_stride], dtype=np.float32)  # [B, K, *space, C]
    flat = prev.reshape(-1, *prev.shape[2:])
    return _map_frames(flat, normaliser, lambda u: decode(step(encode(u))), batch_size).reshape(
        prev.shape)
