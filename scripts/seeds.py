"""Seed spread: autoencoder → operator → Stage 2 → Stage 3 → evaluation for several seeds.

``make seeds`` (``ARGS="--env smoke"`` for a quick run) trains the seeded stages once per
top-level seed on the *same* data and reports, per evaluated variant, the mean ± standard
deviation (sample, n−1) and the coefficient of variation (sd / mean) of the test rollout
nRMSE (and of h1 and last-frame nRMSE), plus the champion: the variant with the lowest mean.

Each seed runs ``kedro run --params seed=N,<stage>.train.seed=<derived>`` in one throw-away
copy of the project (``conf/`` + its own ``data/`` and MLflow store), so the project's own
checkpoints, reports and runs are never touched.  The stage seeds are those
:func:`ups_kedro.training.seeds.derive_seed` gives for ``seed=N``; passing them explicitly
makes the spread real even where a parameters file still pins a ``train.seed``.

The data: a copy of the environment's ``data`` folder (data_processing outputs and the steady
prior, which evaluation also reads; run ``make run`` / ``kedro run --env smoke`` first), or
with ``--fresh-data`` (or when that folder has none) made once in the copy by
``data_processing`` and ``steady_prior``.  Nothing of that depends on the seed.

Output: ``<data_dir>/08_reporting/seeds.json`` and ``seeds.md`` (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks.common import ROOT, Project, copy_data, machine, make_project  # noqa: E402

from ups_kedro.training.seeds import derive_seed  # noqa: E402

SEEDED = ("autoencoder", "operator", "diff_residual", "consistency_distill")
PIPELINES = (*SEEDED, "evaluation")
PREPARE = ("data_processing", "steady_prior")
REFERENCE_ROWS = ("solver", "pdebench_fno_published", "persistence")  # do not depend on seeds
METRICS = ("nrmse", "nrmse_h1", "nrmse_last")
NEEDED = ("03_primary", "06_models/steady_prior.pt")


def data_dir(env: str | None) -> str:
    return "data/smoke" if env == "smoke" else "data"


def kedro(project: Project, env: str | None, pipelines: tuple[str, ...], params: dict,
          log) -> float:
    """One ``kedro run`` in the copy; returns its wall time (raises with the log's tail)."""
    cmd = [sys.executable, "-m", "kedro", "run", "--pipelines", ",".join(pipelines)]
    if env:
        cmd += ["--env", env]
    if params:
        cmd += ["--params", ",".join(f"{k}={v}" for k, v in params.items())]
    log.write(f"\n$ {' '.join(cmd)}\n")
    log.flush()
    started = time.perf_counter()
    proc = subprocess.run(cmd, cwd=project.root, env=project.child_env(), stdout=log,
                          stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"`{' '.join(cmd)}` failed (exit {proc.returncode}); see {log.name}")
    return time.perf_counter() - started


def seed_params(seed: int, epochs: int | None) -> dict:
    params: dict = {"seed": seed}
    for stage in SEEDED:
        params[f"{stage}.train.seed"] = derive_seed(seed, stage)
        if epochs is not None:
            params[f"{stage}.train.epochs"] = epochs
    return params


def read_metrics(path: Path) -> dict[str, dict[str, float]]:
    """``{variant: {metric: value}}`` from an ``evaluation_metrics.csv``."""
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    return {r["variant"]: {m: float(r[m]) for m in METRICS if r.get(m)} for r in rows}


def summarise(per_seed: dict[int, dict[str, dict[str, float]]]) -> dict:
    """Mean, sample sd and CV per variant and metric over the seeds; the champion variant."""
    variants = sorted({v for rows in per_seed.values() for v in rows} - set(REFERENCE_ROWS))
    summary: dict[str, dict] = {}
    for variant in variants:
        entry: dict[str, dict] = {}
        for metric in METRICS:
            values = [rows[variant][metric] for rows in per_seed.values()
                      if metric in rows.get(variant, {})]
            if len(values) != len(per_seed):
                continue
            mean = statistics.fmean(values)
            sd = statistics.stdev(values) if len(values) > 1 else 0.0
            entry[metric] = {"mean": mean, "std": sd, "cv": sd / mean if mean else float("nan"),
                             "values": values}
        if entry:
            summary[variant] = entry
    ranked = [v for v in summary if "nrmse" in summary[v]]
    champion = min(ranked, key=lambda v: summary[v]["nrmse"]["mean"]) if ranked else None
    return {"variants": summary, "champion": champion}


def markdown(report: dict) -> str:
    seeds = report["seeds"]
    lines = [
        f"# Seed spread ({len(seeds)} seeds: {', '.join(map(str, seeds))}; env "
        f"{report['env'] or 'base'})",
        "",
        f"{report['date']}; {report['machine']['cores']} cores, load average "
        f"{report['load_start']} → {report['load_end']}; wall time per seed: "
        + ", ".join(f"{s:.0f} s" for s in report["wall_sec"]),
        "",
        "Test-split rollout nRMSE, mean ± sample standard deviation over the seeds; CV = sd / "
        "mean. Champion (lowest mean): **" + str(report["summary"]["champion"]) + "**.",
        "",
        "| variant | nRMSE mean ± sd | CV | h1 mean ± sd | last mean ± sd | per seed |",
        "|---|---|---|---|---|---|",
    ]
    for variant, entry in report["summary"]["variants"].items():
        def cell(metric: str) -> str:
            m = entry.get(metric)
            return f"{m['mean']:.4g} ± {m['std']:.2g}" if m else "–"
        cv = entry["nrmse"]["cv"] if "nrmse" in entry else float("nan")
        values = ", ".join(f"{v:.4g}" for v in entry.get("nrmse", {}).get("values", []))
        lines.append(f"| {variant} | {cell('nrmse')} | {cv:.1%} | {cell('nrmse_h1')} | "
                     f"{cell('nrmse_last')} | {values} |")
    return "\n".join(lines) + "\n"


def prepare_data(project: Project, env: str | None, fresh: bool, log) -> None:
    source = ROOT / data_dir(env)
    if not fresh and all((source / p).exists() for p in NEEDED):
        copy_data(project, source)
        return
    if not fresh:
        print(f"[seeds] {source} lacks {', '.join(NEEDED)}: making the data in the copy",
              file=sys.stderr)
    kedro(project, env, PREPARE, {}, log)


def run(args: argparse.Namespace) -> dict:
    seeds = [int(s) for s in args.seeds.split(",")]
    if len(seeds) < 2 or len(set(seeds)) != len(seeds):
        raise SystemExit(f"--seeds needs at least two different seeds, got {args.seeds!r}")
    out = Path(args.out) if args.out else ROOT / data_dir(args.env) / "08_reporting"
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="ups_seeds_") as tmp:
        project = make_project(Path(tmp), "project", args.env or "base")
        log_path = out / "seeds.log"
        out.mkdir(parents=True, exist_ok=True)
        per_seed, walls = {}, []
        with log_path.open("w") as log:
            prepare_data(project, args.env, args.fresh_data, log)
            for seed in seeds:
                print(f"[seeds] seed {seed} ...", file=sys.stderr, flush=True)
                project.clear_state()
                walls.append(kedro(project, args.env, PIPELINES,
                                   seed_params(seed, args.epochs), log))
                per_seed[seed] = read_metrics(
                    project.data_dir / "08_reporting" / "evaluation_metrics.csv")
                print(f"[seeds] seed {seed} done in {walls[-1]:.0f} s", file=sys.stderr)
    report = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "env": args.env, "seeds": seeds, "epochs_override": args.epochs,
        "stage_seeds": {s: {st: derive_seed(s, st) for st in SEEDED} for s in seeds},
        "machine": machine(), "load_start": round(load_start, 2),
        "load_end": round(os.getloadavg()[0], 2), "wall_sec": walls,
        "per_seed": {str(s): rows for s, rows in per_seed.items()},
        "summary": summarise(per_seed),
    }
    (out / "seeds.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "seeds.md").write_text(markdown(report))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--env", default=None, help="kedro environment (e.g. smoke)")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated top-level seeds")
    parser.add_argument("--epochs", type=int, default=None,
                        help="override every seeded stage's epochs (quick checks only)")
    parser.add_argument("--fresh-data", action="store_true",
                        help="make the data in the copy instead of copying the env's data")
    parser.add_argument("--out", default=None, help="report folder (default: 08_reporting)")
    args = parser.parse_args(argv)
    # SIGTERM as an exception, so subprocess.run kills the running `kedro run` child too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    report = run(args)
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
