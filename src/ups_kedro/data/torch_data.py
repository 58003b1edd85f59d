"""torch ``Dataset`` views over memory-mapped fields and latents (no copies of the data).

Items are read from the ``np.memmap`` one sample at a time, so peak memory does not grow with
the number of trajectories: the operating system pages in what a batch touches.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch.utils.data import Dataset


def normaliser_tensors(normaliser: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(mean [C], std [C]) float32 tensors from the ``data_processing.normaliser`` dict."""
    return (torch.tensor(normaliser["mean"], dtype=torch.float32),
            torch.tensor(normaliser["std"], dtype=torch.float32))


class FrameDataset(Dataset):
    """Single normalised frames of trajectories: item ``{"u": [*space, C]}``.

    Args:
        fields: [N, T, *space, C] physical fields (a memmap is fine).
        normaliser: per-channel ``mean``/``std`` from the training split.
        frame_stride: keep every ``frame_stride``-th frame (a cheaper validation subset).
    """

    def __init__(self, fields: np.ndarray, normaliser: dict, frame_stride: int = 1) -> None:
        self.fields = fields
        self.mean, self.std = normaliser_tensors(normaliser)
        self.frames = np.arange(0, fields.shape[1], frame_stride)

    def __len__(self) -> int:
        return self.fields.shape[0] * len(self.frames)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        n, k = divmod(index, len(self.frames))
        u = torch.from_numpy(np.array(self.fields[n, self.frames[k]], dtype=np.float32))
        return {"u": (u - self.mean) / self.std}


class LatentPairDataset(Dataset):
    """Latent transitions for the operator: ``z`` at frame t and the next ``horizon`` latents.

    Item: ``{"z": [N_tok, D], "z_next": [horizon, N_tok, D]}`` and, when ``fields`` is given,
    ``"u_next": [horizon, *space, C]`` (normalised physical targets for the losses that act on
    the decoded prediction).  Frames advance by ``time_stride`` prepared frames per step.

    Args:
        latents: [N, T, N_tok, D] (memmap).
        horizon: number of future steps per item (1 = one-step pairs; >1 for rollout losses).
        time_stride: prepared frames per operator step.
        fields: optional [N, T, *space, C] physical fields aligned with ``latents``.
        normaliser: required with ``fields``.
        starts: optional subset of start frames (e.g. a sparser validation set).
    """

    def __init__(
        self,
        latents: np.ndarray,
        horizon: int = 1,
        time_stride: int = 1,
        fields: np.ndarray | None = None,
        normaliser: dict | None = None,
        starts: Sequence[int] | None = None,
    ) -> None:
        n_frames = latents.shape[1]
        last_start = n_frames - 1 - horizon * time_stride
        if last_start < 0:
            raise ValueError(
                f"{n_frames} frames cannot hold a rollout of horizon {horizon} with time_stride "
                f"{time_stride}: lower operator.loss.rollout_horizon or operator.time_stride"
            )
        if fields is not None and fields.shape[:2] != latents.shape[:2]:
            raise ValueError(f"fields {fields.shape[:2]} and latents {latents.shape[:2]} differ")
        self.latents, self.fields = latents, fields
        self.horizon, self.time_stride = horizon, time_stride
        all_starts = np.arange(0, last_start + 1)
        self.starts = all_starts if starts is None else np.intersect1d(all_starts, starts)
        if fields is not None:
            if normaliser is None:
                raise ValueError("LatentPairDataset needs the normaliser when fields are given")
            self.mean, self.std = normaliser_tensors(normaliser)

    def __len__(self) -> int:
        return self.latents.shape[0] * len(self.starts)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        n, k = divmod(index, len(self.starts))
        t0 = int(self.starts[k])
        stop = t0 + self.horizon * self.time_stride + 1
        window = np.array(self.latents[n, t0:stop:self.time_stride], dtype=np.float32)
        item = {"z": torch.from_numpy(window[0]), "z_next": torch.from_numpy(window[1:])}
        if self.fields is not None:
            u = np.array(self.fields[n, t0 + self.time_stride:stop:self.time_stride], np.float32)
            item["u_next"] = (torch.from_numpy(u) - self.mean) / self.std
        return item


class ResidualPairDataset(Dataset):
    """One-step latent pairs for the residual stages: ``{"z", "z_next": [N_tok, D], "index"}``.

    ``index`` lets the stage's task cache the frozen operator's prediction per sample, so the
    operator runs once per sample for the whole stage rather than once per epoch.
    """

    def __init__(self, latents: np.ndarray, time_stride: int = 1,
                 starts: Sequence[int] | None = None) -> None:
        self.pairs = LatentPairDataset(latents, horizon=1, time_stride=time_stride, starts=starts)

    def __len__(self) -> int:
        return len(self.pairs)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        item = self.pairs[index]
        return {"z": item["z"], "z_next": item["z_next"][0], "index": torch.tensor(index)}
