"""Typed training parameters shared by every stage (the ``<stage>.train`` block).

Each stage's ``parameters_<stage>.yml`` holds a ``train:`` mapping that
:func:`ups_kedro.config.parse` turns into a :class:`TrainConfig`.  Every key has exactly one
default, here.  ``validate(where)`` checks ranges and names the full key path in its message
(``operator.train.accum_steps must be ≥ 1, got 0``), so a bad value fails before any training.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from ups_kedro.config import ConfigError
from ups_kedro.training.seeds import resolve_seed

OptimizerName = Literal["adam", "adamw", "sgd"]
SchedulerName = Literal["none", "steplr", "cosineannealinglr", "reducelronplateau"]

OPTIMIZER_NAMES: tuple[str, ...] = ("adam", "adamw", "sgd")
SCHEDULER_NAMES: tuple[str, ...] = ("none", "steplr", "cosineannealinglr", "reducelronplateau")
BackendName = Literal["auto", "gloo", "nccl"]
StartMethod = Literal["spawn", "fork"]


def _require(ok: bool, message: str) -> None:
    """Raise a :class:`ConfigError` (a ``ValueError``) with ``message`` unless ``ok``."""
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class OptimizerConfig:
    """Optimizer choice and hyper-parameters.

    ``betas`` apply to adam/adamw, ``momentum`` to sgd; the others are ignored by design so that
    switching ``name`` needs no other edit.
    """

    name: OptimizerName = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    momentum: float = 0.9

    def validate(self, where: str = "optimizer") -> None:
        _require(
            self.name in OPTIMIZER_NAMES,
            f"{where}.name must be one of {OPTIMIZER_NAMES}, got {self.name!r}",
        )
        _require(
            math.isfinite(self.lr) and self.lr > 0, f"{where}.lr must be > 0, got {self.lr}"
        )
        _require(
            self.weight_decay >= 0, f"{where}.weight_decay must be ≥ 0, got {self.weight_decay}"
        )
        _require(
            len(self.betas) == 2 and all(0.0 <= b < 1.0 for b in self.betas),
            f"{where}.betas must be two values in [0, 1), got {self.betas}",
        )
        _require(
            0.0 <= self.momentum < 1.0, f"{where}.momentum must be in [0, 1), got {self.momentum}"
        )


@dataclass(frozen=True)
class SchedulerConfig:
    """Per-epoch learning-rate schedule, with an optional linear warm-up in front.

    ``steplr`` uses ``step_size``/``gamma``; ``cosineannealinglr`` uses ``t_max`` (``None``:
    the epochs left after warm-up) and ``eta_min``; ``reducelronplateau`` uses ``factor`` and
    ``patience`` and watches the validation loss.  ``warmup_epochs`` > 0 ramps the learning
    rate linearly from ``lr/(warmup_epochs+1)`` up to ``lr`` before the main schedule starts.
    """

    name: SchedulerName = "none"
    step_size: int = 10
    gamma: float = 0.5
    t_max: int | None = None
    eta_min: float = 0.0
    factor: float = 0.5
    patience: int = 3
    warmup_epochs: int = 0

    def validate(self, where: str = "scheduler") -> None:
        _require(
            self.name in SCHEDULER_NAMES,
            f"{where}.name must be one of {SCHEDULER_NAMES}, got {self.name!r}",
        )
        _require(self.step_size >= 1, f"{where}.step_size must be ≥ 1, got {self.step_size}")
        _require(0.0 < self.gamma <= 1.0, f"{where}.gamma must be in (0, 1], got {self.gamma}")
        _require(
            self.t_max is None or self.t_max >= 1,
            f"{where}.t_max must be ≥ 1 or null, got {self.t_max}",
        )
        _require(self.eta_min >= 0, f"{where}.eta_min must be ≥ 0, got {self.eta_min}")
        _require(0.0 < self.factor < 1.0, f"{where}.factor must be in (0, 1), got {self.factor}")
        _require(self.patience >= 0, f"{where}.patience must be ≥ 0, got {self.patience}")
        _require(
            self.warmup_epochs >= 0, f"{where}.warmup_epochs must be ≥ 0, got {self.warmup_epochs}"
        )


@dataclass(frozen=True)
class DistributedConfig:
    """Data-parallel training on one machine (``<stage>.train.distributed``).

    ``nproc_per_node`` > 1 makes :func:`ups_kedro.training.loop.fit` start that many worker
    processes (``start_method``: ``spawn`` pickles model, task and data to the workers; ``fork``
    shares them copy-on-write, CPU only) joined in a ``torch.distributed`` process group
    (``backend``: ``auto`` = NCCL for CUDA devices, gloo otherwise).  ``batch_size`` stays the
    *global* micro-batch: each rank trains on its ⌈/⌊batch_size/N⌋ share and gradients are
    combined so that every optimizer step applies the same mean gradient as one process.
    ``threads_per_proc`` sets ``torch.set_num_threads`` in each CPU worker (``None``: the CPU
    count divided by ``nproc_per_node``).  ``master_port`` 0 picks a free port.  ``timeout_sec``
    bounds every collective, so a dead rank cannot hang the others forever.

    Under ``torchrun`` (``RANK``/``WORLD_SIZE`` in the environment) ``nproc_per_node`` is
    ignored: the processes already exist and ``fit`` joins their group.
    """

    nproc_per_node: int = 1
    backend: BackendName = "auto"
    start_method: StartMethod = "spawn"
    threads_per_proc: int | None = None
    master_port: int = 0
    timeout_sec: float = 600.0

    def validate(self, where: str = "distributed") -> None:
        _require(
            self.nproc_per_node >= 1,
            f"{where}.nproc_per_node must be ≥ 1, got {self.nproc_per_node}",
        )
        _require(
            self.backend in ("auto", "gloo", "nccl"),
            f"{where}.backend must be one of ('auto', 'gloo', 'nccl'), got {self.backend!r}",
        )
        _require(
            self.start_method in ("spawn", "fork"),
            f"{where}.start_method must be 'spawn' or 'fork', got {self.start_method!r}",
        )
        _require(
            self.threads_per_proc is None or self.threads_per_proc >= 1,
            f"{where}.threads_per_proc must be ≥ 1 or null, got {self.threads_per_proc}",
        )
        _require(
            0 <= self.master_port <= 65535,
            f"{where}.master_port must be in [0, 65535] (0: any free port), got {self.master_port}",
        )
        _require(
            math.isfinite(self.timeout_sec) and self.timeout_sec > 0,
            f"{where}.timeout_sec must be > 0, got {self.timeout_sec}",
        )


@dataclass(frozen=True)
class GradHealthConfig:
    """When an epoch's gradients are flagged (``<stage>.train.grad_health``).

    Judged on the epoch's mean pre-clip global gradient norm (the ``grad_norm`` metric):

    * *vanishing*: below ``vanishing_norm`` while the training loss is still above
      ``vanishing_loss_ratio`` × the first epoch's, i.e. the stage has not learned yet.  A
      healthy run whose gradients shrink because its loss did is not flagged.
    * *exploding*: above ``exploding_factor`` × ``grad_clip`` (needs ``grad_clip``): clipping
      then rescales every step and the optimizer follows the direction only.

    ``null`` switches a check off.  A flag is a warning, an MLflow tag and a metric; it never
    stops training.
    """

    vanishing_norm: float | None = 0.01
    vanishing_loss_ratio: float = 0.5
    exploding_factor: float | None = 10.0

    def validate(self, where: str = "grad_health") -> None:
        _require(
            self.vanishing_norm is None or self.vanishing_norm > 0,
            f"{where}.vanishing_norm must be > 0 or null, got {self.vanishing_norm}",
        )
        _require(
            0.0 < self.vanishing_loss_ratio <= 1.0,
            f"{where}.vanishing_loss_ratio must be in (0, 1], got {self.vanishing_loss_ratio}",
        )
        _require(
            self.exploding_factor is None or self.exploding_factor >= 1.0,
            f"{where}.exploding_factor must be ≥ 1 or null, got {self.exploding_factor}",
        )


@dataclass(frozen=True)
class DivergenceConfig:
    """When a run counts as diverged and fails instead of publishing (``<stage>.train.divergence``).

    The selection loss (validation, or training without validation data) is compared with the
    untrained network's validation loss (measured once before the first epoch) and with the
    best epoch so far:

    * an epoch above ``max_ratio_to_best`` × min(best so far, untrained) fails at once;
    * a run whose best epoch is above ``max_ratio_to_initial`` × untrained fails at the end
      (training made the network it started from worse).  The margin above 1 is for runs
      that barely move it, e.g. a slow EMA over a few epochs, or a student that starts as
      its teacher: those end a hair above the untrained loss without having diverged.

    ``null`` switches a check off.  Non-finite losses always fail (``NonFiniteLossError``).
    """

    max_ratio_to_best: float | None = 10.0
    max_ratio_to_initial: float | None = 2.0

    def validate(self, where: str = "divergence") -> None:
        _require(
            self.max_ratio_to_best is None or self.max_ratio_to_best > 1.0,
            f"{where}.max_ratio_to_best must be > 1 or null, got {self.max_ratio_to_best}",
        )
        _require(
            self.max_ratio_to_initial is None or self.max_ratio_to_initial > 0,
            f"{where}.max_ratio_to_initial must be > 0 or null, got {self.max_ratio_to_initial}",
        )


@dataclass(frozen=True)
class TrainConfig:
    """How one stage trains.

    ``batch_size`` is the micro-batch; one optimizer step sees ``batch_size * accum_steps``
    samples.  ``grad_clip`` is a max global L2 norm (``None``: no clipping; the norm is still
    measured).  ``ema_decay`` enables an EMA of the weights that is also what validation and
    model selection use.  ``amp`` turns on bf16 autocast (CPU and CUDA).  ``patience`` stops
    after that many epochs without a validation improvement, ``target_loss`` as soon as the
    validation loss reaches it.  ``checkpoint_interval`` > 0 also keeps weights every that many
    epochs.  ``num_workers`` 0 loads batches in the training process (exact resume is tested
    there).  ``eval_batch_size`` defaults to ``batch_size``.  ``compile`` wraps the forward in
    ``torch.compile``.  ``distributed`` runs
    the stage data-parallel (see :class:`DistributedConfig`); ``batch_size`` and
    ``eval_batch_size`` are then global sizes, split across the processes.

    ``seed`` ``null`` (the default) derives the stage's seed from the top-level ``seed`` in
    ``globals.yml`` (:mod:`ups_kedro.training.seeds`); :meth:`validate` fills it in, so a parsed
    config always holds the integer actually used.  ``num_threads`` sets torch's intra-op
    threads for the stage (``null``: ``OMP_NUM_THREADS`` if set, else the idle cores, at most
    4; see :mod:`ups_kedro.training.threads`).  ``grad_health`` and ``divergence``: see
    :class:`GradHealthConfig`, :class:`DivergenceConfig`.
    """

    epochs: int
    batch_size: int
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    accum_steps: int = 1
    grad_clip: float | None = None
    ema_decay: float | None = None
    ema_warmup: bool = True
    amp: bool = False
    compile: bool = False
    patience: int | None = None
    target_loss: float | None = None
    checkpoint_interval: int = 0
    seed: int | None = None
    device: str = "cpu"
    progress: bool = True
    eval_batch_size: int | None = None
    num_workers: int = 0
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    num_threads: int | None = None
    grad_health: GradHealthConfig = field(default_factory=GradHealthConfig)
    divergence: DivergenceConfig = field(default_factory=DivergenceConfig)

    def validate(self, where: str = "train") -> None:
        if self.seed is None:
            # Frozen, but the one place that knows the stage (``where``): fill in the derived
            # seed once, so nodes, fingerprints and checkpoints all see the seed in use.
            object.__setattr__(self, "seed", resolve_seed(None, where))
        # epochs 0 is legal: a stage can be switched off (stage 4 in the original).
        _require(self.epochs >= 0, f"{where}.epochs must be ≥ 0, got {self.epochs}")
        _require(self.batch_size >= 1, f"{where}.batch_size must be ≥ 1, got {self.batch_size}")
        _require(self.accum_steps >= 1, f"{where}.accum_steps must be ≥ 1, got {self.accum_steps}")
        _require(
            self.grad_clip is None or self.grad_clip > 0,
            f"{where}.grad_clip must be > 0 or null, got {self.grad_clip}",
        )
        _require(
            self.ema_decay is None or 0.0 < self.ema_decay < 1.0,
            f"{where}.ema_decay must be in (0, 1) or null, got {self.ema_decay}",
        )
        _require(
            self.patience is None or self.patience >= 1,
            f"{where}.patience must be ≥ 1 or null, got {self.patience}",
        )
        _require(
            self.target_loss is None or math.isfinite(self.target_loss),
            f"{where}.target_loss must be a finite number or null, got {self.target_loss}",
        )
        _require(
            self.checkpoint_interval >= 0,
            f"{where}.checkpoint_interval must be ≥ 0 (0: none), got {self.checkpoint_interval}",
        )
        _require(
            self.device == "cpu" or self.device.startswith(("cuda", "mps")),
            f"{where}.device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {self.device!r}",
        )
        _require(
            self.eval_batch_size is None or self.eval_batch_size >= 1,
            f"{where}.eval_batch_size must be ≥ 1 or null, got {self.eval_batch_size}",
        )
        _require(self.num_workers >= 0, f"{where}.num_workers must be ≥ 0, got {self.num_workers}")
        self.optimizer.validate(f"{where}.optimizer")
        self.scheduler.validate(f"{where}.scheduler")
        self.distributed.validate(f"{where}.distributed")
        self.grad_health.validate(f"{where}.grad_health")
        self.divergence.validate(f"{where}.divergence")
        _require(
            self.num_threads is None or self.num_threads >= 1,
            f"{where}.num_threads must be ≥ 1 or null (automatic), got {self.num_threads}",
        )
        dist = self.distributed
        if dist.backend == "nccl":
            _require(
                self.device.startswith("cuda"),
                f"{where}.distributed.backend 'nccl' needs a CUDA device, but {where}.device is "
                f"{self.device!r} (use backend 'gloo' or 'auto' on CPU)",
            )
        if dist.nproc_per_node > 1:
            _require(
                self.device == "cpu" or self.device.startswith("cuda"),
                f"{where}.distributed.nproc_per_node > 1 needs device 'cpu' or 'cuda', got "
                f"{self.device!r}",
            )
            _require(
                not (dist.start_method == "fork" and self.device.startswith("cuda")),
                f"{where}.distributed.start_method 'fork' cannot be used with CUDA "
                f"({where}.device={self.device!r}); use 'spawn'",
            )
            _require(
                self.device in ("cpu", "cuda"),
                f"{where}.device must be 'cpu' or 'cuda' (each worker takes cuda:<rank>) when "
                f"{where}.distributed.nproc_per_node > 1, got {self.device!r}",
            )
