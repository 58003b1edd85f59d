"""The training loop every stage shares: :func:`fit`.

A stage supplies a :class:`StageTask` (how to compute its loss on a batch); ``fit`` owns the
rest: seeding, batching, gradient accumulation, clipping, bf16 autocast, optional
``torch.compile``, EMA, a validation pass every epoch, best-model selection on the validation
loss, early stopping, the learning-rate schedule, progress display, per-epoch metrics
(through a callback, so this module knows nothing of MLflow) and exact resume from the full
training state written at the end of every epoch.

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
  (:mod:`ups_kedro.training.health`), else 0.0.

Around the training, :func:`fit` holds the stage's state lock (:mod:`~.lock`), sets the torch
thread count (:mod:`~.threads`) and fails a diverged run (:class:`~.health.DivergenceError`)
so that it never publishes.  A callback may also offer ``set_tags(mapping)`` (run-level facts:
``seed``, ``num_threads``, ``resumed_from``, ``initial_val_loss``) and a ``run_id`` attribute
(recorded in the lock file).

Data-parallel training (``cfg.distributed.nproc_per_node`` > 1, or a ``torchrun`` launch) is
in :mod:`ups_kedro.training.distributed`; here it shows at :func:`_make_loader` (each rank's
share of the same global batches), in :func:`_train_epoch` (loss weighted by the rank's
share, gradients summed before clipping), at :func:`_reduce_sums` (epoch sums combined over
ranks) and at :func:`_is_main_process` (only rank 0 writes state and calls back).  With the
default of one process none of it runs and training is unchanged.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import logging
import math
import os
import random
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
import torch
from torch import Tensor, nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ups_kedro.training import distributed, health
from ups_kedro.training.checkpoint import (
    TrainState,
    atomic_torch_save,
    capture_rng_state,
    clone_state_dict,
    load_train_state,
    restore_rng_state,
    run_fingerprint,
    save_train_state,
)
from ups_kedro.config import to_dict
from ups_kedro.training.config import DivergenceConfig, TrainConfig
from ups_kedro.training.ema import create_ema, ema_state, load_ema_state
from ups_kedro.training.lock import StageLock
from ups_kedro.training.threads import torch_threads
from ups_kedro.training.optim import EpochScheduler, build_optimizer, build_scheduler, current_lr

logger = logging.getLogger(__name__)

StopReason = Literal["completed", "patience", "target_loss"]
EpochCallback = Callable[[int, dict[str, float]], None]

# Independent, fixed streams derived from cfg.seed: shuffling must not shift when a task draws
# one more random number, and validation noise (e.g. diffusion τ) should be the same every
# epoch so that validation losses are comparable across epochs.
_LOADER_SEED_OFFSET = 1_000_003
_VALIDATION_SEED_OFFSET = 2_000_029
# Ranks > 0 of a data-parallel run draw the task's random numbers (noise, τ, …) from their own
# stream, so different samples never share noise; rank 0's stream is the single-process one.
_RANK_SEED_OFFSET = 7_919

LAST_STATE = "last.pt"


class StageTask(Protocol):
    """What a stage supplies to :func:`fit`."""

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
    """Outcome of :func:`fit`.

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


# --------------------------------------------------------------------------------------------
# small helpers (the DDP plug-in points are here)


def _is_main_process() -> bool:
    """Only the main process writes state and calls back (rank 0 under DDP)."""
    return distributed.is_main_process()


def _make_loader(
    dataset: Dataset,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None,
    collate_fn: Callable[[list[Any]], Any] | None,
    num_workers: int,
) -> DataLoader:
    """A DataLoader whose shuffling reads only ``generator`` (saved with the state).

    Data-parallel: the same global batches as one process, this rank taking its share
    (:class:`~ups_kedro.training.distributed.ShardedBatchSampler`); an empty share is ``None``.
    """
    ctx = distributed.context()
    if ctx is not None and ctx.world_size > 1:
        sampler = distributed.ShardedBatchSampler(
            len(dataset),  # type: ignore[arg-type]
            batch_size,
            rank=ctx.rank,
            world_size=ctx.world_size,
            shuffle=shuffle,
            generator=generator,
        )
        return DataLoader(
            dataset,
            batch_sampler=sampler,
            generator=generator,  # DataLoader draws its base seed from it, as below
            collate_fn=distributed.ShardCollate(collate_fn),
            num_workers=num_workers,
        )
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        generator=generator,
        collate_fn=collate_fn,
        num_workers=num_workers,
        drop_last=False,
    )


def _reduce_sums(sums: _Sums) -> _Sums:
    """Combine per-process epoch sums, in rank order (so every rank gets the same numbers)."""
    ctx = distributed.context()
    if ctx is None or ctx.world_size == 1:
        return sums
    combined = _Sums()
    for part in distributed.gather_objects(sums):
        combined.total += part.total
        combined.count += part.count
        for name, value in part.parts.items():
            combined.parts[name] = combined.parts.get(name, 0.0) + value
    return combined


def _seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # also seeds every CUDA device
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextlib.contextmanager
def _isolated_rng(seed: int | None, device: torch.device) -> Iterator[None]:
    """Run a block with its own RNG stream, restoring every global RNG afterwards.

    Used for validation (seeded: the same noise every epoch) and callbacks (unseeded) so that
    neither can shift the training stream; this is what makes an interrupted-and-resumed run
    equal an uninterrupted one even if a callback draws random numbers.
    """
    cuda_devices = []
    if device.type == "cuda":
        cuda_devices = [device.index if device.index is not None else torch.cuda.current_device()]
    np_state = np.random.get_state()
    py_state = random.getstate()
    with torch.random.fork_rng(devices=cuda_devices):
        if seed is not None:
            _seed_everything(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _batch_size(batch: Any) -> int:
    """Leading size of the first tensor in ``batch`` (1 if it holds no tensor)."""
    if isinstance(batch, Tensor):
        return int(batch.shape[0]) if batch.ndim > 0 else 1
    if isinstance(batch, Mapping):
        items: Any = batch.values()
    elif isinstance(batch, (list, tuple)):
        items = batch
    else:
        return 1
    for item in items:
        if isinstance(item, (Tensor, Mapping, list, tuple)):
            return _batch_size(item)
    return 1


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under ``torch.compile`` (``_orig_mod``) and DDP (``module``) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod  # type: ignore[assignment]
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def _architecture_signature(model: nn.Module) -> str:
    """Names, shapes and dtypes of every weight: a resume must load into the same network."""
    text = ";".join(f"{k}:{tuple(v.shape)}:{v.dtype}" for k, v in model.state_dict().items())
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _progress_enabled(cfg: TrainConfig) -> bool:
    stream = sys.stderr
    return bool(cfg.progress and stream is not None and stream.isatty())


@dataclass
class _Sums:
    """Sample-weighted running sums of a loss and its components over one epoch."""

    total: float = 0.0
    count: int = 0
    parts: dict[str, float] = field(default_factory=dict)

    def add(self, loss: float, parts: Mapping[str, float], n: int) -> None:
        self.total += loss * n
        self.count += n
        for name, value in parts.items():
            self.parts[name] = self.parts.get(name, 0.0) + float(value) * n

    def mean(self) -> float:
        return self.total / max(self.count, 1)

    def part_means(self) -> dict[str, float]:
        return {k: v / max(self.count, 1) for k, v in self.parts.items()}


@dataclass
class _Progress:
    """Mutable loop counters; exactly what goes into / comes out of a :class:`TrainState`."""

    epoch: int = 0  # completed epochs
    global_step: int = 0  # optimizer steps
    best_val: float = math.inf
    best_epoch: int = 0
    best_model: dict[str, Tensor] = field(default_factory=dict)
    best_ema: dict[str, Tensor] | None = None
    epochs_since_improve: int = 0
    history: list[dict[str, float]] = field(default_factory=list)
    initial_val: float | None = None  # the untrained network's validation loss


# --------------------------------------------------------------------------------------------
# one epoch


def _train_epoch(
    *,
    forward_model: nn.Module,
    model: nn.Module,
    task: StageTask,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    ema: AveragedModel | None,
    cfg: TrainConfig,
    stage: str,
    epoch: int,
    progress: _Progress,
    device: torch.device,
) -> tuple[_Sums, list[float]]:
    """One pass over ``loader``; returns loss sums and the pre-clip norm of every step."""
    ctx = distributed.context()
    sharded = ctx is not None and ctx.world_size > 1
    forward_model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    max_norm = cfg.grad_clip if cfg.grad_clip is not None else math.inf
    n_batches = len(loader)
    sums = _Sums()
    grad_norms: list[float] = []
    optimizer.zero_grad(set_to_none=True)
    bar = tqdm(
        total=n_batches,
        desc=f"{stage} {epoch}/{cfg.epochs}",
        unit="batch",
        leave=False,
        disable=not (_progress_enabled(cfg) and _is_main_process()),
    )
    with bar:
        for index, batch in enumerate(loader):
            # Micro-batches are grouped in runs of accum_steps; a trailing short group still
            # steps, scaled by its own length so every step applies a mean gradient.
            group_start = (index // cfg.accum_steps) * cfg.accum_steps
            group_len = min(cfg.accum_steps, n_batches - group_start)
            step = progress.global_step + 1
            value = math.nan
            if sharded:
                value = _sharded_backward(
                    forward_model, task, batch, loader, index, group_len, sums, cfg, device, epoch
                )
            else:
                batch = _to_device(batch, device)
                n = _batch_size(batch)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
                    loss, parts = task.training_loss(forward_model, batch, epoch)
                value = float(loss.detach().float())
            if not math.isfinite(value) and not (sharded and batch is None):
                where = f" (batch {index + 1}/{n_batches})"
                raise NonFiniteLossError(stage, epoch, step, "training loss", value, where)
            if not sharded:
                (loss / group_len).backward()
                sums.add(value, parts, n)
            if index + 1 == group_start + group_len:
                if sharded:
                    distributed.all_reduce_gradients(params)
                norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm=max_norm))
                if not math.isfinite(norm):
                    where = f" (batch {index + 1}/{n_batches})"
                    raise NonFiniteLossError(stage, epoch, step, "gradient norm", norm, where)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                progress.global_step = step
                grad_norms.append(norm)
                if ema is not None:
                    ema.update_parameters(model)
            if math.isfinite(value):
                bar.set_postfix(loss=f"{value:.4g}", step=progress.global_step, refresh=False)
            bar.update(1)
    return sums, grad_norms


def _sharded_backward(
    forward_model: nn.Module,
    task: StageTask,
    batch: Any,
    loader: DataLoader,
    index: int,
    group_len: int,
    sums: _Sums,
    cfg: TrainConfig,
    device: torch.device,
    epoch: int,
) -> float:
    """This rank's share of global micro-batch ``index``: loss weighted by its sample share.

    Returns the local loss (NaN when this rank's share is empty: nothing to compute).
    """
    if batch is None:
        return math.nan
    batch = _to_device(batch, device)
    n = _batch_size(batch)
    n_global = loader.batch_sampler.global_size(index)  # type: ignore[union-attr]
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
        loss, parts = task.training_loss(forward_model, batch, epoch)
    value = float(loss.detach().float())
    if math.isfinite(value):
        (loss * (n / n_global) / group_len).backward()
        sums.add(value, parts, n)
    return value


@torch.no_grad()
def _validate(
    *,
    eval_model: nn.Module,
    task: StageTask,
    loader: DataLoader,
    cfg: TrainConfig,
    stage: str,
    epoch: int,
    step: int,
    device: torch.device,
) -> _Sums:
    eval_model.eval()
    sums = _Sums()
    ctx = distributed.context()
    rank = ctx.rank if ctx is not None else 0
    with _isolated_rng(cfg.seed + _VALIDATION_SEED_OFFSET + rank * _RANK_SEED_OFFSET, device):
        for batch in loader:
            if batch is None:  # this rank's share of a short last batch is empty
                continue
            batch = _to_device(batch, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
                loss, parts = task.validation_loss(eval_model, batch)
            value = float(loss.detach().float())
            if not math.isfinite(value):
                raise NonFiniteLossError(stage, epoch, step, "validation loss", value)
            sums.add(value, parts, _batch_size(batch))
    return sums


@torch.no_grad()
def _validation_metric(task: StageTask, eval_model: nn.Module, cfg: TrainConfig,
                       device: torch.device) -> float | None:
    """The task's optional selection metric (``task.validation_metric(model) -> float | None``,
    lower is better, e.g. a rollout error that the one-step validation loss cannot see)."""
    fn = getattr(task, "validation_metric", None)
    if fn is None:
        return None
    eval_model.eval()
    with _isolated_rng(cfg.seed + _VALIDATION_SEED_OFFSET, device):
        value = fn(eval_model)
    if value is None:
        return None
    # A rollout that blew up (inf/NaN) is the worst epoch, not a training failure.
    return float(value) if math.isfinite(float(value)) else math.inf


def _epoch_metrics(
    train: _Sums,
    val: _Sums | None,
    *,
    lr: float,
    grad_norms: list[float],
    epochs_since_improve: int,
    epoch_time: float,
    train_time: float,
) -> dict[str, float]:
    metrics: dict[str, float] = {"loss": train.mean()}

    def put(key: str, value: float) -> None:
        if key in metrics:
            raise ValueError(f"loss component name clashes with metric {key!r}; rename it")
        metrics[key] = float(value)

    for name, value in train.part_means().items():
        put(f"loss_{name}", value)
    if val is not None:
        put("val_loss", val.mean())
        for name, value in val.part_means().items():
            put(f"val_{name}", value)
    put("lr", lr)
    put("grad_norm", sum(grad_norms) / len(grad_norms) if grad_norms else 0.0)
    put("grad_norm_max", max(grad_norms) if grad_norms else 0.0)
    put("epochs_since_improve", float(epochs_since_improve))
    put("epoch_time_sec", epoch_time)
    put("samples_per_sec", train.count / train_time if train_time > 0 else 0.0)
    return metrics


# --------------------------------------------------------------------------------------------
# resume


def _set_aside(path: Path, label: str) -> Path:
    """Rename a state file that will not be resumed, so nothing is deleted silently."""
    target = path.with_name(f"{path.stem}.{label}-{time.strftime('%Y%m%d-%H%M%S')}{path.suffix}")
    os.replace(path, target)
    return target


def _load_resumable(path: Path, fingerprint: str, stage: str) -> TrainState | None:
    """The saved state to continue from, or ``None`` to start fresh."""
    if not path.is_file():
        return None
    try:
        state = load_train_state(path)
    except Exception as err:  # unreadable or old format: keep it for inspection, start over
        moved = _set_aside(path, "unreadable")
        warnings.warn(
            f"stage {stage!r}: cannot read training state {path} ({err}); moved to {moved.name}, "
            "starting from scratch",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    if state.finished:
        # A finished run's result lives in its checkpoint artifact; nothing here to resume or
        # keep, whatever its fingerprint.
        logger.info(
            "stage %r: previous run finished (%s); starting afresh", stage, state.stopped_reason
        )
        return None
    if state.fingerprint != fingerprint:
        moved = _set_aside(path, f"stale-{state.fingerprint}")
        warnings.warn(
            f"stage {stage!r}: training state {path} belongs to another run (fingerprint "
            f"{state.fingerprint}, this run {fingerprint}); moved to {moved.name}, "
            "starting from scratch",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return state


# --------------------------------------------------------------------------------------------
# fit


def fit(
    model: nn.Module,
    task: StageTask,
    train_data: Dataset,
    val_data: Dataset | None,
    cfg: TrainConfig,
    *,
    stage: str,
    state_dir: Path | None = None,
    on_epoch_end: EpochCallback | None = None,
    **kwargs: Any,
) -> FitResult:
    """Train ``model`` on ``task`` and return the best weights (arguments: :func:`_fit`).

    Around :func:`_fit`: the stage's state lock (one run per ``state_dir``; raises
    :class:`~ups_kedro.training.lock.StageLockedError` naming the holder), the torch thread
    count and the run-level tags.  Spawned data-parallel workers skip both: their parent
    holds the lock and sets their threads.
    """
    cfg.validate(f"{stage}.train")  # fills in a derived seed before anything reads it
    ctx = distributed.context()
    spawned = ctx is not None and ctx.launcher == "spawn"
    with contextlib.ExitStack() as stack:
        if not spawned:
            if (state_dir is not None and cfg.epochs > 0
                    and (distributed.launched_rank() or 0) == 0):
                run_id = getattr(on_epoch_end, "run_id", None)
                stack.enter_context(StageLock(Path(state_dir), stage, run_id))
            threads = stack.enter_context(torch_threads(cfg.num_threads, stage))
            _set_tags(on_epoch_end, {"seed": cfg.seed, "num_threads": threads})
        return _fit(model, task, train_data, val_data, cfg, stage=stage, state_dir=state_dir,
                    on_epoch_end=on_epoch_end, **kwargs)


def _set_tags(callback: Any, tags: Mapping[str, Any]) -> None:
    """Hand run-level facts to a callback that takes them (``set_tags``), on the main process."""
    set_tags = getattr(callback, "set_tags", None)
    if callable(set_tags) and _is_main_process():
        set_tags({k: str(v) for k, v in tags.items() if v is not None})


def _fit(
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
    """Train ``model`` on ``task`` and return the best weights.

    Args:
        model: the network to train (moved to ``cfg.device``; on return it holds the best
            epoch's raw weights).  Parameters with ``requires_grad=False`` stay frozen.
        task: computes the stage's loss on a batch.
        train_data, val_data: map-style datasets; the default collate turns items that are
            dicts of tensors into batched dicts.  Without ``val_data`` the training loss selects
            the best epoch and drives early stopping.
        cfg: training parameters (validated here as ``<stage>.train``).
        stage: stage name, used in messages and the progress bar.
        state_dir: folder for the resumable state (``last.pt``, every epoch) and periodic
            weights (``epoch_0005.pt``); ``None`` disables both.
        fingerprint: the caller's identity of the data and upstream artifacts; combined with
            the config and the network's architecture into the run fingerprint that a saved
            state must match to be resumed.
        on_epoch_end: called as ``on_epoch_end(epoch, metrics)`` after each epoch's state is
            written, and first for each epoch replayed from a resumed state.
        collate_fn: passed to the DataLoaders.

    A diverged run (:class:`~ups_kedro.training.config.DivergenceConfig`) raises before it
    returns, so the caller never publishes it.

    Data-parallel (``cfg.distributed.nproc_per_node`` > 1): the workers are started here and
    ``on_epoch_end`` is still called in this process, with rank 0's metrics.  Under
    ``torchrun`` this joins the launcher's process group; only rank 0 writes state and calls
    ``on_epoch_end``, and every rank returns the same result.

    Raises:
        NonFiniteLossError: a loss or gradient norm became NaN/inf.
        DivergenceError: the selection loss went far above its best or never beat the
            untrained network.
        DistributedWorkerError: a spawned worker failed (its traceback is in the message).
    """
    cfg.validate(f"{stage}.train")
    ctx = distributed.context()
    if ctx is None and distributed.launched_world_size() > 1:
        ctx = distributed.join_torchrun(cfg)
    elif ctx is None and cfg.distributed.nproc_per_node > 1 and cfg.epochs > 0:
        return _fit_spawned(
            model, task, train_data, val_data, cfg, stage=stage, state_dir=state_dir,
            fingerprint=fingerprint, on_epoch_end=on_epoch_end, collate_fn=collate_fn,
        )
    model = unwrap_model(model)
    device = ctx.device if ctx is not None else torch.device(cfg.device)
    model.to(device)
    world = ctx.world_size if ctx is not None else 1
    run_fp = run_fingerprint(
        _fingerprint_config(cfg),
        identity=f"{stage}|{fingerprint}|{_architecture_signature(model)}"
        + (f"|world={world}" if world > 1 else ""),
    )

    if cfg.epochs == 0:  # a switched-off stage: nothing to train
        return FitResult(
            model_state=clone_state_dict(model.state_dict()),
            ema_state=None,
            best_epoch=0,
            best_val_loss=math.inf,
            history=[],
            stopped_reason="completed",
            epochs_run=0,
            fingerprint=run_fp,
        )

    _seed_everything(cfg.seed)
    if ctx is not None and world > 1:
        distributed.broadcast_module(model)
        if ctx.rank > 0:
            _seed_everything(cfg.seed + ctx.rank * _RANK_SEED_OFFSET)
    loader_generator = torch.Generator()
    loader_generator.manual_seed(cfg.seed + _LOADER_SEED_OFFSET)
    train_loader = _make_loader(
        train_data,
        cfg.batch_size,
        shuffle=True,
        generator=loader_generator,
        collate_fn=collate_fn,
        num_workers=cfg.num_workers,
    )
    val_loader = None
    if val_data is not None:
        val_loader = _make_loader(
            val_data,
            cfg.eval_batch_size or cfg.batch_size,
            shuffle=False,
            generator=None,
            collate_fn=collate_fn,
            num_workers=cfg.num_workers,
        )

    optimizer = build_optimizer([p for p in model.parameters() if p.requires_grad], cfg.optimizer)
    scheduler = build_scheduler(optimizer, cfg.scheduler, cfg.epochs)
    ema = create_ema(model, cfg.ema_decay, cfg.ema_warmup) if cfg.ema_decay is not None else None

    # Compiled forward for training; state is always read from the plain modules, so no
    # "_orig_mod." prefix ever reaches a checkpoint.
    forward_model: nn.Module = torch.compile(model) if cfg.compile else model
    eval_plain = ema.module if ema is not None else model
    eval_model: nn.Module
    if not cfg.compile:
        eval_model = eval_plain
    elif ema is None:
        eval_model = forward_model
    else:
        eval_model = torch.compile(eval_plain)

    progress = _Progress()
    state_path = Path(state_dir) / LAST_STATE if state_dir is not None else None
    resumed = None
    if state_path is not None and _is_main_process():
        resumed = _load_resumable(state_path, run_fp, stage)
    if state_path is not None and world > 1:
        resumed = distributed.broadcast_object(resumed)
    if resumed is not None:
        _apply_state(resumed, model, optimizer, scheduler, ema, progress)
        logger.info("stage %r: resuming after epoch %d of %d", stage, progress.epoch, cfg.epochs)
        if on_epoch_end is not None and _is_main_process():
            for entry in progress.history:  # a fresh tracking run still gets whole curves
                with _isolated_rng(None, device):
                    metrics = {k: v for k, v in entry.items() if k != "epoch"}
                    on_epoch_end(int(entry["epoch"]), metrics)
        # Last, so nothing above can consume random numbers after the restore.
        rank = ctx.rank if ctx is not None else 0
        if rank > 0 and resumed.rank_rngs is not None and len(resumed.rank_rngs) >= rank:
            restore_rng_state(resumed.rank_rngs[rank - 1], loader_generator)
        else:
            restore_rng_state(resumed.rng, loader_generator)
    elif val_loader is not None and cfg.divergence != DivergenceConfig(None, None):
        # The untrained network's selection value (the task's validation metric, else its
        # validation loss): the baseline a run must beat to publish.
        progress.initial_val = _validation_metric(task, eval_model, cfg, device)
        if progress.initial_val is None:
            progress.initial_val = _reduce_sums(_validate(
                eval_model=eval_model, task=task, loader=val_loader, cfg=cfg, stage=stage,
                epoch=0, step=0, device=device)).mean()
    resumed_from = progress.epoch
    _set_tags(on_epoch_end,
              {"resumed_from": resumed_from, "initial_val_loss": progress.initial_val})

    stopped: StopReason = "completed"
    for epoch in range(progress.epoch + 1, cfg.epochs + 1):
        started = time.perf_counter()
        lr = current_lr(optimizer)
        train_sums, grad_norms = _train_epoch(
            forward_model=forward_model,
            model=model,
            task=task,
            loader=train_loader,
            optimizer=optimizer,
            ema=ema,
            cfg=cfg,
            stage=stage,
            epoch=epoch,
            progress=progress,
            device=device,
        )
        train_time = time.perf_counter() - started
        train_sums = _reduce_sums(train_sums)
        val_sums = None
        if val_loader is not None:
            val_sums = _reduce_sums(
                _validate(
                    eval_model=eval_model,
                    task=task,
                    loader=val_loader,
                    cfg=cfg,
                    stage=stage,
                    epoch=epoch,
                    step=progress.global_step,
                    device=device,
                )
            )
        selection = val_sums.mean() if val_sums is not None else train_sums.mean()
        val_metric = (_validation_metric(task, eval_model, cfg, device)
                      if val_sums is not None else None)
        if val_metric is not None:
            selection = val_metric
        if val_metric is not None and not math.isfinite(val_metric):
            # A rollout metric that blew up is a bad epoch; only a non-finite loss fails here.
            health.check_divergence(stage, epoch, val_sums.mean(), math.inf, 0, None, cfg)
        else:
            health.check_divergence(
                stage, epoch, selection, progress.best_val, progress.best_epoch,
                progress.initial_val, cfg,
                what=("training loss" if val_sums is None else
                      "validation metric" if val_metric is not None else "validation loss"))

        if selection < progress.best_val:
            progress.best_val = selection
            progress.best_epoch = epoch
            progress.best_model = clone_state_dict(model.state_dict())
            progress.best_ema = (
                clone_state_dict(ema.module.state_dict()) if ema is not None else None
            )
            progress.epochs_since_improve = 0
        else:
            progress.epochs_since_improve += 1
        scheduler.step(selection)

        metrics = _epoch_metrics(
            train_sums,
            val_sums,
            lr=lr,
            grad_norms=grad_norms,
            epochs_since_improve=progress.epochs_since_improve,
            epoch_time=time.perf_counter() - started,
            train_time=train_time,
        )
        metrics.update(health.grad_health(stage, epoch, metrics, progress.history, cfg))
        if val_metric is not None:
            metrics["val_metric"] = val_metric
        progress.history.append({"epoch": epoch, **metrics})
        progress.epoch = epoch

        finished = True
        if cfg.target_loss is not None and selection <= cfg.target_loss:
            stopped = "target_loss"
        elif cfg.patience is not None and progress.epochs_since_improve >= cfg.patience:
            stopped = "patience"
        elif epoch == cfg.epochs:
            stopped = "completed"
        else:
            finished = False

        rank_rngs = None
        if state_dir is not None and world > 1:  # a collective: every rank takes part
            rngs = distributed.gather_objects(capture_rng_state(loader_generator))
            rank_rngs = rngs[1:]
        if state_dir is not None and _is_main_process():
            _write_state(
                Path(state_dir),
                cfg=cfg,
                stage=stage,
                run_fp=run_fp,
                model=model,
                optimizer=optimizer,
                scheduler=scheduler,
                ema=ema,
                progress=progress,
                loader_generator=loader_generator,
                finished=finished,
                stopped=stopped,
                metrics=metrics,
                rank_rngs=rank_rngs,
            )
        if on_epoch_end is not None and _is_main_process():
            with _isolated_rng(None, device):
                on_epoch_end(epoch, dict(metrics))
        if finished:
            break

    health.check_final(stage, progress.best_val, progress.best_epoch, progress.initial_val, cfg)
    # Leave the caller's model holding the selected weights, like the returned state.
    model.load_state_dict(progress.best_model)
    return FitResult(
        model_state=progress.best_model,
        ema_state=progress.best_ema,
        best_epoch=progress.best_epoch,
        best_val_loss=progress.best_val,
        history=[dict(h) for h in progress.history],
        stopped_reason=stopped,
        epochs_run=progress.epoch,
        fingerprint=run_fp,
        resumed_from=resumed_from,
    )


def _fingerprint_config(cfg: TrainConfig) -> dict[str, Any]:
    """The config part of the run fingerprint.

    The progress bar does not change results; nor does how the processes are launched (the
    world size goes into the identity instead), so a single-process fingerprint is the same
    as before the ``distributed`` block existed.
    """
    plain = to_dict(dataclasses.replace(cfg, progress=True))
    # Nor do the thread count and the health checks (they only warn or fail a run).
    for key in ("distributed", "num_threads", "grad_health", "divergence"):
        plain.pop(key, None)
    return plain


def _fit_spawned(
    model: nn.Module,
    task: StageTask,
    train_data: Dataset,
    val_data: Dataset | None,
    cfg: TrainConfig,
    *,
    on_epoch_end: EpochCallback | None,
    **kwargs: Any,
) -> FitResult:
    """``fit`` in ``cfg.distributed.nproc_per_node`` workers; this process relays callbacks."""
    model = unwrap_model(model)
    out = distributed.spawn_fit(
        model, task, train_data, val_data, cfg, on_epoch_end=on_epoch_end, **kwargs
    )
    result = FitResult(**out)
    _set_tags(on_epoch_end, {"resumed_from": result.resumed_from})
    # As in-process: the caller's model holds the selected weights afterwards.
    model.load_state_dict(result.model_state)
    model.to(torch.device(cfg.device))
    return result


def _apply_state(
    state: TrainState,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: EpochScheduler,
    ema: AveragedModel | None,
    progress: _Progress,
) -> None:
    """Load a saved state into freshly built objects (RNG states are restored separately)."""
    model.load_state_dict(state.model)
    optimizer.load_state_dict(state.optimizer)
    scheduler.load_state_dict(state.scheduler)
    if ema is not None and state.ema is not None:
        load_ema_state(ema, state.ema)
    progress.epoch = state.epoch
    progress.global_step = state.global_step
    progress.best_val = state.best_val
    progress.best_epoch = state.best_epoch
    progress.best_model = state.best_model
    progress.best_ema = state.best_ema
    progress.epochs_since_improve = state.epochs_since_improve
    progress.history = [dict(h) for h in state.history]
    progress.initial_val = state.initial_val


def _write_state(
    state_dir: Path,
    *,
    cfg: TrainConfig,
    stage: str,
    run_fp: str,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: EpochScheduler,
    ema: AveragedModel | None,
    progress: _Progress,
    loader_generator: torch.Generator,
    finished: bool,
    stopped: StopReason,
    metrics: dict[str, float],
    rank_rngs: list[dict[str, Any]] | None = None,
) -> None:
    """Write ``last.pt`` (full state) and, every ``checkpoint_interval`` epochs, weights."""
    epoch = progress.epoch
    if cfg.checkpoint_interval > 0 and epoch % cfg.checkpoint_interval == 0:
        atomic_torch_save(
            {
                "stage": stage,
                "epoch": epoch,
                "fingerprint": run_fp,
                "model": model.state_dict(),
                "ema": ema.module.state_dict() if ema is not None else None,
                "metrics": metrics,
            },
            state_dir / f"epoch_{epoch:04d}.pt",
        )
    state = TrainState(
        fingerprint=run_fp,
        stage=stage,
        epoch=epoch,
        global_step=progress.global_step,
        model=model.state_dict(),
        optimizer=optimizer.state_dict(),
        scheduler=scheduler.state_dict(),
        rng=capture_rng_state(loader_generator),
        best_val=progress.best_val,
        best_epoch=progress.best_epoch,
        best_model=progress.best_model,
        epochs_since_improve=progress.epochs_since_improve,
        history=progress.history,
        ema=ema_state(ema) if ema is not None else None,
        best_ema=progress.best_ema,
        scaler=None,
        finished=finished,
        stopped_reason=stopped if finished else None,
        rank_rngs=rank_rngs,
        initial_val=progress.initial_val,
    )
    save_train_state(state, state_dir / LAST_STATE)
