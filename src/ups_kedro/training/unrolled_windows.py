"""Training windows for correctors trained through their own rollout (Stages 2 and 3)."""

from __future__ import annotations

from ups_kedro.data.torch_data import LatentPairDataset
from ups_kedro.datasets.array_dataset import ArrayBundle


def unrolled_windows(latents: ArrayBundle, horizon: int | None, time_stride: int,
                     start_stride: int, first_start: int | None = None,
                     ) -> tuple[LatentPairDataset, int]:
    """Windows ``{"z", "z_next": [horizon, N, D]}`` from ``first_start`` (None: the frame the
    evaluation's rollouts start from, ``initial_step - 1``) at every ``start_stride``-th frame,
    and the horizon (None: every step left after ``first_start``, the evaluation's rollout).

    Raises ``ValueError`` when no window fits (the horizon is too long for the frames left).
    """
    n_frames = latents.array.shape[1]
    first = int(latents.meta["initial_step"]) - 1 if first_start is None else first_start
    if horizon is None:
        horizon = max((n_frames - 1 - first) // time_stride, 1)
    last = n_frames - 1 - horizon * time_stride
    if first > last:
        raise ValueError(f"no unrolled window of horizon {horizon} (time_stride {time_stride}) "
                         f"fits between frame {first} and the last of {n_frames} frames: lower "
                         f"the horizon or first_start (at most {max(last, 0)} here)")
    return LatentPairDataset(latents.array, horizon=horizon, time_stride=time_stride,
                             starts=range(first, n_frames, start_stride)), horizon
