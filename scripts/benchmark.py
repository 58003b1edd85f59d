"""Benchmarks of the training stages (figures, not pass/fail): ``make benchmark``.

One command runs every section and writes ``data/08_reporting/benchmark.json`` and
``data/08_reporting/benchmark.md`` (a table with the date, the machine and the load average at
start and end).  Every comparison is measured in this one run, back to back, because these
machines are shared and noisy: quote the ratios, not the absolute figures.

Sections (``--only`` picks some; code in ``scripts/benchmarks/``):

1. ``throughput``      — training samples/s per stage (node called directly, 2 epochs on the
   first 64 training trajectories);
2. ``kedro_overhead``  — ``kedro run`` with kedro-mlflow / a direct call of the same Stage 1
   training (whole child processes, 1 epoch, all data);
3. ``teacher_caching`` — Stage 3 epochs with the operator's predictions cached vs recomputed;
4. ``rollout``         — ms per trajectory of every variant and of the built-in solver, from
   ``kedro run --pipeline evaluation`` on 16 test trajectories;
5. ``peak_rss``        — peak resident memory of a stage's training at 1x and 4x the training
   trajectories (autoencoder, operator, diff_residual; narrower models, see RSS_LIGHT);
6. ``ddp``             — Stage 1 throughput, 2 data-parallel processes vs 1 (bench_ddp.py);
7. ``operator_h2h``    — Stage 1 architectures (``conv_stack``, ``pdet_unet``) trained for the
   same wall-clock with the default unrolled loss, val/test rollout nRMSE of each;
8. ``rollout_2d``      — the 2D vorticity problem: ms per trajectory of every variant and of the
   built-in solver on the same test trajectories, grid and horizon (full: a copy of the
   artifacts of ``kedro run --env vorticity2d``; quick: the ``smoke2d`` chain, one epoch).

The full run works on a copy of the artifacts of ``make run`` (run that first); nothing in
``data/`` but the two report files is written.  ``--quick`` trains the smoke chain (one epoch
per stage) in a temporary copy and runs every section at tiny sizes: it checks the suite works,
its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchmarks import sections  # noqa: E402
from benchmarks.common import ROOT, machine  # noqa: E402
from benchmarks.report import markdown  # noqa: E402

ORDER = ["throughput", "kedro_overhead", "teacher_caching", "rollout", "peak_rss", "ddp",
         "operator_h2h", "rollout_2d"]


def settings(args: argparse.Namespace, tmp: Path) -> sections.Settings:
    if args.quick:
        return sections.Settings(quick=True, tmp=tmp, epochs=2, subset=None,
                                 eval_trajectories=None, rss_stages=("operator",),
                                 ddp_epochs=1, ddp_trajectories=2)
    return sections.Settings(quick=False, tmp=tmp, epochs=args.epochs, subset=args.subset or None,
                             overhead_epochs=args.overhead_epochs,
                             eval_trajectories=args.eval_trajectories or None,
                             rss_stages=tuple(args.rss_stages.split(",")))


def run_sections(s: sections.Settings, only: list[str]) -> tuple[dict, dict]:
    """Run the chosen sections; a failing section is recorded and the others still run."""
    results, errors = {}, {}
    # rollout_2d works on its own 2D copy: no 1D chain needed when it runs alone
    base = sections.base_project(s) if any(n != "rollout_2d" for n in only) else None
    for name in only:
        started = time.perf_counter()
        print(f"[benchmark] {name} ...", file=sys.stderr, flush=True)
        try:
            fn = getattr(sections, name)
            results[name] = fn(s, base)
        except Exception as exc:  # noqa: BLE001 - reported in the JSON, exit status set below
            traceback.print_exc()
            errors[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
        print(f"[benchmark] {name} done in {time.perf_counter() - started:.0f} s",
              file=sys.stderr, flush=True)
    return results, errors


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="tiny sizes, smoke config")
    parser.add_argument("--only", default=",".join(ORDER), help="comma-separated sections")
    parser.add_argument("--epochs", type=int, default=2, help="throughput/caching epochs")
    parser.add_argument("--subset", type=int, default=64,
                        help="training trajectories for throughput/caching (0: all)")
    parser.add_argument("--overhead-epochs", type=int, default=1)
    parser.add_argument("--eval-trajectories", type=int, default=16, help="0: the whole split")
    parser.add_argument("--rss-stages", default="autoencoder,operator,diff_residual")
    parser.add_argument("--out", type=Path, default=ROOT / "data/08_reporting/benchmark.json")
    parser.add_argument("--keep-tmp", action="store_true", help="keep the project copies")
    args = parser.parse_args(argv)
    only = [name for name in ORDER if name in args.only.split(",")]

    result = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "mode": "quick" if args.quick else "full", "machine": machine(),
              "loadavg_start": list(os.getloadavg())}
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix="ups-benchmark-"))
    try:
        s = settings(args, tmp)
        result["settings"] = {k: (str(v) if isinstance(v, Path) else v)
                              for k, v in vars(s).items()}
        result["sections"], result["errors"] = run_sections(s, only)
    finally:
        if args.keep_tmp:
            print(f"[benchmark] project copies kept in {tmp}", file=sys.stderr)
        else:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    result["loadavg_end"] = list(os.getloadavg())
    result["wall_sec"] = time.perf_counter() - started

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    table = markdown(result)
    args.out.with_suffix(".md").write_text(table)
    print(table)
    print(f"(written to {args.out} and {args.out.with_suffix('.md')})")
    return 1 if result["errors"] else 0


if __name__ == "__main__":
    sys.exit(main())
