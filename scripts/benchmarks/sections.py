"""The benchmark sections.  Each returns a JSON-able dict; every ratio in a section comes
from measurements taken in the same run, back to back (these machines are shared and noisy)."""

from __future__ import annotations

import csv
import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.rollout_2d import rollout_2d  # noqa: F401 - section 8, run by name
from benchmarks.common import PYTHON, ROOT, Project, copy_data, kedro_run, make_project, \
    run_child, worker

STAGES = ["autoencoder", "operator", "diff_residual", "consistency_distill", "steady_prior"]
#: training nodes run per stage for the memory measurement (the stage's training, no evaluation)
RSS_NODES = {
    "autoencoder": "autoencoder.train_autoencoder,autoencoder.encode_latents",
    "operator": "operator.train_operator",
    "diff_residual": "diff_residual.train_diff_residual",
    "consistency_distill": "consistency_distill.distill_consistency",
}

#: full mode: narrower models and bigger batches for the memory runs, so one epoch on 4x the
#: data fits the time budget on a 2-core CPU.  The data (what must not be held in RAM) keep the
#: default shapes; a model's own memory is the same at both sizes.
RSS_LIGHT = {
    "autoencoder": {"autoencoder.encoder.stem_hidden": 8, "autoencoder.decoder.hidden_dim": 8,
                    "autoencoder.decoder.mlp_hidden": 16, "autoencoder.train.batch_size": 512},
    "operator": {"operator.model.hidden_dim": 16, "operator.train.batch_size": 256},
    "diff_residual": {"diff_residual.model.hidden_dim": 16, "diff_residual.train.batch_size": 512},
    "consistency_distill": {"consistency_distill.train.batch_size": 256},
}


@dataclass
class Settings:
    quick: bool
    tmp: Path
    epochs: int = 2  # throughput / caching epochs
    subset: int | None = 64  # train trajectories for throughput and caching (None: all)
    overhead_epochs: int = 1
    eval_trajectories: int | None = 16
    rss_factor: int = 4
    rss_stages: tuple[str, ...] = ("autoencoder", "operator", "diff_residual")
    ddp_epochs: int = 2
    ddp_trajectories: int = 12

    @property
    def env(self) -> str:
        return "smoke" if self.quick else "base"


def epochs_params(epochs: int, stages=STAGES) -> dict:
    return {**{f"{s}.train.epochs": epochs for s in stages},
            **{f"{s}.train.progress": False for s in stages}}


# ------------------------------------------------------------------------------------------
# the copy every section but peak RSS works in


def base_project(s: Settings) -> Project:
    """Full: a copy of the project's data/ (run ``make run`` first).  Quick: the smoke chain,
    trained here for one epoch per stage (no evaluation nodes)."""
    project = make_project(s.tmp, "base", s.env)
    if not s.quick:
        needed = ROOT / "data/06_models/consistency_distill.pt"
        if not needed.is_file():
            raise SystemExit(f"{needed} is missing: run `make run` first (full benchmark)")
        copy_data(project, ROOT / "data")
        return project
    _train_smoke_chain(project)
    return project


def _train_smoke_chain(project: Project) -> None:
    outputs = "consistency_distill.checkpoint,steady_prior.checkpoint"
    cmd = [PYTHON, "-m", "kedro", "run", "--env", project.env, "--to-outputs", outputs,
           "--params", ",".join(f"{k}={v}" for k, v in epochs_params(1).items())]
    run_child(cmd, project, "smoke chain")
    project.clear_state()


# ------------------------------------------------------------------------------------------
# 1. training throughput per stage


def throughput(s: Settings, project: Project) -> dict:
    """Each stage's training node called directly, ``epochs`` epochs on ``subset`` trajectories:
    samples/s of the last epoch (training time only)."""
    result, child = worker(project, "train", stages=STAGES, epochs=s.epochs, max_items=s.subset,
                           save=True)
    project.clear_state()
    return {"epochs": s.epochs, "train_trajectories": s.subset or "all",
            "stages": result, "wall_sec": child.wall_sec}


# ------------------------------------------------------------------------------------------
# 2. kedro run (kedro-mlflow) vs calling the training directly


def kedro_overhead(s: Settings, project: Project) -> dict:
    """Stage 1 training: a child calling the node function vs ``kedro run`` of the same node.

    Both are whole child processes (interpreter, imports, data loading, training), so the ratio
    is what ``kedro run`` with kedro-mlflow adds to the same work."""
    result, direct = worker(project, "train", stages=["operator"], epochs=s.overhead_epochs,
                            max_items=None)
    project.clear_state()
    # the kedro run writes operator.pt (a new run id would make the copy's Stage 2/3
    # checkpoints stale for the rollout section): keep the copy's checkpoint and put it back
    ckpt = project.data_dir / "06_models" / "operator.pt"
    backup = ckpt.with_name("operator.pt.before-overhead")
    shutil.copy2(ckpt, backup)
    try:
        via = kedro_run(project, "operator", epochs_params(s.overhead_epochs, ["operator"]),
                        nodes="operator.train_operator")
    finally:
        backup.replace(ckpt)
        project.clear_state()
    return {"epochs": s.overhead_epochs, "direct_wall_sec": direct.wall_sec,
            "direct_train_sec": result["operator"]["node_sec"],
            "kedro_run_wall_sec": via.wall_sec, "ratio": via.wall_sec / direct.wall_sec}


# ------------------------------------------------------------------------------------------
# 3. Stage 3 teacher caching


def teacher_caching(s: Settings, project: Project) -> dict:
    """Distillation epochs with the frozen operator's predictions cached per sample vs
    recomputed every batch; epoch 1 fills the cache, so the speed-up uses epochs 2+."""
    epochs = max(s.epochs, 2)
    result, _ = worker(project, "caching", epochs=epochs, max_items=s.subset)
    cached, recomputed = result["cached"], result["recomputed"]
    return {"epochs": epochs, "train_trajectories": s.subset or "all",
            "epoch_sec_cached": cached, "epoch_sec_recomputed": recomputed,
            "speedup": sum(recomputed[1:]) / max(sum(cached[1:]), 1e-9)}


# ------------------------------------------------------------------------------------------
# 4. rollout cost per variant vs the built-in solver


def rollout(s: Settings, project: Project) -> dict:
    """``kedro run --pipeline evaluation`` (rollouts + scores only) in the copy; its
    ``evaluation_metrics.csv`` times every variant and the solver on the same trajectories."""
    params = {"evaluation.variants.solver_reference": True}
    if s.eval_trajectories:
        params["evaluation.max_trajectories"] = s.eval_trajectories
    child = kedro_run(project, "evaluation", params,
                      nodes="evaluation.rollout_variants,evaluation.score_evaluation")
    table = project.data_dir / "08_reporting" / "evaluation_metrics.csv"
    with table.open() as f:
        rows = {r["variant"]: float(r["ms_per_trajectory"]) for r in csv.DictReader(f)
                if r.get("ms_per_trajectory") not in (None, "")}
    rows = {k: v for k, v in rows.items() if math.isfinite(v)}
    solver = rows.pop("solver")
    return {"trajectories": s.eval_trajectories or "all", "solver_ms_per_trajectory": solver,
            "variants": {k: {"ms_per_trajectory": v, "vs_solver": v / solver}
                         for k, v in sorted(rows.items(), key=lambda kv: kv[1])},
            "wall_sec": child.wall_sec}


# ------------------------------------------------------------------------------------------
# 5. peak RSS at 1x and Nx the data


def _tile_arrays(data_dir: Path, factor: int) -> int:
    """Repeat every trajectory ``factor`` times in fields_* and latents_* (same shapes otherwise).

    Returns the number of training trajectories.  Memory depends on how many trajectories a
    stage holds, not on their values, so repeating the generated data is a faithful and much
    cheaper stand-in for generating ``factor`` times as many.
    """
    folders = [*data_dir.glob("03_primary/fields_*"), *data_dir.glob("05_model_input/latents_*")]
    for folder in folders:
        src = np.load(folder / "data.npy", mmap_mode="r")
        tmp = folder / "data.tiled.npy"
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=src.dtype,
                                        shape=(src.shape[0] * factor, *src.shape[1:]))
        for k in range(factor):
            out[k * src.shape[0]:(k + 1) * src.shape[0]] = src
        out.flush()
        del out, src
        tmp.replace(folder / "data.npy")
        meta = json.loads((folder / "meta.json").read_text())
        if isinstance(meta.get("indices"), list):
            meta["indices"] = meta["indices"] * factor
        (folder / "meta.json").write_text(json.dumps(meta))
    return int(np.load(data_dir / "03_primary/fields_train/data.npy", mmap_mode="r").shape[0])


def _rss_project(s: Settings, base: Project, factor: int) -> tuple[Project, int]:
    project = make_project(s.tmp, f"rss_{factor}x", s.env)
    project.data_dir.mkdir(parents=True)
    for layer in ("02_intermediate", "03_primary", "05_model_input", "06_models"):
        shutil.copytree(base.data_dir / layer, project.data_dir / layer,
                        ignore=shutil.ignore_patterns("state", "steady_*"))
    return project, _tile_arrays(project.data_dir, factor)


def peak_rss(s: Settings, base: Project) -> dict:
    """Each stage's training nodes in a ``kedro run`` child, on 1x and ``factor``x trajectories.

    ``peak_rss_mb`` is the child's ru_maxrss (anonymous + mapped file pages);
    ``peak_anon_mb`` the highest sampled RssAnon: memory the process allocated itself, which
    is what must stay flat (mapped file pages are page cache the kernel can drop)."""
    sizes, stages = {}, {stage: {} for stage in s.rss_stages}
    for factor in (1, s.rss_factor):
        project, n_train = _rss_project(s, base, factor)
        sizes[f"{factor}x"] = n_train
        for stage in s.rss_stages:
            project.clear_state()
            params = {**epochs_params(1, [stage]), **({} if s.quick else RSS_LIGHT[stage])}
            child = kedro_run(project, stage, params, nodes=RSS_NODES[stage])
            stages[stage][f"{factor}x"] = {
                "peak_rss_mb": child.peak_rss_mb, "peak_anon_mb": child.peak_anon_mb,
                "peak_file_mb": child.peak_file_mb, "wall_sec": child.wall_sec}
        shutil.rmtree(project.root, ignore_errors=True)
    big = f"{s.rss_factor}x"
    for figures in stages.values():
        figures["anon_growth_mb"] = figures[big]["peak_anon_mb"] - figures["1x"]["peak_anon_mb"]
        figures["rss_ratio"] = figures[big]["peak_rss_mb"] / figures["1x"]["peak_rss_mb"]
    return {"epochs": 1, "train_trajectories": sizes, "stages": stages,
            "light_models": {} if s.quick else {k: RSS_LIGHT[k] for k in s.rss_stages}}


# ------------------------------------------------------------------------------------------
# 6. DDP: 2 processes vs 1


def ddp(s: Settings, project: Project) -> dict:
    """``scripts/bench_ddp.py``: Stage 1 training, 1 process vs 2 gloo processes, one child."""
    cmd = [PYTHON, str(ROOT / "scripts/bench_ddp.py"), "--nproc", "2",
           "--epochs", str(s.ddp_epochs), "--trajectories", str(s.ddp_trajectories)]
    child = run_child(cmd, project, "bench_ddp")
    out = json.loads(child.stdout)
    one, two = out["runs"]
    return {"epochs": s.ddp_epochs, "trajectories": s.ddp_trajectories,
            "samples_per_sec_1proc": one["samples_per_sec"],
            "samples_per_sec_2proc": two["samples_per_sec"], "speedup": out["speedup"],
            "final_loss_rel_diff": out["final_loss_rel_diff"], "wall_sec": child.wall_sec}


# ------------------------------------------------------------------------------------------
# 7. Stage 1 head-to-head at equal wall-clock


def operator_h2h(s: Settings, project: Project) -> dict:
    """``conv_stack`` vs ``pdet_unet`` (both unrolled, best epoch by validation rollout) for the
    wall-clock of the configured epochs of ``conv_stack``; val and test rollout nRMSE of each
    (:mod:`benchmarks.head_to_head`).  Quick: 1 budget epoch on 4 trajectories."""
    kwargs = ({"architectures": ["conv_stack", "pdet_unet"], "epochs": 1, "probe_items": 4,
               "max_items": 4} if s.quick else
              {"architectures": ["conv_stack", "pdet_unet"], "probe_items": 32})
    result, child = worker(project, "h2h", **kwargs)
    return {**result, "wall_sec": child.wall_sec}
