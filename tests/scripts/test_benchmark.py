"""``scripts/benchmark.py --quick``: every section runs and reports finite figures.

Behaviour only: no timing thresholds (the figures of a quick run on a shared CPU mean nothing).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SECTIONS = ["throughput", "kedro_overhead", "teacher_caching", "rollout", "peak_rss", "ddp",
            "operator_h2h", "rollout_2d"]


def _numbers(value):
    """Every number in a JSON value (bools excluded)."""
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


@pytest.fixture(scope="module")
def quick_result(tmp_path_factory) -> tuple[dict, str]:
    out = tmp_path_factory.mktemp("bench") / "benchmark.json"
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "MLFLOW_DISABLE_TELEMETRY": "true"}
    proc = subprocess.run([sys.executable, str(REPO / "scripts/benchmark.py"), "--quick",
                           "--out", str(out)], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(out.read_text()), out.with_suffix(".md").read_text()


def test_every_section_reports_finite_numbers(quick_result):
    result, _ = quick_result
    assert result["errors"] == {}
    assert set(result["sections"]) == set(SECTIONS)
    for name in SECTIONS:
        numbers = list(_numbers(result["sections"][name]))
        assert numbers, name
        assert all(math.isfinite(x) for x in numbers), name


def test_figures_the_issue_asks_for(quick_result):
    s = quick_result[0]["sections"]
    assert set(s["throughput"]["stages"]) == {"autoencoder", "operator", "diff_residual",
                                              "consistency_distill", "steady_prior"}
    assert all(f["samples_per_sec"] > 0 for f in s["throughput"]["stages"].values())
    assert s["kedro_overhead"]["ratio"] > 0
    assert s["teacher_caching"]["speedup"] > 0
    assert s["rollout"]["solver_ms_per_trajectory"] > 0
    # every model variant, not just the operator (the Stage 2/3 checkpoints must stay valid)
    assert {"operator", "consistency_distill_1step"} <= set(s["rollout"]["variants"])
    sizes = s["peak_rss"]["train_trajectories"]
    assert sizes["4x"] == 4 * sizes["1x"]
    for stage in s["peak_rss"]["stages"].values():
        assert stage["1x"]["peak_rss_mb"] > 0 and stage["4x"]["peak_rss_mb"] > 0
    assert s["ddp"]["samples_per_sec_1proc"] > 0 and s["ddp"]["samples_per_sec_2proc"] > 0
    h2h = s["operator_h2h"]
    assert set(h2h["architectures"]) == {"conv_stack", "pdet_unet"}
    assert h2h["winner_by_val_rollout"] in h2h["architectures"]
    for fig in h2h["architectures"].values():
        assert fig["epochs"] >= 1 and fig["train_sec"] > 0
        assert 0 < fig["val"]["nrmse"] < 10 and 0 < fig["test"]["nrmse"] < 10


def test_2d_section_compares_with_the_solver_at_matched_grid(quick_result):
    sec = quick_result[0]["sections"]["rollout_2d"]
    assert sec["env"] == "smoke2d" and len(sec["grid"]) == 2 and sec["horizon_steps"] >= 1
    assert sec["solver_ms_per_trajectory"] > 0 and sec["solver_nrmse"] < 1e-3
    assert {"operator", "consistency_distill_1step"} <= set(sec["variants"])
    assert "2D rollout ms/trajectory: built-in vorticity solver" in quick_result[1]


def test_machine_load_and_table(quick_result):
    result, table = quick_result
    assert result["machine"]["cores"] >= 1 and result["machine"]["cpu"]
    assert len(result["loadavg_start"]) == 3 and len(result["loadavg_end"]) == 3
    assert "| figure | value |" in table and "load average" in table
    assert table.count("\n|") >= 10
