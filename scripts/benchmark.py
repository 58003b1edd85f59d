"""Benchmarks for the training stages (figures, not pass/fail): ``make benchmark``.

Runs on the artifacts of the default ``kedro run`` (``data/``), so run that first. Every
comparison is measured in the same process run, back to back, because these machines are noisy;
quote the ratios, not the absolute figures.

Sections (``--only`` picks some):

* ``operator``  — Stage 1 training throughput (pairs/s) calling the node function directly,
  then the same training through ``kedro run`` with kedro-mlflow (wall-time ratio);
* ``autoencoder`` — decoded reconstruction nRMSE (validation) from the last autoencoder run;
* ``distill``   — Stage 3 teacher caching: distillation epochs with the frozen operator's
  predictions cached per sample vs recomputed every batch, and milliseconds per corrected
  latent step for the Stage 2 teacher (N Heun steps) and the Stage 3 student (1 and 2 steps).

Writes ``data/08_reporting/benchmark.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("KEDRO_DISABLE_TELEMETRY", "1")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _catalog():
    """The project's catalog and parameters (base env), without running anything."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    bootstrap_project(ROOT)
    session = KedroSession.create(project_path=ROOT)
    context = session.load_context()
    return context.catalog, context.params


def bench_operator(epochs: int) -> dict:
    """Direct call of the training node vs ``kedro run`` of the same node (same settings)."""
    from ups_kedro.pipelines.operator import nodes

    catalog, params = _catalog()
    op_params = {**params["operator"], "train": {**params["operator"]["train"],
                                                  "epochs": epochs, "progress": False}}
    inputs = [catalog.load(name) for name in (
        "autoencoder.latents_train", "autoencoder.latents_val", "autoencoder.checkpoint",
        "data_processing.fields_train", "data_processing.fields_val")]
    start = time.perf_counter()
    ckpt = nodes.train_operator(*inputs, op_params)
    direct = time.perf_counter() - start
    n_pairs = len(inputs[0].array) * (inputs[0].array.shape[1] - 1)

    # The kedro run writes operator.pt like any run; keep the user's checkpoint and put it back.
    ckpt_path = ROOT / "data/06_models/operator.pt"
    backup = ckpt_path.with_name(".operator.pt.benchmark-backup")
    shutil.copy2(ckpt_path, backup)
    try:
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "kedro", "run", "--pipeline", "operator",
             "--nodes", "operator.train_operator",
             "--params", f"operator.train.epochs={epochs},operator.train.progress=False"],
            cwd=ROOT, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        via_kedro = time.perf_counter() - start
    finally:
        os.replace(backup, ckpt_path)
    return {
        "operator_epochs": epochs,
        "operator_pairs_per_sec": n_pairs * ckpt["metrics"]["epochs_run"] / direct,
        "operator_direct_sec": direct,
        "operator_kedro_run_sec": via_kedro,
        "kedro_overhead_ratio": via_kedro / direct,
    }


def bench_autoencoder() -> dict:
    metrics = json.loads((ROOT / "data/08_reporting/autoencoder_metrics.json").read_text())
    return {"autoencoder_val_recon_nrmse": metrics["val_recon_nrmse"]}


def _distill_epoch_times(cache: bool, epochs: int) -> list[float]:
    from ups_kedro.config import parse
    from ups_kedro.data.torch_data import ResidualPairDataset
    from ups_kedro.models.diffusion_residual import make_consistency_student
    from ups_kedro.pipelines.consistency_distill.config import ConsistencyDistillStageConfig
    from ups_kedro.pipelines.upstream import load_operator
    from ups_kedro.training.artifacts import freeze, load_module
    from ups_kedro.training.diffusion import ConsistencyDistillTask
    from ups_kedro.training.loop import fit

    catalog, params = _catalog()
    cfg = parse(ConsistencyDistillStageConfig, params["consistency_distill"], "consistency_distill")
    latents = catalog.load("autoencoder.latents_train")
    op = load_operator(catalog.load("operator.checkpoint"), latents)
    teacher = freeze(load_module(catalog.load("diff_residual.checkpoint")))
    task = ConsistencyDistillTask(
        teacher, teacher.schedule, operator=op, n_levels=cfg.n_levels,
        distill_num_taus=cfg.distill_num_taus, distill_micro_batch=cfg.distill_micro_batch,
        tau_schedule=cfg.tau_schedule, target_ema=cfg.target_ema, cache=cache)
    times: list[float] = []
    train_cfg = parse(type(cfg.train), {**params["consistency_distill"]["train"],
                                         "epochs": epochs, "progress": False}, "train")
    fit(make_consistency_student(teacher), task, ResidualPairDataset(latents.array, op.time_stride),
        None, train_cfg, stage="benchmark",
        on_epoch_end=lambda e, m: times.append(m["epoch_time_sec"]))
    return times


def _ms_per_step(step, z: torch.Tensor, repeats: int = 5) -> float:
    with torch.no_grad():
        step(z)  # warm-up
        start = time.perf_counter()
        for _ in range(repeats):
            step(z)
    return 1000.0 * (time.perf_counter() - start) / repeats / z.shape[0]


def bench_distill(epochs: int) -> dict:
    from ups_kedro.evaluation.variants import corrected_variant, operator_variant
    from ups_kedro.pipelines.upstream import load_operator
    from ups_kedro.training.artifacts import load_module

    cached = _distill_epoch_times(True, epochs)
    recomputed = _distill_epoch_times(False, epochs)
    catalog, params = _catalog()
    latents = catalog.load("autoencoder.latents_val")
    op = load_operator(catalog.load("operator.checkpoint"), latents)
    teacher = load_module(catalog.load("diff_residual.checkpoint"))
    student = load_module(catalog.load("consistency_distill.checkpoint"))
    n_teacher = params["consistency_distill"]["eval"]["teacher_steps"]
    z = torch.from_numpy(latents.array[:, 10].copy())  # one latent state per trajectory
    variants = [operator_variant(op.module, op.dt),
                corrected_variant(f"teacher_{n_teacher}step", op.module, op.dt, teacher, n_teacher),
                corrected_variant("student_1step", op.module, op.dt, student, 1),
                corrected_variant("student_2step", op.module, op.dt, student, 2)]
    out = {
        "distill_epoch_sec_cached": cached,
        "distill_epoch_sec_recomputed": recomputed,
        # Epoch 1 fills the cache; later epochs show what caching saves.
        "teacher_caching_speedup": sum(recomputed[1:]) / max(sum(cached[1:]), 1e-9),
    }
    for v in variants:
        out[f"ms_per_step_{v.name}"] = _ms_per_step(v.step, z)
        out[f"nfe_per_step_{v.name}"] = v.nfe
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--only", default="autoencoder,operator,distill")
    parser.add_argument("--operator-epochs", type=int, default=3)
    parser.add_argument("--distill-epochs", type=int, default=2)
    args = parser.parse_args()
    sections = set(args.only.split(","))
    results: dict = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                   f"torch {torch.__version__}, {torch.get_num_threads()} threads",
    }
    if "autoencoder" in sections:
        results.update(bench_autoencoder())
    if "operator" in sections:
        results.update(bench_operator(args.operator_epochs))
    if "distill" in sections:
        results.update(bench_distill(args.distill_epochs))
    out = ROOT / "data/08_reporting/benchmark.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    width = max(len(k) for k in results)
    for key, value in results.items():
        shown = f"{value:.4g}" if isinstance(value, float) else (
            ", ".join(f"{v:.3g}" for v in value) if isinstance(value, list) else value)
        print(f"{key:<{width}}  {shown}")
    print(f"(written to {out.relative_to(ROOT)})")


if __name__ == "__main__":
    main()
