"""Stage 4: train the :class:`~ups_kedro.models.steady_prior.SteadyPrior` on real steady states.

A :class:`ups_kedro.training.task.StageTask` for :func:`fit` on batches::

    {"z0": [B, N, D], "cond": [B, N, Cc], "z_star": [B, N, D]}

* ``z_star``: the encoded steady solution (e.g. ``encoder(u)`` of a Darcy solution ``u``);
* ``cond``: what defines that steady state (coefficient field, forcing) in the same token
  layout, e.g. from :func:`conditioning_tokens`;
* ``z0``: the initial guess, e.g. the training-split mean of ``z_star`` (``z0 = 0`` is the
  other cheap choice).  ``relative_l2(z0, z_star)`` is the trivial baseline every reported
  refinement error stands beside.

The original trained its steady prior on transient pairs (defect 6); here the target is the
encoded solution of the steady problem itself.

Loss (training and validation alike, so that model selection optimises what is trained)::

    loss = MSE(z_S, z*) + lambda_intermediate * mean_{s=1..S-1} MSE(z_s, z*)

The second term is deep supervision: every refinement is pulled towards ``z*``, which makes
the error decrease step by step (an early exit is then meaningful) and gives the shared drift
a gradient from every step, not only through the whole chain.  It is 0 when ``S = 1``.
Validation also reports ``rel_err_step_k`` (per-sample relative L2 to ``z*`` after ``k``
refinements, ``k = 0`` being the initial guess), the error-vs-refinement curve.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor, nn
from torch.utils.data import Dataset

from ups_kedro.training.losses import mse, relative_l2

BATCH_KEYS = ("z0", "cond", "z_star")


def _unpack(batch: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
    """``(z0, cond, z_star)`` from a batch, with a message naming a missing key."""
    missing = [k for k in BATCH_KEYS if k not in batch]
    if missing:
        raise KeyError(
            f"SteadyPriorTask: batch lacks {missing}; expected keys {list(BATCH_KEYS)} "
            f"(got {sorted(batch)})"
        )
    return batch["z0"], batch["cond"], batch["z_star"]


class SteadyPriorTask:
    """Deep-supervised regression of the refined latent onto the encoded steady state.

    Args:
        lambda_intermediate: weight of the mean MSE of the intermediate states ``z_1..z_{S-1}``
            (0 trains the final state only).
    """

    def __init__(self, lambda_intermediate: float = 0.1) -> None:
        if not (math.isfinite(lambda_intermediate) and lambda_intermediate >= 0.0):
            raise ValueError(
                f"SteadyPriorTask: lambda_intermediate must be a finite number >= 0, "
                f"got {lambda_intermediate!r}"
            )
        self.lambda_intermediate = float(lambda_intermediate)

    def _losses(self, states: Tensor, z_star: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``states [B, S+1, N, D]`` -> ``(total, final, intermediate)`` 0-d float32 tensors.

        Computed in float32: under bf16 autocast the drift outputs bf16, and a squared error of
        nearly equal numbers would lose most of its digits.
        """
        target = z_star.float()
        final = mse(states[:, -1].float(), target)
        inner = states[:, 1:-1].float()  # [B, S-1, N, D]; empty when S == 1
        if inner.shape[1] == 0:
            intermediate = final.new_zeros(())
        else:
            # mean over steps of per-step MSE == MSE against the broadcast target (equal sizes)
            intermediate = mse(inner, target.unsqueeze(1).expand_as(inner))
        return final + self.lambda_intermediate * intermediate, final, intermediate

    def training_loss(
        self, model: nn.Module, batch: dict[str, Tensor], epoch: int
    ) -> tuple[Tensor, dict[str, float]]:
        """Scalar loss (with graph) and components ``final``, ``intermediate``."""
        z0, cond, z_star = _unpack(batch)
        states = model(z0, cond, return_trajectory=True)  # [B, S+1, N, D]
        loss, final, intermediate = self._losses(states, z_star)
        return loss, {"final": float(final.detach()), "intermediate": float(intermediate.detach())}

    def validation_loss(
        self, model: nn.Module, batch: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, float]]:
        """The training loss plus ``rel_err_step_k`` for ``k = 0 .. num_steps``."""
        z0, cond, z_star = _unpack(batch)
        states = model(z0, cond, return_trajectory=True)
        loss, final, intermediate = self._losses(states, z_star)
        components = {"final": float(final.detach()), "intermediate": float(intermediate.detach())}
        for k, err in enumerate(refinement_errors(states, z_star)):
            components[f"rel_err_step_{k}"] = err
        return loss, components


def refinement_errors(states: Tensor, z_star: Tensor) -> list[float]:
    """Per-step relative L2 errors: ``states [B, S+1, N, D]``, ``z_star [B, N, D]`` -> S+1 floats.

    Entry ``k`` is the batch mean of ``‖z_k − z*‖ / ‖z*‖`` (entry 0: the initial guess).
    """
    states, target = states.detach().float(), z_star.detach().float()
    return [float(relative_l2(states[:, k], target)) for k in range(states.shape[1])]


# ------------------------------------------------------------------------------------------
# data preparation


def conditioning_tokens(fields: Tensor, latent_tokens: int) -> Tensor:
    """Cut conditioning fields into the latent token grid: a lossless, parameter-free encoder.

    Each token gets the raw values of its patch (all channels), so ``cond`` needs no trained
    network, no artifact and no hash, and nothing about the coefficient is lost (a binary
    Darcy coefficient has sharp interfaces that an average would blur).

    Args:
        fields: channels-last ``[B, X, C]`` (1D) or ``[B, X, Y, C]`` (2D), e.g. normalised
            ``log(nu)`` and a constant ``beta`` channel.  The token grid (``N`` in 1D,
            ``sqrt(N) x sqrt(N)`` in 2D) must divide the grid.
        latent_tokens: ``N``, as in the encoder's config.

    Returns:
        ``[B, N, C * prod(patch)]`` in the encoder's token order (row-major over the token
        grid, first axis slowest; within a token: patch row, patch column, channel).
        ``cond_dim`` of the prior is the last size.
    """
    spatial = fields.ndim - 2
    if spatial not in (1, 2):
        raise ValueError(
            "conditioning_tokens: fields must be [B, X, C] or [B, X, Y, C], "
            f"got {tuple(fields.shape)}"
        )
    side = round(latent_tokens ** (1.0 / spatial))
    if side < 1 or side**spatial != latent_tokens:
        raise ValueError(
            f"conditioning_tokens: latent_tokens={latent_tokens} is not a perfect power {spatial}"
        )
    grid = fields.shape[1:-1]
    if any(n % side for n in grid):
        raise ValueError(
            f"conditioning_tokens: the {side}-per-axis token grid does not divide the grid "
            f"{tuple(grid)}"
        )
    b, c = fields.shape[0], fields.shape[-1]
    if spatial == 1:
        return fields.reshape(b, side, grid[0] // side * c)
    px, py = grid[0] // side, grid[1] // side
    # [B, S, px, S, py, C] -> [B, S, S, px, py, C]: token axes first, patch contents last
    patches = fields.reshape(b, side, px, side, py, c).permute(0, 1, 3, 2, 4, 5)
    return patches.reshape(b, side * side, px * py * c)


class SteadyLatentDataset(Dataset):
    """Items ``{"z0", "cond", "z_star"}`` from precomputed latents (float32 tensors).

    Args:
        z_star: encoded steady states ``[M, N, D]``.
        cond: conditioning tokens ``[M, N, Cc]``.
        z0: initial guess, ``[N, D]`` (shared, e.g. the training mean of ``z_star``),
            ``[M, N, D]`` (per sample) or ``None`` (zeros).
    """

    def __init__(
        self,
        z_star: Tensor | np.ndarray,
        cond: Tensor | np.ndarray,
        z0: Tensor | np.ndarray | None = None,
    ) -> None:
        self.z_star = torch.as_tensor(z_star, dtype=torch.float32)
        self.cond = torch.as_tensor(cond, dtype=torch.float32)
        shapes_ok = self.z_star.ndim == 3 and self.cond.ndim == 3
        if not shapes_ok or self.cond.shape[:2] != self.z_star.shape[:2]:
            raise ValueError(
                f"SteadyLatentDataset: need z_star [M, N, D] and cond [M, N, Cc] with equal M, N; "
                f"got {tuple(self.z_star.shape)} and {tuple(self.cond.shape)}"
            )
        if z0 is None:
            z0_t = torch.zeros(self.z_star.shape[1:])
        else:
            z0_t = torch.as_tensor(z0, dtype=torch.float32)
        if z0_t.shape not in (self.z_star.shape, self.z_star.shape[1:]):
            raise ValueError(
                "SteadyLatentDataset: z0 must be [N, D] or [M, N, D] like z_star "
                f"{tuple(self.z_star.shape)}, got {tuple(z0_t.shape)}"
            )
        self.z0 = z0_t

    def __len__(self) -> int:
        return int(self.z_star.shape[0])

    def __getitem__(self, index: int) -> dict[str, Tensor]:
        z0 = self.z0 if self.z0.ndim == 2 else self.z0[index]
        return {"z0": z0, "cond": self.cond[index], "z_star": self.z_star[index]}


def mean_initial_guess(z_star_train: Tensor | np.ndarray) -> Tensor:
    """Training-split mean latent ``[N, D]`` from ``z_star_train [M, N, D]``: the ``z0`` to use.

    Compute it on the training split only and store it with the prior's artifact: at inference
    the same ``z0`` must be used.
    """
    z = torch.as_tensor(z_star_train, dtype=torch.float32)
    if z.ndim != 3 or z.shape[0] == 0:
        raise ValueError(f"mean_initial_guess: need [M, N, D] with M >= 1, got {tuple(z.shape)}")
    return z.mean(dim=0)


__all__ = [
    "BATCH_KEYS",
    "SteadyLatentDataset",
    "SteadyPriorTask",
    "conditioning_tokens",
    "mean_initial_guess",
    "refinement_errors",
]
