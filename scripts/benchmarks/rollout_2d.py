"""Section ``rollout_2d``: the 2D surrogate against the built-in vorticity solver.

``kedro run --pipeline evaluation`` (rollouts and scores only) on the 2D vorticity problem, in a
project copy: every variant's decoded rollout and the built-in solver re-solving the same test
trajectories from the same frame, on the same grid (the data is stored at the solver's
resolution) and over the same horizon, timed in the same run.  Full mode works on a copy of the
artifacts of ``kedro run --env vorticity2d`` (run that first); quick mode trains the ``smoke2d``
chain (one epoch per stage) in the copy first.
"""

from __future__ import annotations

import csv
import json
import math

from benchmarks.common import PYTHON, ROOT, Project, copy_data, kedro_run, make_project, \
    run_child

#: Stages trained in quick mode (Stage 4 is the 1D section's business: not needed here).
_CHAIN_OUTPUTS = "consistency_distill.checkpoint"


def _project(s) -> Project:
    env = "smoke2d" if s.quick else "vorticity2d"
    project = make_project(s.tmp, "rollout_2d", env)
    if s.quick:
        params = {"autoencoder.train.epochs": 1, "operator.train.epochs": 1,
                  "diff_residual.corrector.train.epochs": 1, "consistency_distill.train.epochs": 1}
        cmd = [PYTHON, "-m", "kedro", "run", "--env", env, "--to-outputs", _CHAIN_OUTPUTS,
               "--params", ",".join(f"{k}={v}" for k, v in params.items())]
        run_child(cmd, project, "smoke2d chain")
        project.clear_state()
        return project
    source = ROOT / "data" / "vorticity2d"
    if not (source / "06_models" / "consistency_distill.pt").is_file():
        raise SystemExit(f"{source} has no trained chain: run `kedro run --env vorticity2d` first")
    copy_data(project, source)
    return project


def rollout_2d(s, base: Project | None = None) -> dict:
    """ms per trajectory of every 2D variant and of the solver, at matched grid and horizon."""
    project = _project(s)
    params = {"evaluation.variants.solver_reference": True}
    if s.eval_trajectories:
        params["evaluation.max_trajectories"] = s.eval_trajectories
    child = kedro_run(project, "evaluation", params,
                      nodes="evaluation.rollout_variants,evaluation.score_evaluation")
    raw = json.loads((project.data_dir / "01_raw" / "raw_source.json").read_text())
    meta = json.loads((project.data_dir / "03_primary" / "fields_test" / "meta.json").read_text())
    with (project.data_dir / "08_reporting" / "evaluation_metrics.csv").open() as f:
        rows = {r["variant"]: r for r in csv.DictReader(f)}
    ms = {k: float(r["ms_per_trajectory"]) for k, r in rows.items()
          if r.get("ms_per_trajectory") not in (None, "")}
    ms = {k: v for k, v in ms.items() if math.isfinite(v)}
    if "solver" not in ms:
        raise RuntimeError("the evaluation wrote no solver row (solver reference skipped?)")
    solver = ms.pop("solver")
    horizon = len(meta["t"]) - int(meta["initial_step"])  # scored steps (time_stride 1)
    return {
        # the stored grid is the solver's (data generated and kept at one resolution)
        "env": project.env, "grid": raw["spatial_shape"],
        "horizon_steps": horizon, "trajectories": s.eval_trajectories or "all",
        "solver_ms_per_trajectory": solver,
        "solver_nrmse": float(rows["solver"]["nrmse"]),
        "variants": {k: {"ms_per_trajectory": v, "vs_solver": v / solver,
                         "nrmse": float(rows[k]["nrmse"])}
                     for k, v in sorted(ms.items(), key=lambda kv: kv[1])},
        "persistence_nrmse": float(rows["persistence"]["nrmse"]),
        "wall_sec": child.wall_sec,
    }
