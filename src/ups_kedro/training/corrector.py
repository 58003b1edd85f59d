"""Training a rollout corrector through its own rollout (Stage 2 default, Stage 3 distillation).

A corrector trained on one-step targets ``z_next − Op(z)`` makes rollouts worse: its small
one-step errors are fed back and compound, and it never sees the states its own rollout
visits.  :class:`UnrolledCorrectorTask` instead rolls the frozen operator and the corrector out
``horizon`` steps from a true latent, with gradients through every step (the operator's
weights stay frozen, but the gradient flows through it to the earlier corrections), and scores
every step against the true latents.

The per-step error is relative per sample, ``|ẑ − z|² / (|z|² + floor²)`` (means over tokens
and channels): the evaluation score is a per-frame nRMSE, so a decayed low-amplitude frame
weighs as much as an energetic one; ``relative_floor`` (latent RMS units) bounds the weight
of near-zero states.

Distillation (Stage 3) adds ``lambda_teacher`` × the same relative error between the student's
correction and the frozen teacher's correction *of the student's own state* (the teacher is
queried along the student's trajectory, so the student learns what the teacher would do where
the student actually goes).
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable

import torch
from torch import Tensor, nn

from ups_kedro.models.corrector import RolloutCorrector

Operator = Callable[[Tensor], Tensor]


def relative_error(pred: Tensor, target: Tensor, floor: float) -> Tensor:
    """Per-sample ``mean((pred − target)²) / (mean(target²) + floor²)`` → ``[B]``."""
    dims = tuple(range(1, pred.ndim))
    num = (pred - target).pow(2).mean(dim=dims)
    return num / (target.pow(2).mean(dim=dims) + floor * floor)


def _unwrap(model: nn.Module) -> RolloutCorrector:
    inner = getattr(model, "module", model)  # DDP
    inner = getattr(inner, "_orig_mod", inner)  # torch.compile
    if not isinstance(inner, RolloutCorrector):
        raise TypeError(f"UnrolledCorrectorTask trains a RolloutCorrector, got "
                        f"{type(inner).__name__}")
    return inner


class UnrolledCorrectorTask:
    """Loss of ``horizon`` unrolled steps of frozen operator + corrector (see module docstring).

    Batches come from :class:`~ups_kedro.data.torch_data.LatentPairDataset`:
    ``{"z": [B, N, D], "z_next": [B, H, N, D]}`` with ``H`` ≥ ``horizon``.
    """

    def __init__(self, operator: Operator, horizon: int, relative_floor: float = 0.01,
                 teacher: RolloutCorrector | None = None, lambda_teacher: float = 0.0) -> None:
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if lambda_teacher > 0 and teacher is None:
            raise ValueError("lambda_teacher > 0 needs a teacher")
        self.operator, self.horizon, self.floor = operator, horizon, relative_floor
        self.teacher, self.lambda_teacher = teacher, lambda_teacher

    def _rollout_loss(self, model: nn.Module, batch: dict[str, Tensor]
                      ) -> tuple[Tensor, dict[str, float]]:
        corrector = _unwrap(model)
        z, targets = batch["z"], batch["z_next"]
        if targets.shape[1] < self.horizon:
            raise ValueError(f"batch holds {targets.shape[1]} future steps, the task unrolls "
                             f"{self.horizon}: build the dataset with horizon >= {self.horizon}")
        truth_sum = torch.zeros((), device=z.device)
        teacher_sum = torch.zeros((), device=z.device)
        for h in range(self.horizon):
            u = self.operator(z)
            z_new = corrector.correct(z, u)
            truth_sum = truth_sum + relative_error(z_new, targets[:, h], self.floor).mean()
            if self.lambda_teacher > 0:
                with torch.no_grad():
                    target = self.teacher.correct(z.detach(), u.detach())
                teacher_sum = teacher_sum + relative_error(z_new, target, self.floor).mean()
            z = z_new
        truth = truth_sum / self.horizon
        parts = {"rollout": float(truth.detach())}
        loss = truth
        if self.lambda_teacher > 0:
            teacher_loss = teacher_sum / self.horizon
            parts["teacher"] = float(teacher_loss.detach())
            loss = loss + self.lambda_teacher * teacher_loss
        return loss, parts

    def training_loss(self, model: nn.Module, batch: dict[str, Tensor], epoch: int
                      ) -> tuple[Tensor, dict[str, float]]:
        """Unrolled loss with gradients through every step; ``epoch`` is unused."""
        return self._rollout_loss(model, batch)

    def validation_loss(self, model: nn.Module, batch: dict[str, Tensor]
                        ) -> tuple[Tensor, dict[str, float]]:
        """The same unrolled loss (no gradients): best-epoch selection on the rollout."""
        return self._rollout_loss(model, batch)


def make_student(teacher: RolloutCorrector) -> RolloutCorrector:
    """A one-evaluation (deterministic) student initialised from ``teacher``'s weights.

    A deterministic teacher is copied as is; a refiner's weights are copied with its last
    (least noisy) refinement step's embedding as the student's single step, the closest of its
    steps to a one-shot correction.  The teacher is never modified.
    """
    if teacher.config.kind == "deterministic":
        student = copy.deepcopy(teacher).train()
        return student.requires_grad_(True)  # a frozen teacher's copy would not train
    student = RolloutCorrector(dataclasses.replace(teacher.config, kind="deterministic",
                                                   refine_steps=1, num_samples=1))
    state = {k: v.clone() for k, v in teacher.state_dict().items()}
    embed = state["step_embed.weight"]
    state["step_embed.weight"] = torch.stack([embed[-1], embed[-1]])
    student.load_state_dict(state)
    return student.to(next(teacher.parameters()).device)
