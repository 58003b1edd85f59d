"""Operator-stage (Stage 1) training throughput: 1 process vs N data-parallel processes.

Both runs happen in this one invocation, on the same synthetic latents shaped like the base
configuration's (``autoencoder.latent`` tokens × dim, 41 frames) and with the base operator
model, loss and optimizer (``conf/base/parameters_operator.yml``); only the epoch count, the
number of trajectories and the distributed block change.  Prints one JSON object to stdout:
samples/s of the last epoch (global samples over rank 0's training time), wall time and the
speed-up.  Another harness consumes it; progress goes to stderr.

    python scripts/bench_ddp.py [--nproc 2] [--epochs 2] [--trajectories 12]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from ups_kedro.config import parse
from ups_kedro.data.torch_data import LatentPairDataset
from ups_kedro.pipelines.operator.config import OperatorStageConfig
from ups_kedro.pipelines.operator.nodes import build_operator
from ups_kedro.training.config import DistributedConfig
from ups_kedro.training.launcher import fit
from ups_kedro.training.operator import OperatorTask

ROOT = Path(__file__).resolve().parents[1]


def _base_params() -> tuple[dict, dict]:
    op = yaml.safe_load((ROOT / "conf/base/parameters_operator.yml").read_text())["operator"]
    ae = yaml.safe_load((ROOT / "conf/base/parameters_autoencoder.yml").read_text())
    op.pop("state_dir", None)  # a ${globals:...} interpolation; no state is written here
    return op, ae["autoencoder"]["latent"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nproc", type=int, default=2)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--trajectories", type=int, default=12)
    parser.add_argument("--frames", type=int, default=41)
    args = parser.parse_args()

    op_params, latent = _base_params()
    op_params["train"] = {**op_params["train"], "epochs": args.epochs, "progress": False}
    cfg = parse(OperatorStageConfig, op_params, "operator")
    rng = np.random.default_rng(0)
    # latent.tokens null means one token per encoder patch: 32 on the default 256-point grid
    tokens = int(latent["tokens"] or 32)
    shape = (args.trajectories, args.frames, tokens, int(latent["dim"]))
    latents = rng.standard_normal(shape, dtype=np.float32)
    train = LatentPairDataset(latents, horizon=cfg.loss.horizon, time_stride=cfg.time_stride)
    task = OperatorTask(cfg.loss, 0.05, None)

    results = {}
    for nproc in (1, args.nproc):
        train_cfg = dataclasses.replace(
            cfg.train, distributed=DistributedConfig(nproc_per_node=nproc))
        torch.manual_seed(0)
        model = build_operator(cfg, latents.shape)
        started = time.perf_counter()
        result = fit(model, task, train, None, train_cfg, stage="bench_ddp")
        wall = time.perf_counter() - started
        last = result.history[-1]
        results[nproc] = {
            "nproc": nproc,
            "samples_per_sec": last["samples_per_sec"],
            "epoch_time_sec": last["epoch_time_sec"],
            "wall_sec": wall,
            "final_loss": last["loss"],
        }
        print(f"nproc={nproc}: {last['samples_per_sec']:.1f} samples/s, wall {wall:.1f}s",
              file=sys.stderr)
    one, many = results[1], results[args.nproc]
    print(json.dumps({
        "benchmark": "ddp_operator_throughput",
        "device": "cpu",
        "cpu_count": os.cpu_count(),
        "torch_threads_single": torch.get_num_threads(),
        "samples_per_epoch": len(train),
        "global_batch_size": cfg.train.batch_size,
        "epochs": args.epochs,
        "runs": [one, many],
        "speedup": many["samples_per_sec"] / one["samples_per_sec"],
        "final_loss_rel_diff": abs(many["final_loss"] - one["final_loss"])
        / max(abs(one["final_loss"]), 1e-12),
    }, indent=2))


if __name__ == "__main__":
    main()
