"""Typed training parameters shared by every stage (the ``<stage>.train`` block).

Each stage's ``parameters_<stage>.yml`` holds a ``train:`` mapping that
:func:`ups_kedro.config.parse` turns into a :class:`TrainConfig`.  Every key has exactly one
default, here, and every bound is declared on its field (:func:`ups_kedro.config.bounded`): the
parser checks it and names the full key path (``operator.train.accum_steps must be ≥ 1, got 0``),
so a bad value fails before any training.  ``check(where)`` holds the checks between fields.

The learning rate's whole path: ``parameters_<stage>.yml`` → :class:`OptimizerConfig` (parsed
here) → :func:`ups_kedro.training.optim.build_optimizer` → ``torch.optim``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import ClassVar, Literal, get_args

from ups_kedro.config import Checked, ConfigError, bounded
from ups_kedro.training.seeds import resolve_seed

OptimizerName = Literal["adam", "adamw", "sgd"]
SchedulerName = Literal["none", "steplr", "cosineannealinglr", "reducelronplateau"]

OPTIMIZER_NAMES: tuple[str, ...] = get_args(OptimizerName)
SCHEDULER_NAMES: tuple[str, ...] = get_args(SchedulerName)
BackendName = Literal["auto", "gloo", "nccl"]
StartMethod = Literal["spawn", "fork"]


def _require(ok: bool, message: str) -> None:
    """Raise a :class:`ConfigError` (a ``ValueError``) with ``message`` unless ``ok``."""
    if not ok:
        raise ConfigError(message)


@dataclass(frozen=True)
class OptimizerConfig(Checked):
    """Optimizer choice and hyper-parameters.

    ``betas`` apply to adam/adamw, ``momentum`` to sgd; the others are ignored by design so that
    switching ``name`` needs no other edit.
    """

    WHERE: ClassVar[str] = "optimizer"

    name: OptimizerName = "adamw"
    lr: float = bounded(1e-3, gt=0)
    weight_decay: float = bounded(0.0, ge=0)
    betas: tuple[float, float] = bounded((0.9, 0.999), ge=0, lt=1)
    momentum: float = bounded(0.9, ge=0, lt=1)


@dataclass(frozen=True)
class SchedulerConfig(Checked):
    """Per-epoch learning-rate schedule, with an optional linear warm-up in front.

    ``steplr`` uses ``step_size``/``gamma``; ``cosineannealinglr`` uses ``t_max`` (``None``:
    the epochs left after warm-up) and ``eta_min``; ``reducelronplateau`` uses ``factor`` and
    ``patience`` and watches the validation loss.  ``warmup_epochs`` > 0 ramps the learning
    rate linearly from ``lr/(warmup_epochs+1)`` up to ``lr`` before the main schedule starts.
    """

    WHERE: ClassVar[str] = "scheduler"

    name: SchedulerName = "none"
    step_size: int = bounded(10, ge=1)
    gamma: float = bounded(0.5, gt=0, le=1)
    t_max: int | None = bounded(None, ge=1)
    eta_min: float = bounded(0.0, ge=0)
    factor: float = bounded(0.5, gt=0, lt=1)
    patience: int = bounded(3, ge=0)
    warmup_epochs: int = bounded(0, ge=0)


@dataclass(frozen=True)
class DistributedConfig(Checked):
    """Data-parallel training on one machine (``<stage>.train.distributed``).

    ``nproc_per_node`` > 1 makes :func:`ups_kedro.training.launcher.fit` start that many worker
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

    WHERE: ClassVar[str] = "distributed"

    nproc_per_node: int = bounded(1, ge=1)
    backend: BackendName = "auto"
    start_method: StartMethod = "spawn"
    threads_per_proc: int | None = bounded(None, ge=1)
    master_port: int = bounded(0, ge=0, le=65535, note="(0: any free port)")
    timeout_sec: float = bounded(600.0, gt=0)


@dataclass(frozen=True)
class GradHealthConfig(Checked):
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

    WHERE: ClassVar[str] = "grad_health"

    vanishing_norm: float | None = bounded(0.01, gt=0)
    vanishing_loss_ratio: float = bounded(0.5, gt=0, le=1)
    exploding_factor: float | None = bounded(10.0, ge=1)


@dataclass(frozen=True)
class DivergenceConfig(Checked):
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

    WHERE: ClassVar[str] = "divergence"

    max_ratio_to_best: float | None = bounded(10.0, gt=1)
    max_ratio_to_initial: float | None = bounded(2.0, gt=0)


@dataclass(frozen=True)
class TrainConfig(Checked):
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
    ``globals.yml`` (:mod:`ups_kedro.training.seeds`); :meth:`check` fills it in, so a parsed
    config always holds the integer actually used.  ``num_threads`` sets torch's intra-op
    threads for the stage (``null``: ``OMP_NUM_THREADS`` if set, else the idle cores, at most
    4; see :mod:`ups_kedro.training.threads`).  ``grad_health`` and ``divergence``: see
    :class:`GradHealthConfig`, :class:`DivergenceConfig`.
    """

    WHERE: ClassVar[str] = "train"

    # epochs 0 is legal: a stage can be switched off (stage 4 in the original).
    epochs: int = bounded(ge=0)
    batch_size: int = bounded(ge=1)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = field(default_factory=SchedulerConfig)
    accum_steps: int = bounded(1, ge=1)
    grad_clip: float | None = bounded(None, gt=0)
    ema_decay: float | None = bounded(None, gt=0, lt=1)
    ema_warmup: bool = True
    amp: bool = False
    compile: bool = False
    patience: int | None = bounded(None, ge=1)
    target_loss: float | None = None
    checkpoint_interval: int = bounded(0, ge=0, note="(0: none)")
    seed: int | None = None
    device: str = "cpu"
    progress: bool = True
    eval_batch_size: int | None = bounded(None, ge=1)
    num_workers: int = bounded(0, ge=0)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    num_threads: int | None = bounded(None, ge=1, note="(null: automatic)")
    grad_health: GradHealthConfig = field(default_factory=GradHealthConfig)
    divergence: DivergenceConfig = field(default_factory=DivergenceConfig)

    def check(self, where: str) -> None:
        if self.seed is None:
            # Frozen, but the one place that knows the stage (``where``): fill in the derived
            # seed once, so nodes, fingerprints and checkpoints all see the seed in use.
            object.__setattr__(self, "seed", resolve_seed(None, where))
        _require(
            self.target_loss is None or math.isfinite(self.target_loss),
            f"{where}.target_loss must be a finite number or null, got {self.target_loss}",
        )
        _require(
            self.device == "cpu" or self.device.startswith(("cuda", "mps")),
            f"{where}.device must be 'cpu', 'cuda', 'cuda:N' or 'mps', got {self.device!r}",
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


@dataclass(frozen=True)
class AutoencoderLossConfig(Checked):
    """Weights of the two autoencoder losses (:mod:`ups_kedro.training.autoencoder`).

    ``relative_floor``: ``None`` for a plain MSE reconstruction loss; a value > 0 makes it the
    per-sample relative error, with this RMS (normalised units) added to each sample's norm so
    near-zero frames cannot dominate.
    """

    WHERE: ClassVar[str] = "loss"

    lambda_inv_enc: float = bounded(1.0, gt=0)
    lambda_inv_dec: float = bounded(0.1, ge=0)
    relative_floor: float | None = bounded(None, gt=0)


@dataclass(frozen=True)
class OperatorLossConfig(Checked):
    """Loss weights and unrolling curriculum of Stage 1 (:mod:`ups_kedro.training.operator`)."""

    WHERE: ClassVar[str] = "loss"

    lambda_forward: float = bounded(1.0, ge=0)
    lambda_rollout: float = bounded(0.0, ge=0)
    rollout_horizon: int = bounded(1, ge=1)
    lambda_spectral: float = bounded(0.0, ge=0)
    lambda_inv_enc: float = bounded(0.0, ge=0)
    lambda_inv_dec: float = bounded(0.0, ge=0)
    inverse_loss_warmup_epochs: int = bounded(15, ge=0)
    inverse_loss_max_weight: float = bounded(0.05, ge=0)
    relative_floor: float | None = bounded(None, gt=0)
    input_noise: float = bounded(0.0, ge=0)
    rollout_warmup_epochs: int = bounded(0, ge=0)
    rollout_curriculum_epochs: int = bounded(0, ge=0)
    rollout_grad_steps: int | None = bounded(None, ge=1, note="(null: full back-propagation)")

    def check(self, where: str) -> None:
        _require(not (self.lambda_rollout > 0 and self.rollout_horizon < 2),
                 f"{where}.lambda_rollout > 0 needs {where}.rollout_horizon ≥ 2")
        _require(self.lambda_forward + self.lambda_rollout != 0,
                 f"{where}.lambda_forward and {where}.lambda_rollout cannot both be 0")

    @property
    def needs_fields(self) -> bool:
        """Whether batches must carry the physical target fields (``u_next``)."""
        return self.lambda_inv_enc > 0 or self.lambda_inv_dec > 0

    @property
    def horizon(self) -> int:
        """Future latents each batch must carry."""
        return self.rollout_horizon if self.lambda_rollout > 0 else 1

    def horizon_at(self, epoch: int | None) -> int:
        """Steps unrolled in training epoch ``epoch`` (≥ 1); ``None`` (validation): all of them.

        Epochs ``1 .. rollout_warmup_epochs`` train one step; after them the horizon grows
        linearly and reaches ``horizon`` at epoch ``warmup + rollout_curriculum_epochs + 1``
        (right after the warm-up when the curriculum is 0), then stays there.
        """
        full, warm, ramp = self.horizon, self.rollout_warmup_epochs, self.rollout_curriculum_epochs
        if epoch is None or full == 1:
            return full
        if epoch <= warm:
            return 1
        return min(full, 1 + ((epoch - warm) * (full - 1)) // (ramp + 1))
