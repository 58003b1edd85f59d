"""Nodes of the ``evaluation`` pipeline: roll out, score, draw, report.

Protocol (PDEBench): from frame ``initial_step - 1`` of every trajectory of the chosen split,
each variant rolls out to the last frame feeding back its own predictions; every step is decoded
and compared with the truth in physical (de-normalised) units.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from ups_kedro.config import parse
from ups_kedro.data.steady import is_skipped, skip_reason
from ups_kedro.datasets.array_dataset import ArrayBundle
from ups_kedro.evaluation import report
from ups_kedro.evaluation.rollout_file import RolloutSet
from ups_kedro.evaluation.solver_reference import solver_spec
from ups_kedro.evaluation.steady import score_steady
from ups_kedro.evaluation.suite import calibrate_threshold, evaluate_surrogate
from ups_kedro.evaluation.surrogate import load_surrogate
from ups_kedro.pipelines.evaluation.config import EvaluationConfig
from ups_kedro.pipelines.tracking import log_metrics

logger = logging.getLogger(__name__)
STAGE = "evaluation"


def _config(params: dict[str, Any]) -> EvaluationConfig:
    return parse(EvaluationConfig, params, STAGE)


def pick_split(cfg: EvaluationConfig, fields_val: ArrayBundle,
               fields_test: ArrayBundle) -> tuple[np.ndarray, dict]:
    """The configured split's fields [B, T, *space, C] (first ``max_trajectories``) and meta."""
    bundle = {"val": fields_val, "test": fields_test}[cfg.split]
    n = bundle.array.shape[0] if cfg.max_trajectories is None else cfg.max_trajectories
    meta = dict(bundle.meta)
    if "indices" in meta:
        meta["indices"] = list(meta["indices"])[:n]
    return np.asarray(bundle.array[:n], dtype=np.float32), meta


def rollout_variants(fields_val: ArrayBundle, fields_test: ArrayBundle, raw_source: dict,
                     params: dict[str, Any], **checkpoints: dict | None) -> RolloutSet:
    """Decoded rollouts of persistence, the solver and every surrogate variant on one split.

    ``checkpoints``: ``{stage: checkpoint}`` of the transient surrogate (``ups_kedro.stages``).
    """
    cfg = _config(params)
    surrogate, notes = load_surrogate(checkpoints)
    fields, meta = pick_split(cfg, fields_val, fields_test)
    variants = cfg.variants
    gated = variants.gated
    if gated is not None and gated.residual_quantile is not None:
        threshold = calibrate_threshold(surrogate, np.asarray(fields_val.array),
                                        int(fields_val.meta["initial_step"]),
                                        gated.residual_quantile)
        notes.append(f"gated: residual_threshold {threshold:.4g} = quantile "
                     f"{gated.residual_quantile} of the validation latent change")
        variants = replace(variants, gated=replace(gated, residual_threshold=threshold,
                                                   residual_quantile=None))
    rollouts = evaluate_surrogate(surrogate, fields, meta, variants, solver_spec(raw_source))
    rollouts.notes[:0] = notes
    return rollouts


def score_evaluation(rollouts: RolloutSet, raw_source: dict,
                     params: dict[str, Any]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Metrics table (a row per variant) and nRMSE by horizon; logged as
    ``evaluation/<variant>/<metric>``."""
    _config(params)
    scores = report.score_rollouts(rollouts)
    table = report.metrics_table(scores, report.published_reference(raw_source))
    for variant, row in table.drop(index=report.REFERENCE_ROW, errors="ignore").iterrows():
        log_metrics(STAGE, {f"{variant}/{k}": v for k, v in row.items() if pd.notna(v)})
    for variant, row in table.iterrows():
        logger.info("evaluation (%s) %-32s nRMSE %.4g  h1 %.4g  last %.4g  %.3g ms/traj",
                    rollouts.split, variant, row["nrmse"], row.get("nrmse_h1", np.nan),
                    row.get("nrmse_last", np.nan), row.get("ms_per_trajectory", np.nan))
    return table, report.horizon_table(rollouts)


def _figure_variants(cfg: EvaluationConfig, table: pd.DataFrame,
                     rollouts: RolloutSet) -> list[str]:
    if cfg.figures.variants is not None:
        missing = sorted(set(cfg.figures.variants) - set(rollouts.predictions))
        if missing:
            raise ValueError(f"evaluation.figures.variants: {missing} were not rolled out; "
                             f"available: {sorted(rollouts.predictions)}")
        return list(cfg.figures.variants)
    others = [v for v in table.index if v in rollouts.predictions
              and v not in ("persistence", "operator", "solver")]
    return ["persistence", "operator", *others[:2]]


def render_report(rollouts: RolloutSet, table: pd.DataFrame, horizons: pd.DataFrame,
                  params: dict[str, Any]) -> tuple[Figure, Figure, Figure, str]:
    """Space-time images, error against horizon, energy spectra, and an HTML report of them."""
    cfg = _config(params)
    table = table.set_index("variant") if "variant" in table.columns else table
    variants = _figure_variants(cfg, table, rollouts)
    figures = {
        "truth vs prediction": report.spacetime_figure(rollouts, variants, cfg.figures.n_examples),
        "error against horizon": report.horizon_figure(horizons),
        "energy spectra": report.spectra_figure(rollouts, variants),
    }
    facts = {"split": rollouts.split, "trajectories": rollouts.truth.shape[0],
             "given frames": rollouts.initial_step, "rolled-out frames": rollouts.truth.shape[1],
             "time stride": rollouts.time_stride}
    html = report.html_report("ups-kedro evaluation", table, figures, facts, rollouts.notes)
    return (*figures.values(), html)


def evaluate_steady(steady_prior_checkpoint: dict | None,
                    steady_autoencoder_checkpoint: dict | None,
                    solutions_train: ArrayBundle, solutions_val: ArrayBundle,
                    solutions_test: ArrayBundle, coefficients_val: ArrayBundle,
                    coefficients_test: ArrayBundle, params: dict[str, Any]) -> dict:
    """Steady-field error of the Stage 4 prior on the split, by refinement step (if it ran).

    Logged as ``evaluation/steady_prior/<metric>``; a switched-off Stage 4 gives a skip record.
    """
    cfg = _config(params)
    if steady_prior_checkpoint is None or steady_autoencoder_checkpoint is None:
        logger.info("evaluation: steady prior skipped (its checkpoints are absent)")
        return {"skipped": True, "reason": "Stage 4 checkpoints absent: run `kedro run "
                "--pipeline steady_prior` to evaluate the steady prior"}
    records = (steady_prior_checkpoint, steady_autoencoder_checkpoint, solutions_train)
    skipped = [r for r in records if is_skipped(r)]
    if skipped:
        reason = skip_reason(skipped[0])
        logger.info("evaluation: steady prior skipped (%s)", reason)
        return {"skipped": True, "reason": reason}
    solutions, coefficients = {"val": (solutions_val, coefficients_val),
                               "test": (solutions_test, coefficients_test)}[cfg.split]
    scores = score_steady(steady_prior_checkpoint, steady_autoencoder_checkpoint,
                          solutions_train, solutions, coefficients,
                          cfg.variants.batch_size)
    by_step = scores.pop("nrmse_by_step")
    log_metrics(STAGE, {f"steady_prior/{k}": v for k, v in scores.items()})
    logger.info("evaluation (%s) steady prior: nRMSE %.4g (initial guess %.4g, mean field %.4g)"
                " by step %s", cfg.split, scores["nrmse"], scores["nrmse_initial_guess"],
                scores["nrmse_mean_field"], [round(v, 4) for v in by_step])
    return {"skipped": False, "split": cfg.split, **scores, "nrmse_by_step": by_step}
