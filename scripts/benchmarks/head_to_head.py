"""Stage 1 head-to-head: operator architectures trained for the same wall-clock, then scored.

Run inside a project copy by ``benchmarks.worker h2h`` (see ``sections.operator_h2h``).

Equal wall-clock: a one-epoch probe of every architecture (full rollout horizon, no curriculum,
``probe_items`` trajectories) measures its training samples/s; the budget is what the configured
number of epochs costs the *default* architecture, and every architecture gets the epochs that
fit that budget at its own speed (the one-step warm-up and the rollout curriculum are scaled
with them).  Each is then
trained by the operator's own node (unrolled loss, best epoch by the decoded validation
rollout) and scored on the validation and test rollouts by the evaluation's functions.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

#: model settings per architecture (the rest follows ``parameters_operator.yml``)
ARCHITECTURES: dict[str, dict[str, Any]] = {
    "conv_stack": {"model.architecture": "conv_stack"},
    "pdet_unet": {"model.architecture": "pdet_unet", "model.depths": [1, 1, 2],
                  "model.mlp_ratio": 2.0},
}

KEYS = ("nrmse", "nrmse_h1", "nrmse_h10", "nrmse_last")


def _node_call(project, overrides: dict, max_items: int | None) -> tuple[dict, list[dict], float]:
    from benchmarks.worker import _call_with_history, _find_node

    node = _find_node("operator")
    with tempfile.TemporaryDirectory(prefix="h2h-state-") as state:  # never resume a stale run
        overrides = {**overrides, "state_dir": state}
        inputs = [project.load(name, max_items, overrides) for name in node.inputs]
        return _call_with_history(node, inputs)


def _scores(project, ckpt: dict) -> dict[str, dict[str, float]]:
    """Decoded operator rollouts on the validation and test splits (PDEBench protocol)."""
    import numpy as np

    from ups_kedro.evaluation.variants import operator_variant, score_variants
    from ups_kedro.training.artifacts import load_module

    ae_ckpt = project.load("autoencoder.checkpoint")
    op, ae = load_module(ckpt), load_module(ae_ckpt)
    out = {}
    for split in ("val", "test"):
        bundle = project.load(f"data_processing.fields_{split}")
        fields = np.asarray(bundle.array, dtype=np.float32)
        scores, _ = score_variants([operator_variant(op, ckpt["dt"])], fields,
                                   ae_ckpt["normaliser"], ae.encode, ae.decode,
                                   int(bundle.meta["initial_step"]), ckpt["time_stride"], 64)
        out[split] = {k: scores["operator"][k] for k in KEYS if k in scores["operator"]}
    return out


def head_to_head(project, architectures: list[str], epochs: int | None = None,
                 probe_items: int | None = 32, max_items: int | None = None) -> dict:
    """Train every architecture for the default architecture's wall-clock; score each.

    Args:
        architectures: keys of :data:`ARCHITECTURES`; the first one sets the budget.
        epochs: the budget architecture's epochs (None: the configured ``train.epochs``).
        probe_items: training trajectories of the speed probes.
        max_items: training trajectories of the real runs (None: all).
    """
    params = project.load("params:operator")
    epochs = epochs or int(params["train"]["epochs"])
    schedule = {key: int(params["loss"].get(key, 0))   # epoch counts scaled with the epochs
                for key in ("rollout_warmup_epochs", "rollout_curriculum_epochs")}
    speed = {}
    for arch in architectures:  # probes: full horizon, training samples/s only
        probe = {**ARCHITECTURES[arch], "train.epochs": 1, "train.progress": False,
                 "loss.rollout_warmup_epochs": 0, "loss.rollout_curriculum_epochs": 0,
                 "select_on_rollout": False}
        _, history, _ = _node_call(project, probe, probe_items)
        speed[arch] = history[-1]["samples_per_sec"]
    budget_arch = architectures[0]
    out: dict[str, Any] = {"budget_architecture": budget_arch, "budget_epochs": epochs,
                           "architectures": {}}
    for arch in architectures:
        scale = speed[arch] / speed[budget_arch]   # epochs of this arch per budget epoch
        arch_epochs = max(1, round(epochs * scale))
        overrides = {**ARCHITECTURES[arch], "train.epochs": arch_epochs, "train.progress": False,
                     **{f"loss.{key}": round(n * arch_epochs / epochs)
                        for key, n in schedule.items()}}
        started = time.perf_counter()
        ckpt, history, train_sec = _node_call(project, overrides, max_items)
        out["architectures"][arch] = {
            "epochs": arch_epochs, "train_sec": train_sec,
            "epoch_sec_mean": sum(h["epoch_time_sec"] for h in history) / len(history),
            "probe_samples_per_sec": speed[arch],
            "best_epoch": ckpt["metrics"]["best_epoch"],
            "parameters": sum(v.numel() for v in ckpt["state_dict"].values()),
            **_scores(project, ckpt), "wall_sec": time.perf_counter() - started}
    ranked = sorted(out["architectures"], key=lambda a: out["architectures"][a]["val"]["nrmse"])
    out["winner_by_val_rollout"] = ranked[0]
    return out
