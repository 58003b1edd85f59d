"""Rollout windows for unrolled operator training, a random start per block of frames.

An unrolled loss over ``horizon`` steps costs ``horizon`` network evaluations per window, so
training on every start frame makes an epoch ``horizon`` times dearer than one-step training
while consecutive windows overlap almost entirely.  :class:`JitteredWindowDataset` instead
splits each trajectory's start frames into blocks of ``start_stride`` and draws one start per
block every time an item is read: an epoch costs ``1 / start_stride`` of the full set, and over
epochs every start frame is used (a fixed stride would never start a window at the frames in
between, and a one-step loss would never see those transitions at all).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset


class JitteredWindowDataset(Dataset):
    """Latent windows ``{"z": [N_tok, D], "z_next": [horizon, N_tok, D]}`` with random starts.

    Item ``i`` is trajectory ``i // blocks``, block ``i % blocks``; its start frame is drawn
    uniformly (torch's global generator, so ``fit``'s seeding and resume make it reproducible)
    from that block's ``start_stride`` frames that still leave room for ``horizon`` steps.

    Args:
        latents: [N, T, N_tok, D] (a memmap is fine).
        horizon: future latents per window.
        time_stride: prepared frames per operator step.
        start_stride: start frames per block (1: every start, no randomness).
    """

    def __init__(self, latents: np.ndarray, horizon: int, time_stride: int = 1,
                 start_stride: int = 1) -> None:
        if start_stride < 1:
            raise ValueError(f"start_stride must be ≥ 1, got {start_stride}")
        self.n_starts = latents.shape[1] - horizon * time_stride
        if self.n_starts < 1:
            raise ValueError(
                f"{latents.shape[1]} frames cannot hold a rollout of horizon {horizon} with "
                f"time_stride {time_stride}: lower operator.loss.rollout_horizon or "
                "operator.time_stride")
        self.latents, self.horizon = latents, horizon
        self.time_stride, self.start_stride = time_stride, start_stride
        self.blocks = -(-self.n_starts // start_stride)  # ceil

    def __len__(self) -> int:
        return self.latents.shape[0] * self.blocks

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        n, block = divmod(index, self.blocks)
        first = block * self.start_stride
        width = min(self.start_stride, self.n_starts - first)
        t0 = first + int(torch.randint(width, ()).item()) if width > 1 else first
        stop = t0 + self.horizon * self.time_stride + 1
        window = np.array(self.latents[n, t0:stop:self.time_stride], dtype=np.float32)
        return {"z": torch.from_numpy(window[0]), "z_next": torch.from_numpy(window[1:])}


__all__ = ["JitteredWindowDataset"]
