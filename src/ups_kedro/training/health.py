"""Per-epoch health checks of a training run: gradient health and divergence.

Both read only the epoch's metrics (and the untrained network's validation loss), so they
run the same in every process layout and on a resumed run.

* :func:`grad_health` flags *vanishing* and *exploding* gradients (see
  :class:`~ups_kedro.training.config.GradHealthConfig`): it returns the 0/1 metrics
  ``grad_vanishing`` / ``grad_exploding`` for the epoch and logs a warning naming the stage
  and the epoch.  The tracking callback turns a flag into an MLflow tag.
* :func:`check_divergence` / :func:`check_final` raise :class:`DivergenceError` when the
  selection loss is far above its best or the best never beat the untrained network, so the
  node fails and its checkpoint is never published.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence

from ups_kedro.training.config import DivergenceConfig, TrainConfig

logger = logging.getLogger(__name__)

VANISHING = "grad_vanishing"
EXPLODING = "grad_exploding"


def train_key(stage: str, cfg: TrainConfig) -> str:
    """The key path of ``cfg`` in the parameters, for messages: where the parser found it
    (e.g. ``<stage>.corrector.train``), else ``<stage>.train``."""
    return getattr(cfg, "_checked_as", None) or f"{stage}.train"


class DivergenceError(RuntimeError):
    """The run diverged; nothing is published (the previous checkpoint stays)."""

    def __init__(self, stage: str, epoch: int, reason: str, cfg: TrainConfig) -> None:
        self.stage, self.epoch = stage, epoch
        lr, key = cfg.optimizer.lr, train_key(stage, cfg)
        clip = f" or set {key}.grad_clip" if cfg.grad_clip is None else ""
        super().__init__(
            f"stage {stage!r} diverged at epoch {epoch}: {reason}. The published checkpoint "
            f"was not replaced. Lower {key}.optimizer.lr (now {lr:g}){clip}, then "
            f"re-run; to accept such a run anyway, set {key}.divergence."
            "max_ratio_to_best / max_ratio_to_initial to null"
        )


def grad_health(
    stage: str,
    epoch: int,
    metrics: Mapping[str, float],
    history: Sequence[Mapping[str, float]],
    cfg: TrainConfig,
) -> dict[str, float]:
    """``{grad_vanishing, grad_exploding}`` (0.0/1.0) for this epoch; warns on each flag.

    Args:
        metrics: this epoch's metrics (``grad_norm``: mean pre-clip norm, ``loss``).
        history: the metrics of the epochs before this one (the first gives the loss that
            "has not learned yet" is judged against).
    """
    health = cfg.grad_health
    norm, loss = float(metrics["grad_norm"]), float(metrics["loss"])
    first_loss = float(history[0]["loss"]) if history else loss
    vanishing = (
        health.vanishing_norm is not None
        and norm < health.vanishing_norm
        and not loss <= health.vanishing_loss_ratio * first_loss  # also true for NaN
    )
    exploding = (
        health.exploding_factor is not None
        and cfg.grad_clip is not None
        and norm > health.exploding_factor * cfg.grad_clip
    )
    if vanishing:
        logger.warning(
            "stage %r epoch %d: vanishing gradients: mean pre-clip norm %.3g < %s."
            "grad_health.vanishing_norm %.3g while the training loss (%.4g) is still above "
            "%.2g x the first epoch's (%.4g); the stage is not learning: check that its loss "
            "depends on the trained parameters and its learning rate",
            stage, epoch, norm, train_key(stage, cfg), health.vanishing_norm, loss,
            health.vanishing_loss_ratio, first_loss,
        )
    if exploding:
        logger.warning(
            "stage %r epoch %d: exploding gradients: mean pre-clip norm %.3g > %.3g x "
            "grad_clip %.3g; every step is clipped, so the loss scale or learning rate is "
            "off: rescale the loss or lower %s.optimizer.lr",
            stage, epoch, norm, health.exploding_factor, cfg.grad_clip, train_key(stage, cfg),
        )
    return {VANISHING: float(vanishing), EXPLODING: float(exploding)}


def check_divergence(
    stage: str,
    epoch: int,
    selection: float,
    best: float,
    best_epoch: int,
    initial: float | None,
    cfg: TrainConfig,
    what: str = "validation loss",
) -> None:
    """Raise :class:`DivergenceError` if this epoch's selection loss is far above its best.

    ``best``/``best_epoch``: the best selection loss *before* this epoch (``inf``/0: none);
    ``initial``: the untrained network's validation loss (``None``: not measured); ``what``
    names the selection loss in the message.
    """
    div: DivergenceConfig = cfg.divergence
    if not math.isfinite(selection):
        raise DivergenceError(stage, epoch, f"{what} is {selection}", cfg)
    if div.max_ratio_to_best is None:
        return
    refs = [(best, f"its best ({best:.4g} at epoch {best_epoch})")] if best_epoch else []
    if initial is not None:
        refs.append((initial, f"the untrained network's ({initial:.4g})"))
    finite = [(v, text) for v, text in refs if math.isfinite(v) and v > 0]
    if not finite:
        return
    ref, text = min(finite, key=lambda r: r[0])
    if selection > div.max_ratio_to_best * ref:
        raise DivergenceError(
            stage, epoch,
            f"{what} {selection:.4g} is {selection / ref:.3g}x {text}, above "
            f"{train_key(stage, cfg)}.divergence.max_ratio_to_best = {div.max_ratio_to_best:g}",
            cfg,
        )


def check_final(
    stage: str, best: float, best_epoch: int, initial: float | None, cfg: TrainConfig
) -> None:
    """Raise :class:`DivergenceError` if the best epoch is no better than the untrained net."""
    ratio = cfg.divergence.max_ratio_to_initial
    if ratio is None or initial is None or not math.isfinite(initial) or best_epoch == 0:
        return
    if not best <= ratio * initial:
        raise DivergenceError(
            stage, best_epoch,
            f"its best validation loss {best:.4g} (epoch {best_epoch}) is not below "
            f"{train_key(stage, cfg)}.divergence.max_ratio_to_initial = {ratio:g} x the untrained "
            f"network's ({initial:.4g}): training made the model worse",
            cfg,
        )
