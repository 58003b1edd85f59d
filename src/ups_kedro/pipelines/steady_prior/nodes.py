"""Nodes of the ``steady_prior`` pipeline (Stage 4) and steady-mode inference.

Data come from the ``data_processing`` pipeline (block ``data_processing.steady``): a built-in
Darcy problem (or a real PDEBench Darcy file) split into prepared solutions and coefficients
with a training-only normaliser (datasets ``data_processing.steady_*``).  This stage trains a
small autoencoder of the steady solution, and the SteadyPrior to carry the mean training latent
``z0`` to the encoded solution ``z*`` given conditioning tokens (normalised ``log nu`` and the
forcing).  Evaluation decodes the prediction after every refinement and scores it against the
solver's solution on validation, beside the decoded initial guess and the training-mean field.

The stage skips (every node writes a small ``skipped`` record instead of its artifact, and the
metrics say why) when ``steady_prior.train.epochs`` is 0, or when ``data_processing`` wrote
skipped records for the steady data (``data_processing.steady.enabled: false``); the latter is
logged as a warning, since the stage was asked to train.
:class:`SteadyPredictor` / :func:`predict_steady` are the inference entry points for later
stages.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from ups_kedro.config import ConfigError, follow_data, parse, to_dict
from ups_kedro.data.steady import (
    conditioning_fields,
    is_skipped,
    mean_field,
    skip_reason,
    skipped_record,
)
from ups_kedro.data.torch_data import FrameDataset, normaliser_tensors
from ups_kedro.datasets.array_dataset import ArrayBundle
from ups_kedro.evaluation import metrics
from ups_kedro.evaluation.rollout import reconstruct
from ups_kedro.models.registry import build_model
from ups_kedro.paths import project_root
from ups_kedro.pipelines.autoencoder.nodes import build_autoencoder
from ups_kedro.pipelines import stage_cache
from ups_kedro.pipelines.lineage import make_lineage, require_meta, require_same, tag_upstream
from ups_kedro.pipelines.steady_prior.config import SteadyPriorStageConfig
from ups_kedro.pipelines.tracking import epoch_logger, log_metrics, set_tags
from ups_kedro.training.artifacts import freeze, load_module, make_checkpoint, module_hash
from ups_kedro.training.autoencoder import AutoencoderTask
from ups_kedro.training.checkpoint import run_fingerprint
from ups_kedro.training.launcher import fit
from ups_kedro.training.steady import (
    SteadyLatentDataset,
    SteadyPriorTask,
    conditioning_tokens,
    mean_initial_guess,
)

logger = logging.getLogger(__name__)
STAGE = "steady_prior"
AE_STAGE = f"{STAGE}/autoencoder"   # its per-epoch metrics: steady_prior/autoencoder/<name>
SKIP_REASON = "steady_prior.train.epochs is 0: Stage 4 is switched off"
NO_DATA_REASON = "no steady data: data_processing wrote skipped records for it"


def _config(params: dict[str, Any]) -> SteadyPriorStageConfig:
    if isinstance(params, dict) and "data" in params:
        raise ConfigError("steady_prior.data has moved to data_processing.steady (the steady "
                          "data are prepared by the data_processing pipeline): move the block "
                          "there")
    return parse(SteadyPriorStageConfig, params, STAGE)


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run a block with ``n`` torch threads (None: unchanged), restoring the count afterwards."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ------------------------------------------------------------------------------------------------
# skipped-stage records
# ------------------------------------------------------------------------------------------------
def _skipped(what: str, reason: str) -> dict:
    return skipped_record(STAGE, what, reason)


def _skipped_checkpoint(what: str, reason: str) -> dict:
    """A checkpoint-shaped record that says the stage was off (no weights, nothing to load)."""
    return {"kind": "skipped", "config": {}, "state_dict": {}, **_skipped(what, reason),
            "lineage": make_lineage(STAGE, {"skipped": True})}


def _skip(cfg: SteadyPriorStageConfig, data: dict[str, Any], own: dict[str, Any] | None = None,
          announce: bool = False) -> str | None:
    """Why this node skips (None: it runs).

    Args:
        data: the node's ``data_processing.steady_*`` inputs; all skipped records (the steady
            data were switched off) → skip.
        own: the node's inputs written by this stage; a skipped one while the stage is on and
            the data exist is a partial re-run of a skipped stage → ``ValueError``.
        announce: log the skip and tag the MLflow run (the first node of the stage).
    """
    if not cfg.enabled:
        reason = SKIP_REASON
        if announce:
            logger.info("steady_prior: skipped (%s)", reason)
    else:
        missing = [name for name, record in data.items() if is_skipped(record)]
        if missing and len(missing) < len(data):
            raise ValueError(
                f"steady_prior: {', '.join(missing)} are 'skipped' records but "
                f"{', '.join(sorted(set(data) - set(missing)))} are not: the steady data come "
                "from two data_processing runs; re-run `kedro run --pipeline data_processing "
                "--tags steady`")
        if not missing:
            stale = [name for name, record in (own or {}).items() if is_skipped(record)]
            if stale:
                raise ValueError(
                    f"steady_prior: {', '.join(stale)} were written by a run with the stage "
                    "skipped; re-run the whole stage: `kedro run --pipeline steady_prior`")
            return None
        reason = f"{NO_DATA_REASON} ({skip_reason(data[missing[0]]) or 'skipped records'})"
        if announce:
            logger.warning(
                "steady_prior: SKIPPED although steady_prior.train.epochs is %d: %s. Set "
                "data_processing.steady.enabled: true and run `kedro run --pipeline "
                "data_processing --tags steady`, or set steady_prior.train.epochs: 0 to switch "
                "Stage 4 off.", cfg.train.epochs, reason)
    if announce:
        set_tags({"ups.steady_prior.skipped": "true", "ups.steady_prior.skip_reason": reason})
    return reason


# ------------------------------------------------------------------------------------------------
# (2) the autoencoder of the steady solution
# ------------------------------------------------------------------------------------------------
def _check_split(normaliser: dict, *bundles: ArrayBundle) -> str:
    """The split-manifest hash every input shares (refuses a mix of two data runs)."""
    return require_meta("split_manifest_hash", normaliser["split_manifest_hash"], bundles,
                        "split manifest",
                        "Re-run `kedro run --pipeline data_processing --tags steady` so data and "
                        "normaliser agree.")


def train_steady_autoencoder(solutions_train: ArrayBundle, solutions_val: ArrayBundle,
                             normaliser: dict, params: dict[str, Any]) -> dict:
    """Train the autoencoder of the steady solution; the checkpoint carries its encoder hash."""
    cfg = _config(params)
    reason = _skip(cfg, {"solutions_train": solutions_train, "solutions_val": solutions_val,
                         "normaliser": normaliser}, announce=True)
    if reason:
        return _skipped_checkpoint("autoencoder_checkpoint", reason)
    manifest_hash = _check_split(normaliser, solutions_train, solutions_val)
    ae_cfg = cfg.autoencoder.stage_config()
    if (ckpt := stage_cache.reuse(AE_STAGE, ae_cfg, project_root() / cfg.state_dir / "autoencoder",
                                  {"solutions_train": solutions_train, "solutions_val":
                                   solutions_val, "normaliser": normaliser}, force=cfg.force)):
        return ckpt
    with torch_threads(cfg.torch_threads):
        torch.manual_seed(ae_cfg.train.seed)
        model = build_autoencoder(ae_cfg, solutions_train.array.shape)
        mean, std = normaliser_tensors(normaliser)
        tag_upstream(AE_STAGE, split_manifest=manifest_hash)
        result = fit(
            model, AutoencoderTask(ae_cfg.loss, mean, std),
            FrameDataset(solutions_train.array, normaliser),
            FrameDataset(solutions_val.array, normaliser), ae_cfg.train, stage=AE_STAGE,
            state_dir=project_root() / cfg.state_dir / "autoencoder",
            fingerprint=run_fingerprint(ae_cfg, manifest_hash),
            on_epoch_end=epoch_logger(AE_STAGE))
    ckpt = make_checkpoint(
        model, result, train_config=ae_cfg.train, normaliser=normaliser,
        lineage=make_lineage(AE_STAGE, ae_cfg, split_manifest_hash=manifest_hash,
                             source_fingerprint=solutions_train.meta["source_fingerprint"]),
        extra={"fields_meta": {k: solutions_train.meta[k] for k in
                               ("axes", "channels", "coords", "beta")}})
    ckpt["lineage"]["encoder_hash"] = module_hash(load_module(ckpt).encoder)
    logger.info("steady_prior autoencoder: best epoch %d, val loss %.3e, encoder hash %s",
                result.best_epoch, result.best_val_loss, ckpt["lineage"]["encoder_hash"])
    return ckpt


# ------------------------------------------------------------------------------------------------
# (3) the steady prior
# ------------------------------------------------------------------------------------------------
@torch.no_grad()
def encode_solutions(autoencoder, solutions: np.ndarray, normaliser: dict,
                     batch_size: int = 256) -> torch.Tensor:
    """``z* [n, N, D]`` of physical solutions ``[n, 1, X, Y, C]`` (or ``[n, X, Y, C]``)."""
    mean, std = normaliser_tensors(normaliser)
    n = solutions.shape[0]
    out = []
    for start in range(0, n, batch_size):
        u = torch.from_numpy(np.asarray(solutions[start:start + batch_size], dtype=np.float32))
        u = u.reshape(u.shape[0], *u.shape[-3:])  # drop the single time axis
        out.append(autoencoder.encode((u - mean) / std))
    return torch.cat(out)


def steady_conditioning(nu: np.ndarray, beta: float | np.ndarray, normaliser: dict,
                        latent_tokens: int) -> torch.Tensor:
    """Conditioning tokens ``[n, N, Cc]`` of coefficient fields and forcing(s)."""
    fields = conditioning_fields(nu, beta, normaliser)
    side = round(latent_tokens ** 0.5)
    if side * side != latent_tokens or any(n % side for n in fields.shape[1:3]):
        raise ConfigError(
            f"steady_prior.autoencoder.latent.tokens={latent_tokens} must be a square whose "
            f"root divides the grid {tuple(fields.shape[1:3])}: the conditioning is cut into "
            "the same token grid")
    return conditioning_tokens(torch.from_numpy(fields), latent_tokens)


def build_steady_prior(cfg: SteadyPriorStageConfig, latent_tokens: int, latent_dim: int,
                       cond_dim: int):
    """An untrained SteadyPrior sized from the parameters and the latent/conditioning layout."""
    return build_model("steady_prior", follow_data(
        cfg.model, f"{STAGE}.model", latent_dim=latent_dim, latent_tokens=latent_tokens,
        cond_dim=cond_dim))


def train_steady_prior(
    autoencoder_checkpoint: dict, solutions_train: ArrayBundle, solutions_val: ArrayBundle,
    coefficients_train: ArrayBundle, coefficients_val: ArrayBundle, normaliser: dict,
    params: dict[str, Any],
) -> dict:
    """Train the prior z0 → z* on encoded steady solutions; the checkpoint stores z0."""
    cfg = _config(params)
    reason = _skip(cfg, {"solutions_train": solutions_train, "solutions_val": solutions_val,
                         "coefficients_train": coefficients_train,
                         "coefficients_val": coefficients_val, "normaliser": normaliser},
                   {"autoencoder_checkpoint": autoencoder_checkpoint})
    if reason:
        return _skipped_checkpoint("checkpoint", reason)
    if (ckpt := stage_cache.reuse(STAGE, cfg, project_root() / cfg.state_dir / "prior", {
            "autoencoder": autoencoder_checkpoint, "solutions_train": solutions_train,
            "solutions_val": solutions_val, "coefficients_train": coefficients_train,
            "coefficients_val": coefficients_val, "normaliser": normaliser})):
        return ckpt
    manifest_hash = _check_split(normaliser, solutions_train, solutions_val, coefficients_train,
                                 coefficients_val)
    lineage = autoencoder_checkpoint["lineage"]
    require_same("split manifest of the autoencoder", manifest_hash,
                 lineage.get("split_manifest_hash"),
                 "The steady autoencoder was trained on another split: re-run the pipeline.")
    encoder_hash = lineage["encoder_hash"]
    autoencoder = freeze(load_module(autoencoder_checkpoint))
    require_same("encoder", encoder_hash, module_hash(autoencoder.encoder),
                 "The steady autoencoder checkpoint is corrupt or was edited.")
    tokens = autoencoder.cfg.encoder.latent_tokens
    batch = cfg.autoencoder.encode_batch_size
    with torch_threads(cfg.torch_threads):
        z_train = encode_solutions(autoencoder, solutions_train.array, normaliser, batch)
        z_val = encode_solutions(autoencoder, solutions_val.array, normaliser, batch)
        cond_train = steady_conditioning(coefficients_train.array, coefficients_train.meta["beta"],
                                         normaliser, tokens)
        cond_val = steady_conditioning(coefficients_val.array, coefficients_val.meta["beta"],
                                       normaliser, tokens)
        z0 = mean_initial_guess(z_train)  # training split only; stored for inference
        torch.manual_seed(cfg.train.seed)
        prior = build_steady_prior(cfg, tokens, int(z_train.shape[-1]), int(cond_train.shape[-1]))
        tag_upstream(STAGE, encoder_hash=encoder_hash, split_manifest=manifest_hash,
                     autoencoder_run=lineage.get("mlflow_run_id"))
        result = fit(
            prior, SteadyPriorTask(cfg.loss.lambda_intermediate),
            SteadyLatentDataset(z_train, cond_train, z0), SteadyLatentDataset(z_val, cond_val, z0),
            cfg.train, stage=STAGE, state_dir=project_root() / cfg.state_dir / "prior",
            fingerprint=run_fingerprint(
                {"model": to_dict(cfg.model), "loss": to_dict(cfg.loss)},
                f"{encoder_hash}|{manifest_hash}"),
            on_epoch_end=epoch_logger(STAGE))
    ckpt = make_checkpoint(
        prior, result, train_config=cfg.train, normaliser=normaliser,
        lineage=make_lineage(STAGE, cfg, encoder_hash=encoder_hash,
                             split_manifest_hash=manifest_hash,
                             source_fingerprint=solutions_train.meta["source_fingerprint"],
                             autoencoder_run_id=lineage.get("mlflow_run_id")),
        extra={"z0": z0.clone(), "grid_shape": list(autoencoder.cfg.encoder.grid_shape),
               "beta": float(coefficients_train.meta["beta"])})
    logger.info("steady_prior: best epoch %d, val loss %.3e (encoder %s)", result.best_epoch,
                result.best_val_loss, encoder_hash)
    return ckpt


# ------------------------------------------------------------------------------------------------
# inference in steady mode
# ------------------------------------------------------------------------------------------------
class SteadyPredictor:
    """Steady-mode inference: conditioning (+ optional initial guess) → decoded steady field.

    Build it once with :meth:`from_checkpoints`; every output is physical and channels-last.
    """

    def __init__(self, prior, autoencoder, z0: torch.Tensor, normaliser: dict,
                 beta: float) -> None:
        self.prior, self.autoencoder = freeze(prior), freeze(autoencoder)
        self.z0, self.normaliser, self.beta = z0.float(), normaliser, float(beta)
        self.mean, self.std = normaliser_tensors(normaliser)
        self.tokens = autoencoder.cfg.encoder.latent_tokens
        self.num_steps = prior.cfg.num_steps

    @classmethod
    def from_checkpoints(cls, prior_checkpoint: dict, autoencoder_checkpoint: dict
                         ) -> SteadyPredictor:
        skipped = [c for c in (prior_checkpoint, autoencoder_checkpoint) if is_skipped(c)]
        if skipped:
            raise ValueError(
                f"no steady prior to run: Stage 4 was skipped when it was written "
                f"({skip_reason(skipped[0])}); set steady_prior.train.epochs > 0 (with "
                "data_processing.steady.enabled: true) and re-run the pipelines")
        require_same("encoder", autoencoder_checkpoint["lineage"]["encoder_hash"],
                     prior_checkpoint["lineage"]["encoder_hash"],
                     "The steady prior was trained on another autoencoder's latents: re-run it.")
        return cls(load_module(prior_checkpoint), load_module(autoencoder_checkpoint),
                   prior_checkpoint["z0"], prior_checkpoint["normaliser"],
                   prior_checkpoint["beta"])

    def _decode(self, z: torch.Tensor) -> np.ndarray:
        return (self.autoencoder.decode(z) * self.std + self.mean).numpy()

    @torch.no_grad()
    def latent_trajectory(self, nu: np.ndarray, beta: float | np.ndarray | None = None,
                          initial_guess: np.ndarray | None = None) -> torch.Tensor:
        """Latent states ``[n, num_steps + 1, N, D]`` (``[:, 0]`` is the initial guess).

        Args:
            nu: coefficient fields ``[n, X, Y]`` or ``[n, X, Y, 1]``.
            beta: forcing (scalar or ``[n]``); default: the training forcing.
            initial_guess: optional physical field ``[n, X, Y, C]`` (or ``[n, 1, X, Y, C]``),
                encoded as ``z0``; default: the training-mean latent.
        """
        cond = steady_conditioning(nu, self.beta if beta is None else beta, self.normaliser,
                                   self.tokens)
        if initial_guess is None:
            z0 = self.z0.expand(cond.shape[0], -1, -1)
        else:
            z0 = encode_solutions(self.autoencoder, np.asarray(initial_guess), self.normaliser)
        return self.prior.trajectory(z0, cond)

    @torch.no_grad()
    def trajectory(self, nu: np.ndarray, beta: float | np.ndarray | None = None,
                   initial_guess: np.ndarray | None = None, batch_size: int = 64) -> np.ndarray:
        """Decoded fields after 0..num_steps refinements: ``[n, num_steps + 1, X, Y, C]``."""
        out = []
        beta_arr = np.broadcast_to(np.asarray(self.beta if beta is None else beta,
                                              dtype=np.float64).reshape(-1), (len(nu),))
        for start in range(0, len(nu), batch_size):
            sl = slice(start, start + batch_size)
            states = self.latent_trajectory(
                nu[sl], beta_arr[sl], None if initial_guess is None else initial_guess[sl])
            b, s = states.shape[:2]
            out.append(self._decode(states.reshape(b * s, *states.shape[2:]))
                       .reshape(b, s, *self.autoencoder.cfg.encoder.grid_shape, -1))
        return np.concatenate(out)

    @torch.no_grad()
    def predict(self, nu: np.ndarray, beta: float | np.ndarray | None = None,
                initial_guess: np.ndarray | None = None, steps: int | None = None) -> np.ndarray:
        """The decoded steady field ``[n, X, Y, C]`` after ``steps`` (default all) refinements."""
        steps = self.num_steps if steps is None else steps
        if not 0 <= steps <= self.num_steps:
            raise ValueError(f"steps must be in 0..{self.num_steps}, got {steps}")
        return self._decode(self.latent_trajectory(nu, beta, initial_guess)[:, steps])


def predict_steady(prior_checkpoint: dict, autoencoder_checkpoint: dict, nu: np.ndarray,
                   beta: float | np.ndarray | None = None,
                   initial_guess: np.ndarray | None = None,
                   steps: int | None = None) -> np.ndarray:
    """One-call steady-mode inference (see :class:`SteadyPredictor`): ``[n, X, Y, C]``."""
    predictor = SteadyPredictor.from_checkpoints(prior_checkpoint, autoencoder_checkpoint)
    return predictor.predict(nu, beta, initial_guess, steps)


# ------------------------------------------------------------------------------------------------
# (4) evaluation
# ------------------------------------------------------------------------------------------------
def _nrmse(pred: np.ndarray, truth: np.ndarray) -> float:
    """Mean PDEBench nRMSE of steady fields ``[n, 1, X, Y, C]`` (T = 1)."""
    return float(metrics.nrmse(pred, truth).mean())


def score_steady(checkpoint: dict, autoencoder_checkpoint: dict, solutions_train: ArrayBundle,
                 solutions: ArrayBundle, coefficients: ArrayBundle, batch_size: int = 64,
                 threads: int | None = None) -> dict[str, Any]:
    """Decoded steady-field nRMSE on one split after each refinement, beside the baselines.

    Keys: ``nrmse`` (all refinements), ``nrmse_step_k``, ``nrmse_by_step`` (list, k = 0 is the
    initial guess), ``nrmse_initial_guess``, ``nrmse_mean_field`` (training-mean field),
    ``recon_nrmse`` (the autoencoder's floor), ``gain_vs_*``, ``n`` (samples).
    """
    predictor = SteadyPredictor.from_checkpoints(checkpoint, autoencoder_checkpoint)
    truth = np.asarray(solutions.array, dtype=np.float32)  # [n, 1, X, Y, C]
    with torch_threads(threads):
        fields = predictor.trajectory(np.asarray(coefficients.array), coefficients.meta["beta"],
                                      batch_size=batch_size)  # [n, S+1, X, Y, C]
        recon = reconstruct(truth, predictor.normaliser, predictor.autoencoder.encode,
                            predictor.autoencoder.decode, batch_size)
    by_step = [_nrmse(fields[:, k:k + 1], truth) for k in range(fields.shape[1])]
    baseline_mean = _nrmse(np.broadcast_to(mean_field(solutions_train.array), truth.shape), truth)
    return {
        "nrmse": by_step[-1],
        "nrmse_initial_guess": by_step[0],
        "nrmse_mean_field": baseline_mean,
        "recon_nrmse": _nrmse(recon, truth),
        **{f"nrmse_step_{k}": v for k, v in enumerate(by_step) if k > 0},
        "gain_vs_initial_guess": by_step[0] / max(by_step[-1], 1e-12),
        "gain_vs_mean_field": baseline_mean / max(by_step[-1], 1e-12),
        "nrmse_by_step": by_step,
        "n": int(truth.shape[0]),
    }


def evaluate_steady_prior(checkpoint: dict, autoencoder_checkpoint: dict,
                          solutions_train: ArrayBundle, solutions_val: ArrayBundle,
                          coefficients_val: ArrayBundle, params: dict[str, Any]) -> dict:
    """Decoded val nRMSE after each refinement, beside the initial guess and the mean field."""
    cfg = _config(params)
    reason = _skip(cfg, {"solutions_train": solutions_train, "solutions_val": solutions_val,
                         "coefficients_val": coefficients_val},
                   {"checkpoint": checkpoint, "autoencoder_checkpoint": autoencoder_checkpoint})
    if reason:
        return _skipped("metrics", reason)
    scores = score_steady(checkpoint, autoencoder_checkpoint, solutions_train, solutions_val,
                          coefficients_val, cfg.eval.batch_size, cfg.torch_threads)
    by_step = scores.pop("nrmse_by_step")
    out: dict[str, Any] = {f"val_{k}": v for k, v in scores.items() if k != "n"}
    log_metrics(STAGE, out)
    for k, v in enumerate(by_step):  # the error-vs-refinement curve as one MLflow series
        log_metrics(STAGE, {"val_nrmse_by_step": v}, step=k)
    logger.info("steady_prior (val, %d samples): nRMSE %.4g after %d steps; initial guess %.4g, "
                "mean field %.4g, reconstruction floor %.4g; by step %s", scores["n"],
                by_step[-1], len(by_step) - 1, by_step[0], out["val_nrmse_mean_field"],
                out["val_recon_nrmse"],
                [round(v, 4) for v in by_step])
    return {**out, "skipped": False, "num_steps": len(by_step) - 1, "n_val": scores["n"],
            "nrmse_by_step": by_step, "encoder_hash": checkpoint["lineage"]["encoder_hash"]}
