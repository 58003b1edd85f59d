"""What a stage hands to :func:`~ups_kedro.training.launcher.fit` and what it gets back.

The shared vocabulary of the training package (no Kedro, no MLflow, no process handling):
the :class:`StageTask` protocol a stage implements, the :class:`FitResult` it receives, the
:class:`NonFiniteLossError` a run fails with, and :func:`unwrap_model`, which every module
that reads weights uses to see through ``torch.compile`` and DDP wrappers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from torch import Tensor, nn

StopReason = Literal["completed", "patience", "target_loss"]
EpochCallback = Callable[[int, dict[str, float]], None]


class StageTask(Protocol):
    """What a stage supplies to ``fit``."""

    def training_loss(
        self, model: nn.Module, batch: dict[str, Tensor], epoch: int
    ) -> tuple[Tensor, dict[str, float]]:
        """Scalar loss (with graph) and named float components for logging; ``epoch`` ≥ 1."""
        ...

    def validation_loss(
        self, model: nn.Module, batch: dict[str, Tensor]
    ) -> tuple[Tensor, dict[str, float]]:
        """Scalar loss and components; called under ``torch.no_grad`` with ``model.eval()``."""
        ...


def task_state(task: object) -> dict[str, Any] | None:
    """The task's own state across epochs, if it keeps any (optional ``extra_state()``; e.g.
    Stage 3's EMA target network), saved with the resumable training state."""
    get = getattr(task, "extra_state", None)
    return get() if callable(get) else None


def restore_task_state(task: object, model: nn.Module, state: dict[str, Any] | None) -> None:
    """Give a resumed task back its :func:`task_state` (``load_extra_state(model, state)``)."""
    load = getattr(task, "load_extra_state", None)
    if state is not None and callable(load):
        load(model, state)


class NonFiniteLossError(RuntimeError):
    """A loss or gradient norm became NaN/inf; no state was written for that epoch."""

    def __init__(
        self, stage: str, epoch: int, step: int, what: str, value: float, detail: str = ""
    ) -> None:
        self.stage, self.epoch, self.step, self.what, self.value = stage, epoch, step, what, value
        super().__init__(
            f"stage {stage!r}: non-finite {what} ({value}) at epoch {epoch}, step {step}"
            f"{detail}; the state of the last completed epoch is kept"
        )


@dataclass
class FitResult:
    """Outcome of ``fit``.

    ``model_state`` / ``ema_state`` are CPU state dicts of the *best* epoch (the unwrapped
    module's keys, never ``_orig_mod.``); ``ema_state`` is ``None`` without EMA.
    ``best_val_loss`` is the selection loss (validation, or training without validation data).
    ``resumed_from`` is the number of epochs loaded from a saved state (0: fresh run).
    """

    model_state: dict[str, Tensor]
    ema_state: dict[str, Tensor] | None
    best_epoch: int
    best_val_loss: float
    history: list[dict[str, float]]
    stopped_reason: StopReason
    epochs_run: int
    fingerprint: str = ""
    resumed_from: int = 0


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under ``torch.compile`` (``_orig_mod``) and DDP (``module``) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def set_tags(callback: Any, tags: Mapping[str, Any], *, main_process: bool) -> None:
    """Hand run-level facts to a callback that takes them (``callback.set_tags(mapping)``).

    Only the main process reports (``main_process``); ``None`` values are left out and the
    rest are passed as strings.
    """
    setter = getattr(callback, "set_tags", None)
    if callable(setter) and main_process:
        setter({k: str(v) for k, v in tags.items() if v is not None})
