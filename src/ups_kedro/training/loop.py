"""The training loop every stage shares, in one process: :func:`train`.

Stages call :func:`ups_kedro.training.launcher.fit`, which decides how the run is launched
(in this process, in spawned worker processes or under ``torchrun``) and then runs
:func:`train` in each process; this module knows nothing of launching.

A stage supplies a :class:`~.task.StageTask` (how to compute its loss on a batch); the loop owns
the rest: seeding, batching, gradient accumulation, clipping, bf16 autocast, optional
``torch.compile``, EMA, a validation pass every epoch, best-model selection on the validation
loss, early stopping, the learning-rate schedule, progress display, per-epoch metrics
(through a callback, so this module knows nothing of MLflow) and exact resume from the full
training state written at the end of every epoch (:mod:`~.resume`).

Epochs are numbered from 1: epoch ``e`` is the ``e``-th pass over the training data.  The
same number is passed to ``StageTask.training_loss``, to ``on_epoch_end`` (use it as the
tracking step) and stored in ``history[i]["epoch"]``.

Per-epoch metrics (keys of the dict given to ``on_epoch_end``):

* ``loss``: sample-weighted mean training loss of the epoch (raw model, in train mode);
* ``loss_<name>``: the same mean of each component returned by ``training_loss``;
* ``val_loss``, ``val_<name>``: mean validation loss and components (EMA model when EMA is
  on), only when there is validation data;
* ``lr``: learning rate used during the epoch (first parameter group);
* ``grad_norm`` / ``grad_norm_max``: mean / max global L2 gradient norm *before* clipping over
  the epoch's optimizer steps;
* ``epochs_since_improve``: epochs since the selection loss last improved (0: this epoch);
* ``epoch_time_sec``: wall time of the epoch (training + validation);
* ``samples_per_sec``: training samples per second of training time;
* ``grad_vanishing`` / ``grad_exploding``: 1.0 when the epoch's gradients were flagged
  (:mod:`ups_kedro.training.health`), else 0.0;
* ``val_metric``: the task's optional selection metric (``task.validation_metric``).

A diverged run (:class:`~.health.DivergenceError`) fails before it returns, so that it never
publishes.  Data-parallel: inside a group (:mod:`~.distributed`) the loop trains this rank's
share (:mod:`~.epoch`), combines the epoch sums over ranks and lets only rank 0 write state
and call back; every rank returns the same result.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, Dataset

from ups_kedro.training import distributed, health
from ups_kedro.training.checkpoint import (
    TrainState,
    capture_rng_state,
    clone_state_dict,
    restore_rng_state,
)
from ups_kedro.training.config import DivergenceConfig, TrainConfig
from ups_kedro.training.ema import create_ema
from ups_kedro.training.epoch import (
    LOADER_SEED_OFFSET,
    RANK_SEED_OFFSET,
    EpochModels,
    Sums,
    epoch_metrics,
    isolated_rng,
    make_loader,
    reduce_sums,
    seed_everything,
    train_epoch,
    validate,
    validation_metric,
)
from ups_kedro.training.optim import EpochScheduler, build_optimizer, build_scheduler, current_lr
from ups_kedro.training.resume import (
    LAST_STATE,
    TrainingProgress,
    apply_state,
    fit_fingerprint,
    load_resumable,
    write_state,
)
from ups_kedro.training.task import (
    EpochCallback,
    FitResult,
    StageTask,
    StopReason,
    restore_task_state,
    set_tags,
    task_state,
    unwrap_model,
)

logger = logging.getLogger(__name__)


def train(
    model: nn.Module,
    task: StageTask,
    train_data: Dataset,
    val_data: Dataset | None,
    cfg: TrainConfig,
    *,
    stage: str,
    state_dir: Path | None = None,
    fingerprint: str = "",
    on_epoch_end: EpochCallback | None = None,
    collate_fn: Callable[[list[Any]], Any] | None = None,
) -> FitResult:
    """Train ``model`` on ``task`` in this process and return the best weights.

    Arguments as :func:`ups_kedro.training.launcher.fit` (``cfg`` already validated).  Inside
    a process group this is one rank's part of the run.
    """
    ctx = distributed.context()
    model = unwrap_model(model)
    device = ctx.device if ctx is not None else torch.device(cfg.device)
    model.to(device)
    world = ctx.world_size if ctx is not None else 1
    run_fp = fit_fingerprint(cfg, stage, fingerprint, model, world)
    if cfg.epochs == 0:  # a switched-off stage: nothing to train
        return FitResult(
            model_state=clone_state_dict(model.state_dict()), ema_state=None, best_epoch=0,
            best_val_loss=math.inf, history=[], stopped_reason="completed", epochs_run=0,
            fingerprint=run_fp,
        )
    run = _Run.setup(
        model, task, train_data, val_data, cfg, stage=stage, device=device, run_fp=run_fp,
        state_dir=Path(state_dir) if state_dir is not None else None,
        on_epoch_end=on_epoch_end, collate_fn=collate_fn,
    )
    resumed_from = run.resume_or_measure_baseline()
    stopped = run.run_epochs()
    return run.best_result(stopped, resumed_from)


@dataclass
class _Run:
    """Everything one training run holds between :meth:`setup` and :meth:`best_result`."""

    cfg: TrainConfig
    stage: str
    task: StageTask
    device: torch.device
    run_fp: str
    models: EpochModels
    optimizer: torch.optim.Optimizer
    scheduler: EpochScheduler
    train_loader: DataLoader
    val_loader: DataLoader | None
    loader_generator: torch.Generator
    state_dir: Path | None
    on_epoch_end: EpochCallback | None
    progress: TrainingProgress

    # ---------------------------------------------------------------- setup

    @classmethod
    def setup(
        cls, model: nn.Module, task: StageTask, train_data: Dataset, val_data: Dataset | None,
        cfg: TrainConfig, *, stage: str, device: torch.device, run_fp: str,
        state_dir: Path | None, on_epoch_end: EpochCallback | None,
        collate_fn: Callable[[list[Any]], Any] | None,
    ) -> _Run:
        """Seed, build loaders, optimizer, scheduler, EMA and the compiled forwards."""
        ctx = distributed.context()
        seed_everything(cfg.seed)
        if ctx is not None and ctx.world_size > 1:
            distributed.broadcast_module(model)
            if ctx.rank > 0:
                seed_everything(cfg.seed + ctx.rank * RANK_SEED_OFFSET)
        loader_generator = torch.Generator()
        loader_generator.manual_seed(cfg.seed + LOADER_SEED_OFFSET)
        train_loader = make_loader(
            train_data, cfg.batch_size, shuffle=True, generator=loader_generator,
            collate_fn=collate_fn, num_workers=cfg.num_workers,
        )
        val_loader = None
        if val_data is not None:
            val_loader = make_loader(
                val_data, cfg.eval_batch_size or cfg.batch_size, shuffle=False, generator=None,
                collate_fn=collate_fn, num_workers=cfg.num_workers,
            )
        optimizer = build_optimizer(
            [p for p in model.parameters() if p.requires_grad], cfg.optimizer
        )
        scheduler = build_scheduler(optimizer, cfg.scheduler, cfg.epochs)
        ema = (create_ema(model, cfg.ema_decay, cfg.ema_warmup)
               if cfg.ema_decay is not None else None)
        return cls(
            cfg=cfg, stage=stage, task=task, device=device, run_fp=run_fp,
            models=_compiled(model, ema, cfg), optimizer=optimizer, scheduler=scheduler,
            train_loader=train_loader, val_loader=val_loader, loader_generator=loader_generator,
            state_dir=state_dir, on_epoch_end=on_epoch_end, progress=TrainingProgress(),
        )

    # ---------------------------------------------------------------- resume

    def resume_or_measure_baseline(self) -> int:
        """Continue from ``last.pt`` when it matches, else measure the untrained network.

        Returns the number of epochs resumed (0: a fresh run).
        """
        resumed = None
        world = self._world()
        if self.state_dir is not None and distributed.is_main_process():
            resumed = load_resumable(self.state_dir / LAST_STATE, self.run_fp, self.stage)
        if self.state_dir is not None and world > 1:
            resumed = distributed.broadcast_object(resumed)
        if resumed is not None:
            self._restore(resumed)
        elif self.val_loader is not None and self.cfg.divergence != DivergenceConfig(None, None):
            # The untrained network's selection value: the baseline a run must beat to publish.
            self.progress.initial_val = self._baseline()
        resumed_from = self.progress.epoch
        set_tags(self.on_epoch_end,
                 {"resumed_from": resumed_from, "initial_val_loss": self.progress.initial_val},
                 main_process=distributed.is_main_process())
        return resumed_from

    def _restore(self, state: TrainState) -> None:
        """Load ``state``, replay its history to the callback, then restore the RNG streams."""
        progress, cfg = self.progress, self.cfg
        apply_state(state, self.models.model, self.optimizer, self.scheduler, self.models.ema,
                    progress)
        restore_task_state(self.task, unwrap_model(self.models.model), state.task_state)
        logger.info("stage %r: resuming after epoch %d of %d", self.stage, progress.epoch,
                    cfg.epochs)
        if self.on_epoch_end is not None and distributed.is_main_process():
            for entry in progress.history:  # a fresh tracking run still gets whole curves
                with isolated_rng(None, self.device):
                    metrics = {k: v for k, v in entry.items() if k != "epoch"}
                    self.on_epoch_end(int(entry["epoch"]), metrics)
        # Last, so nothing above can consume random numbers after the restore.
        ctx = distributed.context()
        rank = ctx.rank if ctx is not None else 0
        if rank > 0 and state.rank_rngs is not None and len(state.rank_rngs) >= rank:
            restore_rng_state(state.rank_rngs[rank - 1], self.loader_generator)
        else:
            restore_rng_state(state.rng, self.loader_generator)

    def _baseline(self) -> float:
        """The task's validation metric, else the validation loss, of the untrained network."""
        value = validation_metric(self.task, self.models.eval_model, self.cfg, self.device)
        if value is None:
            assert self.val_loader is not None
            value = reduce_sums(validate(
                self.models.eval_model, self.task, self.val_loader, self.cfg, stage=self.stage,
                epoch=0, step=0, device=self.device)).mean()
        return value

    # ---------------------------------------------------------------- epochs

    def run_epochs(self) -> StopReason:
        """Train the remaining epochs: each is trained, validated, selected, saved, reported."""
        for epoch in range(self.progress.epoch + 1, self.cfg.epochs + 1):
            metrics, selection = self._epoch(epoch)
            stopped = self._stop_reason(epoch, selection)
            self._save(stopped, metrics)
            if self.on_epoch_end is not None and distributed.is_main_process():
                with isolated_rng(None, self.device):
                    self.on_epoch_end(epoch, dict(metrics))
            if stopped is not None:
                return stopped
        return "completed"

    def _epoch(self, epoch: int) -> tuple[dict[str, float], float]:
        """One epoch; returns its metrics and its selection value (lower is better)."""
        started = time.perf_counter()
        lr = current_lr(self.optimizer)
        train_sums, grad_norms = train_epoch(
            self.models, self.task, self.train_loader, self.optimizer, self.cfg,
            stage=self.stage, epoch=epoch, progress=self.progress, device=self.device,
        )
        train_time = time.perf_counter() - started
        train_sums = reduce_sums(train_sums)
        val_sums, val_metric = self._validate(epoch)
        selection = self._select(epoch, train_sums, val_sums, val_metric)
        metrics = epoch_metrics(
            train_sums, val_sums, lr=lr, grad_norms=grad_norms,
            epochs_since_improve=self.progress.epochs_since_improve,
            epoch_time=time.perf_counter() - started, train_time=train_time,
        )
        metrics.update(
            health.grad_health(self.stage, epoch, metrics, self.progress.history, self.cfg)
        )
        if val_metric is not None:
            metrics["val_metric"] = val_metric
        self.progress.history.append({"epoch": epoch, **metrics})
        self.progress.epoch = epoch
        return metrics, selection

    def _validate(self, epoch: int) -> tuple[Sums | None, float | None]:
        """Validation loss sums (over all ranks) and the task's metric; ``None`` without data."""
        if self.val_loader is None:
            return None, None
        val_sums = reduce_sums(validate(
            self.models.eval_model, self.task, self.val_loader, self.cfg, stage=self.stage,
            epoch=epoch, step=self.progress.global_step, device=self.device,
        ))
        return val_sums, validation_metric(self.task, self.models.eval_model, self.cfg,
                                           self.device)

    def _select(
        self, epoch: int, train_sums: Sums, val_sums: Sums | None, val_metric: float | None
    ) -> float:
        """Check for divergence, keep the best epoch's weights, step the schedule.

        The selection value is the task's validation metric, else the validation loss, else
        (no validation data) the training loss.
        """
        progress, cfg = self.progress, self.cfg
        selection = val_sums.mean() if val_sums is not None else train_sums.mean()
        if val_metric is not None:
            selection = val_metric
        if val_metric is not None and not math.isfinite(val_metric):
            # A rollout metric that blew up is a bad epoch; only a non-finite loss fails here.
            assert val_sums is not None
            health.check_divergence(self.stage, epoch, val_sums.mean(), math.inf, 0, None, cfg)
        else:
            health.check_divergence(
                self.stage, epoch, selection, progress.best_val, progress.best_epoch,
                progress.initial_val, cfg,
                what=("training loss" if val_sums is None else
                      "validation metric" if val_metric is not None else "validation loss"))
        if selection < progress.best_val:
            ema = self.models.ema
            progress.best_val = selection
            progress.best_epoch = epoch
            progress.best_model = clone_state_dict(self.models.model.state_dict())
            progress.best_ema = (
                clone_state_dict(ema.module.state_dict()) if ema is not None else None
            )
            progress.epochs_since_improve = 0
        else:
            progress.epochs_since_improve += 1
        self.scheduler.step(selection)
        return selection

    def _stop_reason(self, epoch: int, selection: float) -> StopReason | None:
        """Why the run ends after ``epoch``, or ``None`` to go on."""
        cfg = self.cfg
        if cfg.target_loss is not None and selection <= cfg.target_loss:
            return "target_loss"
        if cfg.patience is not None and self.progress.epochs_since_improve >= cfg.patience:
            return "patience"
        if epoch == cfg.epochs:
            return "completed"
        return None

    def _save(self, stopped: StopReason | None, metrics: dict[str, float]) -> None:
        """Write the resumable state (rank 0; every rank's RNG state gathered first)."""
        if self.state_dir is None:
            return
        rank_rngs = None
        if self._world() > 1:  # a collective: every rank takes part
            rank_rngs = distributed.gather_objects(capture_rng_state(self.loader_generator))[1:]
        if distributed.is_main_process():
            write_state(
                self.state_dir, cfg=self.cfg, stage=self.stage, run_fp=self.run_fp,
                model=self.models.model, optimizer=self.optimizer, scheduler=self.scheduler,
                ema=self.models.ema, progress=self.progress,
                loader_generator=self.loader_generator, stopped=stopped, metrics=metrics,
                rank_rngs=rank_rngs, task_state=task_state(self.task),
            )

    # ---------------------------------------------------------------- result

    def best_result(self, stopped: StopReason, resumed_from: int) -> FitResult:
        """Fail a diverged run, else the best epoch's weights (also left in the model)."""
        progress = self.progress
        health.check_final(self.stage, progress.best_val, progress.best_epoch,
                           progress.initial_val, self.cfg)
        # Leave the caller's model holding the selected weights, like the returned state.
        self.models.model.load_state_dict(progress.best_model)
        return FitResult(
            model_state=progress.best_model,
            ema_state=progress.best_ema,
            best_epoch=progress.best_epoch,
            best_val_loss=progress.best_val,
            history=[dict(h) for h in progress.history],
            stopped_reason=stopped,
            epochs_run=progress.epoch,
            fingerprint=self.run_fp,
            resumed_from=resumed_from,
        )

    def _world(self) -> int:
        ctx = distributed.context()
        return ctx.world_size if ctx is not None else 1


def _compiled(model: nn.Module, ema: AveragedModel | None, cfg: TrainConfig) -> EpochModels:
    """The training forward and the evaluation model, compiled with ``cfg.compile``.

    State is always read from the plain modules, so no ``_orig_mod.`` prefix ever reaches a
    checkpoint.
    """
    forward_model: nn.Module = torch.compile(model) if cfg.compile else model
    eval_plain = ema.module if ema is not None else model
    eval_model: nn.Module
    if not cfg.compile:
        eval_model = eval_plain
    elif ema is None:
        eval_model = forward_model
    else:
        eval_model = torch.compile(eval_plain)
    return EpochModels(model=model, forward_model=forward_model, eval_model=eval_model, ema=ema)
