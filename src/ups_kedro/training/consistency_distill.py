"""Stage 3 (``consistency_distill``) task: consistency distillation of the Stage 2 model.

A :class:`~ups_kedro.training.task.StageTask` for ``fit`` on batches
``{"z": [B, N, D], "z_next": [B, N, D]}`` (optional ``"cond"`` / ``"index"``: where ``ẑ``
comes from, see :mod:`~ups_kedro.training.teacher_cache`, which also defines the residual's
units).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from ups_kedro.models.diffusion_residual import (
    SOLVERS,
    Denoiser,
    Solver,
    consistency_sample,
    sample_residual,
)
from ups_kedro.models.schedules import NoiseSchedule
from ups_kedro.training.losses import relative_l2
from ups_kedro.training.task import unwrap_model
from ups_kedro.training.teacher_cache import (
    Operator,
    OperatorPredictionCache,
    ResidualInputs,
    check_model,
    col,
    freeze,
)


class _MicroBatchedLoss(torch.autograd.Function):
    """Gradient accumulation over micro-batches hidden inside one loss tensor.

    ``forward`` runs the micro-batch losses one at a time *with* a graph, takes each one's
    parameter gradients at once (``torch.autograd.grad``, which frees that graph) and sums
    them; it returns the summed loss value.  ``backward`` hands the stored sums, times the
    incoming gradient (the loop's ``1/accum_steps``), to autograd.  So ``fit``'s
    ``(loss / group_len).backward()``, clipping and accumulation work unchanged, while peak
    activation memory is that of one micro-batch and no forward is recomputed.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any, runner: _ChunkRunner, *params: Tensor
    ) -> Tensor:
        total = torch.zeros((), dtype=torch.float32, device=runner.device)
        grads: list[Tensor | None] = [None] * len(runner.params)
        with torch.enable_grad():
            for loss in runner.losses():
                got = torch.autograd.grad(loss, runner.params, allow_unused=True)
                for i, g in enumerate(got):
                    if g is not None:
                        grads[i] = g if grads[i] is None else grads[i] + g
                total = total + loss.detach().float()
        ctx.grads = grads
        return total

    @staticmethod
    def backward(ctx: Any, grad_out: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        scaled = [None if g is None else g * grad_out.to(g.dtype) for g in ctx.grads]
        ctx.grads = None
        return (None, *scaled)


class _ChunkRunner:
    """Holds what ``_MicroBatchedLoss`` needs: the chunk-loss generator and the parameters."""

    def __init__(self, losses: Callable[[], Iterator[Tensor]], params: list[Tensor],
                 device: torch.device) -> None:
        self.losses = losses
        self.params = params
        self.device = device


class ConsistencyDistillTask:
    """Stage 3 (``consistency_distill``): consistency distillation (Song et al. 2023, CD).

    Train a ``parameterisation="consistency"`` :class:`DiffusionResidual` (the model given to
    :func:`fit`; build it with :func:`make_consistency_student`) to map any point of the
    teacher's probability-flow ODE trajectory to its end.  Per training call:

    1. ``ẑ`` and ``r`` once per batch (teacher caching, as in stage 2);
    2. tiling: each sample is repeated ``K`` times (``K`` = ``tau_schedule[epoch−1]``, the last
       entry repeating, or ``distill_num_taus``), so ``K`` τ values per sample run in one
       vectorised forward of ``[K·B, N, D]``;
    3. per row: a level index ``n ~ U{0, …, n_levels−2}`` on the Karras grid
       ``schedule.levels(n_levels)`` (σ_min … σ_max), ``x_{n+1} = r + σ_{n+1}·ε``, one teacher
       ODE step (Heun or Euler, ``no_grad``) to ``x̂_n``, and
       ``loss = mean ‖f_θ(x_{n+1}, σ_{n+1}) − f_θ⁻(x̂_n, σ_n)‖²`` with the target network
       ``f_θ⁻`` under ``no_grad`` (uniform λ, as in the paper's CD);
    4. micro-batching: with ``distill_micro_batch`` set, the tiled rows are processed in
       chunks of that many through :class:`_MicroBatchedLoss` (gradients accumulated inside
       the loss; the loop's backward just scales them), so memory does not grow with ``K``.

    Target network (EMA of the student, ``θ⁻ ← μ·θ⁻ + (1−μ)·θ``): :func:`fit` has no
    per-step hook, so the task does it itself at the start of every ``training_loss``: it
    keeps a private copy of the student, created from the student's weights on the first call,
    and folds in the student's current weights whenever they changed since the last call
    (detected via the parameters' in-place version counters, so with ``accum_steps > 1`` the
    update happens once per optimizer step, not per micro-batch).  ``target_ema = 0`` is
    iCT's recommended stop-gradient target.  This target is separate from ``fit``'s own EMA
    (``ema_decay``), which is the usual slowly averaged student used for validation.  It is
    not part of ``fit``'s saved state: after a resume it restarts from the student's weights
    (saved with the resumable training state through :meth:`extra_state` /
    :meth:`load_extra_state`, so a resumed run continues from the same target).

    Validation (``model`` is fit's EMA student): ``loss`` = ``teacher_gap``, the relative L2
    of the student's ``val_student_steps``-step sample vs the teacher's
    ``val_teacher_steps``-step sample from the same ``ε`` (distillation fidelity); components
    ``cd`` (the training loss at random levels), ``student_rel_err`` and ``teacher_rel_err``
    (each sample vs the true residual).

    Args:
        teacher: the frozen stage 2 model (or any :class:`Denoiser`); put in eval mode.
        schedule: must equal the student's schedule (σ_min is the boundary).
        operator: frozen stage 1 operator, unless every batch carries ``"cond"``.
        n_levels: discretisation ``N`` of σ (≥ 2).
        distill_num_taus: τ values per sample per step when there is no ``tau_schedule``.
        distill_micro_batch: rows per micro-batch of the tiled batch (``None``: one pass).
        teacher_solver: ``heun`` (2 teacher calls per row) or ``euler`` (1).
        tau_schedule: per-epoch ``distill_num_taus`` (epoch ``e`` uses entry ``e−1``; the last
            entry holds after the list ends), e.g. the original's ``[5, 4, 3]``.
        target_ema: μ in [0, 1).
        residual_scale: ``None``: the teacher config's (or 1.0 for a teacher without config).
        cache: per-index cache of ``ẑ`` when batches carry ``"index"``.
        val_teacher_steps, val_student_steps: sampler steps for validation.
    """

    def __init__(
        self,
        teacher: Denoiser,
        schedule: NoiseSchedule,
        *,
        operator: Operator | None = None,
        n_levels: int = 18,
        distill_num_taus: int = 1,
        distill_micro_batch: int | None = None,
        teacher_solver: Solver = "heun",
        tau_schedule: Sequence[int] | None = None,
        target_ema: float = 0.95,
        residual_scale: float | None = None,
        cache: bool = True,
        val_teacher_steps: int = 16,
        val_student_steps: int = 1,
    ) -> None:
        if n_levels < 2:
            raise ValueError(f"n_levels must be >= 2, got {n_levels}")
        if distill_num_taus < 1:
            raise ValueError(f"distill_num_taus must be >= 1, got {distill_num_taus}")
        if distill_micro_batch is not None and distill_micro_batch < 1:
            raise ValueError(f"distill_micro_batch must be >= 1 or None, got {distill_micro_batch}")
        if teacher_solver not in SOLVERS:
            raise ValueError(f"teacher_solver must be one of {SOLVERS}, got {teacher_solver!r}")
        if tau_schedule is not None and (not tau_schedule or any(int(k) < 1 for k in tau_schedule)):
            raise ValueError(
                f"tau_schedule must be a non-empty list of ints >= 1, got {tau_schedule}"
            )
        if not 0.0 <= target_ema < 1.0:
            raise ValueError(f"target_ema must be in [0, 1), got {target_ema}")
        if val_teacher_steps < 1 or val_student_steps < 1:
            raise ValueError("val_teacher_steps and val_student_steps must be >= 1")
        teacher_cfg = getattr(teacher, "config", None)
        if residual_scale is None:
            residual_scale = getattr(teacher_cfg, "residual_scale", 1.0)
        freeze(teacher)
        self.teacher = teacher
        self.schedule = schedule
        self.n_levels = n_levels
        self.distill_num_taus = distill_num_taus
        self.distill_micro_batch = distill_micro_batch
        self.teacher_solver = teacher_solver
        self.tau_schedule = [int(k) for k in tau_schedule] if tau_schedule is not None else None
        self.target_ema = float(target_ema)
        self.val_teacher_steps = val_teacher_steps
        self.val_student_steps = val_student_steps
        self._data = ResidualInputs(operator, float(residual_scale), cache)
        if teacher_cfg is not None and not math.isclose(
            getattr(teacher_cfg, "residual_scale", residual_scale), residual_scale, rel_tol=1e-6
        ):
            raise ValueError("ConsistencyDistillTask: residual_scale differs from the teacher's")
        self.target: nn.Module | None = None
        self._student_version: tuple[int, ...] | None = None
        self._checked = False

    @property
    def residual_scale(self) -> float:
        return self._data.residual_scale

    @property
    def train_cache(self) -> OperatorPredictionCache:
        return self._data.train_cache

    def taus_for_epoch(self, epoch: int) -> int:
        """τ values per sample in epoch ``epoch`` (1-based)."""
        if self.tau_schedule is None:
            return self.distill_num_taus
        return self.tau_schedule[min(max(epoch, 1), len(self.tau_schedule)) - 1]

    # ---------------------------------------------------------------- target network

    @torch.no_grad()
    def update_target(self, student: nn.Module) -> None:
        """``θ⁻ ← μ·θ⁻ + (1−μ)·θ`` (created as a copy of ``θ`` on the first call).

        Called by :meth:`training_loss`; a caller with a per-step hook may call it after each
        optimizer step instead (repeated calls without a weight change do nothing).
        """
        plain = unwrap_model(student)
        params = list(plain.parameters())
        version = tuple(p._version for p in params)  # bumped by every in-place update
        if self.target is None:
            self.target = copy.deepcopy(plain).eval()
            for p in self.target.parameters():
                p.requires_grad_(False)
        elif version != self._student_version:
            t_params = list(self.target.parameters())
            torch._foreach_lerp_(t_params, [p.detach() for p in params], 1.0 - self.target_ema)
            for tb, sb in zip(self.target.buffers(), plain.buffers(), strict=True):
                tb.copy_(sb)
        self._student_version = version

    def target_state(self) -> dict[str, Tensor] | None:
        """The target network's weights (for a resumable state), or ``None`` before training."""
        return None if self.target is None else self.target.state_dict()

    def load_target_state(self, student: nn.Module, state: dict[str, Tensor]) -> None:
        """Restore :meth:`target_state` (the student gives the architecture)."""
        self.target = None
        self.update_target(student)
        assert self.target is not None
        self.target.load_state_dict(state)

    def extra_state(self) -> dict[str, dict[str, Tensor]] | None:
        """What ``fit`` saves with its resumable state: the target network (``None`` before the
        first step)."""
        state = self.target_state()
        return None if state is None else {"target": state}

    def load_extra_state(self, student: nn.Module, state: dict[str, dict[str, Tensor]]) -> None:
        """Restore :meth:`extra_state` into a resumed run."""
        self.load_target_state(student, state["target"])
        # The saved target predates the epoch's last optimizer step; an uninterrupted run
        # averages that step in at its next call, so the resumed one must too.
        self._student_version = None

    # ---------------------------------------------------------------- loss

    @torch.no_grad()
    def teacher_step(self, x: Tensor, cond: Tensor, s_from: Tensor, s_to: Tensor) -> Tensor:
        """One PF-ODE step of the teacher from ``s_from`` to ``s_to`` (``[R]``, both > 0).

        ``x``, ``cond``: ``[R, N, D]`` → ``[R, N, D]`` float32.
        """
        h = col(s_to - s_from)
        d = (x - self.teacher.denoise(x, cond, s_from).float()) / col(s_from)
        x_euler = x + h * d
        if self.teacher_solver == "euler":
            return x_euler
        d_next = (x_euler - self.teacher.denoise(x_euler, cond, s_to).float()) / col(s_to)
        return x + h * 0.5 * (d + d_next)

    def _pair_loss(
        self, student: nn.Module, target_net: nn.Module, r: Tensor, cond: Tensor, idx: Tensor,
        eps: Tensor, levels: Tensor,
    ) -> Tensor:
        """Mean CD distance over rows: ``r``, ``cond``, ``eps`` ``[R, N, D]``, ``idx`` ``[R]``."""
        s_lo, s_hi = levels[idx], levels[idx + 1]
        x_hi = r + col(s_hi) * eps
        with torch.no_grad():
            x_lo = self.teacher_step(x_hi, cond, s_hi, s_lo)
            target = target_net(x_lo, cond, s_lo)[0].float()
        pred = student(x_hi, cond, s_hi)[0].float()
        return (pred - target).pow(2).mean()

    def _prepare(self, model: nn.Module, r: Tensor) -> None:
        if not self._checked:
            check_model(model, self.schedule, self.residual_scale, "consistency",
                         "ConsistencyDistillTask")
            self._checked = True
        if isinstance(self.teacher, nn.Module):
            self.teacher.to(r.device)

    def training_loss(
        self, model: nn.Module, batch: dict[str, Tensor], epoch: int
    ) -> tuple[Tensor, dict[str, float]]:
        """CD loss on ``K`` tiled τ values per sample (see class docstring)."""
        cond, r = self._data.inputs(batch, train=True)
        self._prepare(model, r)
        self.update_target(model)
        target_net = self.target
        assert target_net is not None
        target_net.to(r.device)
        k = self.taus_for_epoch(epoch)
        r_t, cond_t = r.repeat(k, 1, 1), cond.repeat(k, 1, 1)  # [K·B, N, D], ẑ reused K times
        rows = r_t.shape[0]
        levels = self.schedule.levels(self.n_levels, device=r.device)
        idx = torch.randint(0, self.n_levels - 1, (rows,), device=r.device)
        eps = torch.randn_like(r_t)
        chunk = self.distill_micro_batch
        parts = {"num_taus": float(k)}
        if chunk is None or chunk >= rows:
            loss = self._pair_loss(model, target_net, r_t, cond_t, idx, eps, levels)
            parts["cd"] = float(loss.detach())
            return loss, parts

        def losses() -> Iterator[Tensor]:
            for start in range(0, rows, chunk):
                sl = slice(start, min(start + chunk, rows))
                weight = (sl.stop - sl.start) / rows  # chunk means → the mean over all rows
                yield weight * self._pair_loss(
                    model, target_net, r_t[sl], cond_t[sl], idx[sl], eps[sl], levels
                )

        params = [p for p in unwrap_model(model).parameters() if p.requires_grad]
        loss = _MicroBatchedLoss.apply(_ChunkRunner(losses, params, r.device), *params)
        parts["cd"] = float(loss.detach())
        return loss, parts

    def validation_loss(
        self, model: nn.Module, batch: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, float]]:
        """``teacher_gap`` (loss) plus ``cd``, ``student_rel_err``, ``teacher_rel_err``."""
        cond, r = self._data.inputs(batch, train=False)
        self._prepare(model, r)
        # Before any training call there is no target yet: θ⁻ = θ (the model itself).
        target_net = self.target.to(r.device) if self.target is not None else model
        levels = self.schedule.levels(self.n_levels, device=r.device)
        idx = torch.randint(0, self.n_levels - 1, (r.shape[0],), device=r.device)
        cd = self._pair_loss(model, target_net, r, cond, idx, torch.randn_like(r), levels)
        eps = torch.randn_like(r)
        teacher_r, _ = sample_residual(
            self.teacher, cond, self.val_teacher_steps, self.schedule,
            solver=self.teacher_solver, noise=eps,
        )
        student_r, _ = consistency_sample(
            model, cond, self.val_student_steps, self.schedule, noise=eps
        )
        gap = relative_l2(student_r, teacher_r)
        parts = {
            "teacher_gap": float(gap),
            "cd": float(cd),
            "student_rel_err": float(relative_l2(student_r, r)),
            "teacher_rel_err": float(relative_l2(teacher_r, r)),
        }
        return gap, parts
