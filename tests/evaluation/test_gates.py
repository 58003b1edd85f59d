"""Promotion gates: first-run rule, champion rule, candidate choice."""

from __future__ import annotations

import pytest

from ups_kedro.evaluation.gates import FirstRunGate, GateParams, decide, pick_candidate

SCORES = {"persistence": 1.0, "solver": 1e-8, "operator": 0.04, "diff_residual_16step": 0.03}


def test_best_candidate_ignores_baselines() -> None:
    assert pick_candidate(SCORES) == "diff_residual_16step"  # never the solver
    assert pick_candidate(SCORES, "operator") == "operator"
    with pytest.raises(ValueError, match="was not evaluated"):
        pick_candidate(SCORES, "student")


def test_first_run_must_beat_persistence_and_the_operator_by_margins() -> None:
    ok = decide("validation", SCORES, "diff_residual_16step", GateParams())
    assert ok.passed and ok.rule.startswith("first run")  # gain 33× ≥ 20×, 0.03 ≤ 0.04
    weak = decide("validation", SCORES, "diff_residual_16step",
                  GateParams(first_run=FirstRunGate(min_gain_vs_persistence=50.0)))
    assert not weak.passed and "gain vs persistence 33.3×" in weak.reasons[0]
    margin = decide("validation", SCORES, "diff_residual_16step",
                    GateParams(first_run=FirstRunGate(min_improvement_vs_operator=0.5)))
    assert not margin.passed and "operator" in margin.reasons[0]  # 0.03 > 0.5 × 0.04


def test_champion_rule_is_relative_and_uses_the_champion_variant() -> None:
    champion = {"persistence": 1.0, "operator": 0.05, "consistency_distill_1step": 0.032}
    better = decide("test", SCORES, "diff_residual_16step",
                    GateParams(min_improvement_vs_champion=0.05), champion,
                    "consistency_distill_1step")
    assert better.passed and better.champion_nrmse == 0.032  # 0.03 ≤ 0.95 × 0.032
    not_enough = decide("test", SCORES, "diff_residual_16step",
                        GateParams(min_improvement_vs_champion=0.1), champion,
                        "consistency_distill_1step")
    assert not not_enough.passed  # 0.03 > 0.9 × 0.032 = 0.0288
    ceiling = decide("test", SCORES, "diff_residual_16step", GateParams(max_nrmse=0.01),
                     champion, "consistency_distill_1step")
    assert not ceiling.passed and "max_nrmse" in ceiling.reasons[0]
