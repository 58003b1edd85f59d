"""One epoch of :mod:`~ups_kedro.training.loop`: batching, the training pass, validation.

Everything here works on one process's share of the data; the data-parallel plug-in points
(:mod:`~ups_kedro.training.distributed`) are :func:`make_loader` (each rank's share of the same
global batches), :func:`train_epoch` (loss weighted by the rank's share, gradients summed
before clipping) and :func:`reduce_sums` (epoch sums combined over ranks).  With one process
none of it runs.
"""

from __future__ import annotations

import contextlib
import math
import random
import sys
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from ups_kedro.training import distributed
from ups_kedro.training.config import TrainConfig
from ups_kedro.training.resume import TrainingProgress
from ups_kedro.training.task import NonFiniteLossError, StageTask

# Independent, fixed streams derived from cfg.seed: shuffling must not shift when a task draws
# one more random number, and validation noise (e.g. diffusion τ) should be the same every
# epoch so that validation losses are comparable across epochs.
LOADER_SEED_OFFSET = 1_000_003
VALIDATION_SEED_OFFSET = 2_000_029
# Ranks > 0 of a data-parallel run draw the task's random numbers (noise, τ, …) from their own
# stream, so different samples never share noise; rank 0's stream is the single-process one.
RANK_SEED_OFFSET = 7_919


@dataclass
class Sums:
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


# --------------------------------------------------------------------------------------------
# data, seeds, batches


def make_loader(
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


def reduce_sums(sums: Sums) -> Sums:
    """Combine per-process epoch sums, in rank order (so every rank gets the same numbers)."""
    ctx = distributed.context()
    if ctx is None or ctx.world_size == 1:
        return sums
    combined = Sums()
    for part in distributed.gather_objects(sums):
        combined.total += part.total
        combined.count += part.count
        for name, value in part.parts.items():
            combined.parts[name] = combined.parts.get(name, 0.0) + value
    return combined


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)  # also seeds every CUDA device
    np.random.seed(seed % 2**32)
    random.seed(seed)


@contextlib.contextmanager
def isolated_rng(seed: int | None, device: torch.device) -> Iterator[None]:
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
            seed_everything(seed)
        try:
            yield
        finally:
            np.random.set_state(np_state)
            random.setstate(py_state)


def _to_device(batch: Any, device: torch.device) -> Any:
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, Mapping):
        return {k: _to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(_to_device(v, device) for v in batch)
    return batch


def _batch_size(batch: Any) -> int:
    """Leading size of the first tensor in ``batch`` (1 if it holds no tensor)."""
    if isinstance(batch, torch.Tensor):
        return int(batch.shape[0]) if batch.ndim > 0 else 1
    if isinstance(batch, Mapping):
        items: Any = batch.values()
    elif isinstance(batch, (list, tuple)):
        items = batch
    else:
        return 1
    for item in items:
        if isinstance(item, (torch.Tensor, Mapping, list, tuple)):
            return _batch_size(item)
    return 1


def _progress_enabled(cfg: TrainConfig) -> bool:
    stream = sys.stderr
    return bool(cfg.progress and stream is not None and stream.isatty())


# --------------------------------------------------------------------------------------------
# the training pass


@dataclass
class EpochModels:
    """The modules one epoch touches.

    ``model`` is the plain network (parameters, EMA updates); ``forward_model`` its training
    forward (``torch.compile``'d or the same module); ``eval_model`` what validation runs (the
    EMA average when EMA is on, compiled with ``cfg.compile``).
    """

    model: nn.Module
    forward_model: nn.Module
    eval_model: nn.Module
    ema: AveragedModel | None


def train_epoch(
    models: EpochModels,
    task: StageTask,
    loader: DataLoader,
    optimizer: torch.optim.Optimizer,
    cfg: TrainConfig,
    *,
    stage: str,
    epoch: int,
    progress: TrainingProgress,
    device: torch.device,
) -> tuple[Sums, list[float]]:
    """One pass over ``loader``; returns loss sums and the pre-clip norm of every step."""
    ctx = distributed.context()
    sharded = ctx is not None and ctx.world_size > 1
    models.forward_model.train()
    params = [p for p in models.model.parameters() if p.requires_grad]
    n_batches = len(loader)
    sums = Sums()
    grad_norms: list[float] = []
    optimizer.zero_grad(set_to_none=True)
    show = _progress_enabled(cfg) and distributed.is_main_process()
    with tqdm(total=n_batches, desc=f"{stage} {epoch}/{cfg.epochs}", unit="batch", leave=False,
              disable=not show) as bar:
        for index, batch in enumerate(loader):
            # Micro-batches are grouped in runs of accum_steps; a trailing short group still
            # steps, scaled by its own length so every step applies a mean gradient.
            group_start = (index // cfg.accum_steps) * cfg.accum_steps
            group_len = min(cfg.accum_steps, n_batches - group_start)
            step = progress.global_step + 1
            where = f" (batch {index + 1}/{n_batches})"
            n_global = (loader.batch_sampler.global_size(index)  # type: ignore[union-attr]
                        if sharded else None)
            value = _backward(models.forward_model, task, batch, n_global=n_global,
                              group_len=group_len, sums=sums, cfg=cfg, device=device, epoch=epoch)
            if not math.isfinite(value) and not (sharded and batch is None):
                raise NonFiniteLossError(stage, epoch, step, "training loss", value, where)
            if index + 1 == group_start + group_len:
                norm = _optimizer_step(params, optimizer, cfg, sharded=sharded)
                if not math.isfinite(norm):
                    raise NonFiniteLossError(stage, epoch, step, "gradient norm", norm, where)
                optimizer.zero_grad(set_to_none=True)
                progress.global_step = step
                grad_norms.append(norm)
                if models.ema is not None:
                    models.ema.update_parameters(models.model)
            if math.isfinite(value):
                bar.set_postfix(loss=f"{value:.4g}", step=progress.global_step, refresh=False)
            bar.update(1)
    return sums, grad_norms


def _backward(
    forward_model: nn.Module,
    task: StageTask,
    batch: Any,
    *,
    n_global: int | None,
    group_len: int,
    sums: Sums,
    cfg: TrainConfig,
    device: torch.device,
    epoch: int,
) -> float:
    """Loss and backward of one micro-batch; returns the loss value (no backward if non-finite).

    Data-parallel (``n_global``: the global micro-batch's size): this rank's share, its loss
    weighted by the share ``n / n_global`` so that the summed gradients are the global mean;
    an empty share returns NaN (nothing to compute).
    """
    if n_global is not None and batch is None:
        return math.nan
    batch = _to_device(batch, device)
    n = _batch_size(batch)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cfg.amp):
        loss, parts = task.training_loss(forward_model, batch, epoch)
    value = float(loss.detach().float())
    if math.isfinite(value):
        weighted = loss if n_global is None else loss * (n / n_global)
        (weighted / group_len).backward()
        sums.add(value, parts, n)
    return value


def _optimizer_step(
    params: list[nn.Parameter], optimizer: torch.optim.Optimizer, cfg: TrainConfig, *,
    sharded: bool,
) -> float:
    """Sum gradients over ranks, clip, step; returns the pre-clip norm (no step if non-finite)."""
    if sharded:
        distributed.all_reduce_gradients(params)
    max_norm = cfg.grad_clip if cfg.grad_clip is not None else math.inf
    norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm=max_norm))
    if math.isfinite(norm):
        optimizer.step()
    return norm


# --------------------------------------------------------------------------------------------
# validation and the epoch's metrics


@torch.no_grad()
def validate(
    eval_model: nn.Module,
    task: StageTask,
    loader: DataLoader,
    cfg: TrainConfig,
    *,
    stage: str,
    epoch: int,
    step: int,
    device: torch.device,
) -> Sums:
    """The validation loss sums of this rank's share (seeded: the same noise every epoch)."""
    eval_model.eval()
    sums = Sums()
    ctx = distributed.context()
    rank = ctx.rank if ctx is not None else 0
    with isolated_rng(cfg.seed + VALIDATION_SEED_OFFSET + rank * RANK_SEED_OFFSET, device):
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
def validation_metric(task: StageTask, eval_model: nn.Module, cfg: TrainConfig,
                      device: torch.device) -> float | None:
    """The task's optional selection metric (``task.validation_metric(model) -> float | None``,
    lower is better, e.g. a rollout error that the one-step validation loss cannot see)."""
    fn = getattr(task, "validation_metric", None)
    if fn is None:
        return None
    eval_model.eval()
    with isolated_rng(cfg.seed + VALIDATION_SEED_OFFSET, device):
        value = fn(eval_model)
    if value is None:
        return None
    # A rollout that blew up (inf/NaN) is the worst epoch, not a training failure.
    return float(value) if math.isfinite(float(value)) else math.inf


def epoch_metrics(
    train: Sums,
    val: Sums | None,
    *,
    lr: float,
    grad_norms: list[float],
    epochs_since_improve: int,
    epoch_time: float,
    train_time: float,
) -> dict[str, float]:
    """The per-epoch metrics listed in :mod:`~ups_kedro.training.loop` (health flags aside)."""
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
