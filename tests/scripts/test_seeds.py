"""``scripts/seeds.py``: per-seed runs really differ, and the spread is computed by definition.

The end-to-end test trains the smoke chain for two seeds (one epoch per stage) and makes the
data once: ~2-4 minutes on a loaded 2-core machine, hence ``slow``.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "scripts"))

import seeds as seeds_script  # noqa: E402

from ups_kedro.training.seeds import derive_seed  # noqa: E402


def test_summary_is_mean_sample_sd_and_cv() -> None:
    per_seed = {
        0: {"operator": {"nrmse": 0.020, "nrmse_h1": 0.010}, "persistence": {"nrmse": 0.9}},
        1: {"operator": {"nrmse": 0.022, "nrmse_h1": 0.012}, "persistence": {"nrmse": 0.9}},
        2: {"operator": {"nrmse": 0.027, "nrmse_h1": 0.011}, "persistence": {"nrmse": 0.9},
            "diff_residual_16step": {"nrmse": 0.01}},  # missing for other seeds: not ranked
    }
    summary = seeds_script.summarise(per_seed)
    op = summary["variants"]["operator"]["nrmse"]
    values = [0.020, 0.022, 0.027]
    assert op["mean"] == pytest.approx(statistics.fmean(values))
    assert op["std"] == pytest.approx(statistics.stdev(values))  # sample sd (n - 1)
    assert op["cv"] == pytest.approx(statistics.stdev(values) / statistics.fmean(values))
    assert "persistence" not in summary["variants"]  # reference rows do not depend on seeds
    assert "nrmse" not in summary["variants"].get("diff_residual_16step", {})
    assert summary["champion"] == "operator"


def test_every_seeded_stage_gets_its_derived_seed() -> None:
    params = seeds_script.seed_params(4, epochs=1)
    assert params["seed"] == 4
    for stage in seeds_script.SEEDED:
        assert params[f"{stage}.train.seed"] == derive_seed(4, stage)
        assert params[f"{stage}.train.epochs"] == 1
    assert seeds_script.seed_params(5, None)["operator.train.seed"] != params["operator.train.seed"]


@pytest.mark.slow
@pytest.mark.integration
def test_two_smoke_seeds_end_to_end(tmp_path: Path) -> None:
    out = tmp_path / "report"
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
           "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    proc = subprocess.run(
        [sys.executable, str(REPO / "scripts/seeds.py"), "--env", "smoke", "--seeds", "0,1",
         "--epochs", "1", "--fresh-data", "--out", str(out)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads((out / "seeds.json").read_text())
    assert report["seeds"] == [0, 1]
    variants = report["summary"]["variants"]
    assert {"operator", "diff_residual", "consistency_distill_1step"} <= set(variants)
    for entry in variants.values():
        nrmse = entry["nrmse"]
        assert len(nrmse["values"]) == 2 and all(math.isfinite(v) for v in nrmse["values"])
    # Different seeds train different models: the operator's figures differ.
    first, second = variants["operator"]["nrmse"]["values"]
    assert first != second and variants["operator"]["nrmse"]["std"] > 0
    assert report["summary"]["champion"] in variants
    table = (out / "seeds.md").read_text()
    assert "| operator |" in table and "CV" in table
