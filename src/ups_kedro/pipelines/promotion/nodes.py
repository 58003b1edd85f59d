"""Nodes of ``promotion``: small validation evaluation → gate → full test evaluation → gate →
register in the MLflow Model Registry and move the ``champion`` alias; then the leaderboard.

Like with like: at each gate the current champion (loaded back from the registry) is re-scored
on exactly the candidate's trajectories with the same protocol, so a change of data or protocol
can never make a stale stored number look better or worse.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from typing import Any

import mlflow
import numpy as np
import pandas as pd

from ups_kedro.config import parse, to_dict
from ups_kedro.datasets.array_dataset import ArrayBundle
from ups_kedro.evaluation import metrics
from ups_kedro.evaluation.gates import GateParams, decide, pick_candidate
from ups_kedro.evaluation.suite import VariantParams, evaluate_surrogate
from ups_kedro.evaluation.surrogate import load_surrogate, present_checkpoints
from ups_kedro.pipelines.promotion.config import PromotionConfig
from ups_kedro.pipelines.tracking import active_run_id, log_metrics, set_tags
from ups_kedro.serving.registry import load_registered, register

logger = logging.getLogger(__name__)
STAGE = "promotion"


def _config(params: dict[str, Any]) -> PromotionConfig:
    return parse(PromotionConfig, params, STAGE)


def _nrmse(fields: np.ndarray, meta: dict, checkpoints: dict[str, dict | None],
           cfg: PromotionConfig, only: set[str] | None = None) -> dict[str, float]:
    """``{variant: nRMSE}`` (PDEBench, decoded, physical units) of a surrogate on ``fields``."""
    surrogate, notes = load_surrogate(checkpoints)
    rs = evaluate_surrogate(surrogate, fields, meta, cfg.variants, only=only)
    for note in notes + rs.notes:
        logger.info("promotion: %s", note)
    return {name: float(metrics.nrmse(pred, rs.truth).mean())
            for name, pred in rs.predictions.items()}


def _gate(name: str, bundle: ArrayBundle, n: int | None, checkpoints: dict[str, dict | None],
          cfg: PromotionConfig, gate: GateParams, variant: str | None = None) -> dict:
    fields = np.asarray(bundle.array[:n], dtype=np.float32)
    candidate = _nrmse(fields, bundle.meta, checkpoints, cfg)
    variant = variant or pick_candidate(candidate, cfg.variant)
    champion = load_registered(cfg.model_name, cfg.alias)
    champion_scores = None
    if champion is not None:
        try:
            champion_scores = _nrmse(fields, bundle.meta, champion.checkpoints,
                                     replace(cfg, variants=parse(VariantParams, VariantParams.upgrade(
                                         champion.variant_params), "")),
                                     only={champion.variant})
        except Exception as exc:  # e.g. another grid: not comparable, so no silent pass
            raise ValueError(
                f"promotion: the champion ({cfg.model_name} v{champion.version}) cannot be scored "
                f"on this data ({exc}); promote under another promotion.model_name") from exc
    decision = decide(name, candidate, variant, gate, champion_scores,
                      champion.variant if champion else None)
    record = {**decision.to_dict(), "split": bundle.meta.get("split"),
              "trajectories": int(fields.shape[0]), "candidate_scores": candidate,
              "champion_version": champion.version if champion else None}
    log_metrics(STAGE, {f"{name}/candidate_nrmse": decision.candidate_nrmse,
                        f"{name}/passed": float(decision.passed),
                        **({f"{name}/champion_nrmse": decision.champion_nrmse}
                           if champion else {})})
    logger.info("promotion %s gate (%s, %d trajectories): %s — %s; %s", name,
                record["split"], record["trajectories"], "PASS" if decision.passed else "FAIL",
                decision.rule, "; ".join(decision.reasons) or
                f"{variant} nRMSE {decision.candidate_nrmse:.4g}")
    return record


def gate_on_validation(fields_val: ArrayBundle, params: dict[str, Any],
                       **checkpoints: dict | None) -> dict:
    """Small evaluation (the first ``val_trajectories`` of validation), gated vs the champion.

    ``checkpoints``: ``{stage: checkpoint}`` of the transient surrogate (``ups_kedro.stages``).
    """
    cfg = _config(params)
    return _gate("validation", fields_val, cfg.val_trajectories, checkpoints, cfg,
                 cfg.validation_gate)


def gate_on_test(validation_gate: dict, fields_test: ArrayBundle, params: dict[str, Any],
                 **checkpoints: dict | None) -> dict:
    """Full test-split evaluation of the variant chosen on validation, gated again."""
    cfg = _config(params)
    if not validation_gate["passed"]:
        return {"gate": "test", "passed": False, "skipped": True,
                "reasons": ["validation gate failed: test evaluation not run"]}
    return _gate("test", fields_test, None, checkpoints, cfg, cfg.test_gate,
                 variant=validation_gate["candidate_variant"])


def register_champion(validation_gate: dict, test_gate: dict, fields_val: ArrayBundle,
                      params: dict[str, Any], **checkpoints: dict | None) -> dict:
    """Register the candidate and move the alias when both gates passed; record the decision.

    The model's input example is the first frame of two validation trajectories [2, *space, C];
    its artifacts are the present checkpoints (absent or switched-off correctors left out).
    """
    cfg = _config(params)
    promoted = bool(validation_gate["passed"] and test_gate["passed"])
    decision = {"promoted": promoted, "model_name": cfg.model_name, "alias": cfg.alias,
                "variant": validation_gate["candidate_variant"],
                "validation": validation_gate, "test": test_gate, "version": None,
                "run_id": active_run_id()}
    if promoted:
        operator_lineage = checkpoints["operator"]["lineage"]
        decision["version"] = register(
            present_checkpoints(checkpoints), decision["variant"], to_dict(cfg.variants),
            cfg.model_name, cfg.alias,
            tags={"ups.variant": decision["variant"],
                  "ups.test_nrmse": f"{test_gate['candidate_nrmse']:.6g}",
                  "ups.validation_nrmse": f"{validation_gate['candidate_nrmse']:.6g}",
                  "ups.test_trajectories": str(test_gate["trajectories"]),
                  "ups.split_manifest_hash": str(operator_lineage.get("split_manifest_hash")),
                  "ups.encoder_hash": operator_lineage["encoder_hash"]},
            example=np.asarray(fields_val.array[:2, 0], dtype=np.float32))
    reasons = test_gate["reasons"] or validation_gate["reasons"]
    set_tags({"ups.promotion.variant": decision["variant"],
              "ups.promotion.decision": "promoted" if promoted else "rejected",
              "ups.promotion.reasons": "; ".join(reasons)[:4000] or "all gates passed",
              "ups.promotion.version": str(decision["version"])})
    log_metrics(STAGE, {"promoted": float(promoted)})
    logger.info("promotion: %s (%s)", f"registered {cfg.model_name} v{decision['version']} as "
                f"@{cfg.alias}" if promoted else "rejected", "; ".join(reasons) or "all passed")
    return decision


LEADERBOARD_COLUMNS = {
    "run_id": "run_id", "start_time": "start_time", "tags.ups.git_commit": "git_commit",
    "tags.ups.promotion.variant": "variant", "tags.ups.promotion.decision": "decision",
    "tags.ups.promotion.version": "version",
    "metrics.promotion/validation/candidate_nrmse": "validation_nrmse",
    "metrics.promotion/validation/champion_nrmse": "validation_champion_nrmse",
    "metrics.promotion/test/candidate_nrmse": "test_nrmse",
    "metrics.promotion/test/champion_nrmse": "test_champion_nrmse",
    "tags.ups.promotion.reasons": "reasons",
}


def build_leaderboard(decision: dict, params: dict[str, Any]) -> pd.DataFrame:
    """Every promotion attempt of this experiment (MLflow run search), best test nRMSE first."""
    _config(params)
    run = mlflow.active_run()
    if run is None:  # tracking off: the leaderboard is this attempt alone
        return pd.DataFrame([{"run_id": None, "variant": decision["variant"],
                              "decision": "promoted" if decision["promoted"] else "rejected",
                              "test_nrmse": decision["test"].get("candidate_nrmse")}])
    runs = mlflow.search_runs(experiment_ids=[run.info.experiment_id],
                              filter_string="tags.`ups.promotion.decision` != ''",
                              output_format="pandas")
    board = runs[[c for c in LEADERBOARD_COLUMNS if c in runs.columns]].rename(
        columns=LEADERBOARD_COLUMNS)
    return board.sort_values(["test_nrmse", "validation_nrmse"] if "test_nrmse" in board
                             else ["validation_nrmse"], na_position="last").reset_index(drop=True)
