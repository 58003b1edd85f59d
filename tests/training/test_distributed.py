"""Data-parallel training: 2 gloo CPU processes against 1 process with the same global batch.

Tolerance: the two runs differ only in floating-point summation order (each rank's weighted
gradient is summed across ranks instead of being computed over the whole batch at once), so
weights, EMA weights and per-epoch losses must agree to ``RTOL`` relative / ``ATOL`` absolute.
Measured on the reference set-up (5 epochs of AdamW + warm-up/cosine + EMA + clipping +
accumulation): max |Δweight| ≈ 3e-8, max relative Δloss ≈ 1e-7.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ups_kedro.config import ConfigError, parse
from ups_kedro.training import distributed, spawn
from ups_kedro.training.config import DistributedConfig, TrainConfig
from ups_kedro.training.launcher import fit

from training_support import RegressionData, RegressionTask, make_model, resume_cfg

RTOL, ATOL = 1e-5, 1e-6
COMPARED = ("loss", "loss_mse", "loss_mae", "val_loss", "val_mse", "lr", "grad_norm",
            "grad_norm_max", "epochs_since_improve")


def _ddp(cfg: TrainConfig, n: int = 2, **kw) -> TrainConfig:
    return dataclasses.replace(
        cfg, distributed=DistributedConfig(nproc_per_node=n, threads_per_proc=1, **kw))


def _max_rel(a: float, b: float) -> float:
    return abs(a - b) / max(abs(a), 1e-12)


@pytest.mark.parametrize(
    ("n_train", "batch_size", "start_method"),
    [
        (40, 8, "spawn"),  # 4 samples per rank, accumulation with a trailing short group
        (43, 7, "fork"),   # 7 = 4 + 3 per rank; the last global batch (1 sample) leaves rank 1 empty
    ],
)
def test_two_processes_match_one_process(
    n_train: int, batch_size: int, start_method: str, tmp_path: Path
) -> None:
    train, val = RegressionData(n=n_train, seed=1), RegressionData(n=15, seed=2)
    cfg = resume_cfg(batch_size=batch_size, checkpoint_interval=0)
    single = fit(make_model(), RegressionTask(), train, val, cfg, stage="ddp")

    seen: list[tuple[int, dict[str, float]]] = []
    model = make_model()
    multi = fit(model, RegressionTask(), train, val, _ddp(cfg, start_method=start_method),
                stage="ddp", state_dir=tmp_path / "state",
                on_epoch_end=lambda e, m: seen.append((e, m)))

    # Callback ran here (the parent), once per epoch, with the returned history's values.
    assert [e for e, _ in seen] == [h["epoch"] for h in multi.history] == [1, 2, 3, 4, 5]
    assert seen[-1][1]["loss"] == multi.history[-1]["loss"]
    assert (multi.best_epoch, multi.stopped_reason, multi.epochs_run) == (
        single.best_epoch, single.stopped_reason, single.epochs_run)
    for key, value in single.model_state.items():
        torch.testing.assert_close(multi.model_state[key], value, rtol=RTOL, atol=ATOL)
        torch.testing.assert_close(model.state_dict()[key], value, rtol=RTOL, atol=ATOL)
    assert single.ema_state is not None and multi.ema_state is not None
    for key, value in single.ema_state.items():
        torch.testing.assert_close(multi.ema_state[key], value, rtol=RTOL, atol=ATOL)
    for a, b in zip(single.history, multi.history, strict=True):
        for key in COMPARED:
            assert _max_rel(a[key], b[key]) <= RTOL or abs(a[key] - b[key]) <= ATOL, (key, a, b)
    # Rank 0 wrote the resumable state (with every rank's RNG state).
    from ups_kedro.training.checkpoint import load_train_state

    state = load_train_state(tmp_path / "state" / "last.pt")
    assert state.finished and state.rank_rngs is not None and len(state.rank_rngs) == 1


def test_sharded_sampler_draws_like_random_sampler() -> None:
    """Same global batches and the same generator state after an epoch as shuffle=True."""
    from torch.utils.data import DataLoader

    data = RegressionData(n=23)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    plain = [b["x"] for b in DataLoader(data, batch_size=6, shuffle=True, generator=g1)]
    shards = []
    for rank in range(3):
        g = torch.Generator().manual_seed(5)
        sampler = distributed.ShardedBatchSampler(23, 6, rank=rank, world_size=3, shuffle=True,
                                                  generator=g)
        loader = DataLoader(data, batch_sampler=sampler, generator=g,
                            collate_fn=distributed.ShardCollate(None))
        shards.append(list(loader))
        if rank == 0:
            g2 = g
    for i, batch in enumerate(plain):
        parts = [s[i]["x"] for s in shards if s[i] is not None]
        torch.testing.assert_close(torch.cat(parts), batch, rtol=0, atol=0)
    assert torch.equal(g1.get_state(), g2.get_state())


def test_distributed_config_is_parsed_strictly() -> None:
    cfg = parse(TrainConfig, {"epochs": 1, "batch_size": 4,
                              "distributed": {"nproc_per_node": 2}}, "operator.train")
    assert cfg.distributed.nproc_per_node == 2 and cfg.distributed.backend == "auto"
    assert TrainConfig(epochs=1, batch_size=4).distributed.nproc_per_node == 1
    with pytest.raises(ConfigError, match="did you mean 'nproc_per_node'"):
        parse(TrainConfig, {"epochs": 1, "batch_size": 4,
                            "distributed": {"nprocs_per_node": 2}}, "operator.train")
    with pytest.raises(ConfigError, match="operator.train.distributed.backend 'nccl' needs a CUDA"):
        parse(TrainConfig, {"epochs": 1, "batch_size": 4,
                            "distributed": {"backend": "nccl"}}, "operator.train")
    with pytest.raises(ConfigError, match="nproc_per_node must be ≥ 1"):
        parse(TrainConfig, {"epochs": 1, "batch_size": 4,
                            "distributed": {"nproc_per_node": 0}}, "operator.train")


def test_worker_failure_is_reported_with_its_traceback() -> None:
    from training_support import FailAt

    train, val = RegressionData(n=16, seed=1), RegressionData(n=8, seed=2)
    cfg = _ddp(resume_cfg(epochs=2, checkpoint_interval=0))
    with pytest.raises(spawn.DistributedWorkerError, match="simulated kill"):
        fit(make_model(), FailAt(1, 2), train, val, cfg, stage="ddp")


# --------------------------------------------------------------------------------------------
# Real Kedro runs: spawned from the node, and under torchrun


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory):
    from tests.conftest import project_copy, run_kedro

    with project_copy(tmp_path_factory.mktemp("ddp")) as root:
        for stage in ("data_processing", "autoencoder"):
            run_kedro(root, stage)
        yield root


def _operator_runs() -> list:
    import mlflow

    runs = mlflow.search_runs(experiment_names=["ups_kedro"], output_format="list")
    return [r for r in runs if r.data.tags.get("ups.pipeline") == "operator"]


@pytest.mark.integration
def test_kedro_operator_with_two_processes_logs_one_run(upstream: Path) -> None:
    import mlflow

    from tests.conftest import run_kedro

    before = len(_operator_runs())
    run_kedro(upstream, "operator",
              params={"operator": {"train": {"distributed": {"nproc_per_node": 2}}}})
    runs = _operator_runs()
    assert len(runs) == before + 1
    run = runs[0] if before == 0 else max(runs, key=lambda r: r.info.start_time)
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "operator/loss")
    assert sorted(m.step for m in history) == [1, 2, 3]  # each epoch logged once, by rank 0
    assert run.data.params["operator.train.distributed.nproc_per_node"] == "2"
    ckpt = torch.load(upstream / "data/smoke/06_models/operator.pt", weights_only=True)
    assert ckpt["lineage"]["mlflow_run_id"] == run.info.run_id


@pytest.mark.integration
def test_torchrun_two_ranks_one_run_and_rank0_writes(upstream: Path) -> None:
    before = {r.info.run_id for r in _operator_runs()}
    ckpt = upstream / "data/smoke/06_models/operator.pt"
    env = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "1", "MLFLOW_DISABLE_TELEMETRY": "true",
           "PYTHONUNBUFFERED": "1", "COLUMNS": "250"}  # rich must not wrap the log lines
    out = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         "-m", "kedro", "run", "--pipeline", "operator", "--env", "smoke",
         "--params", "operator.force=true"],  # the fixture's operator is up to date: retrain
        cwd=upstream, env=env, capture_output=True, text=True, timeout=600, check=False)
    log = out.stdout + out.stderr
    assert out.returncode == 0, log[-4000:]
    assert "torchrun rank 1: outputs kept in memory" in log
    assert "torchrun rank 0 of 2" in log
    assert "Saving data to operator.checkpoint (MemoryDataset)" in log  # rank 1
    assert log.count("operator epoch 3:") == 1  # only rank 0 calls the epoch logger
    new = [r for r in _operator_runs() if r.info.run_id not in before]
    assert len(new) == 1, [r.info.run_id for r in new]  # rank 1 started no MLflow run
    saved = torch.load(ckpt, weights_only=True)
    assert saved["lineage"]["mlflow_run_id"] == new[0].info.run_id  # written by rank 0
