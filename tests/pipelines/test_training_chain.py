"""The training chain in real Kedro sessions (smoke sizes) with a real MLflow store.

The chain is the session's smoke ``make run`` (``tests/conftest.py: smoke_chain``), in this
module's own copy; the tests re-run single stages on it as a user would
(``kedro run --pipeline operator`` …).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch

from tests.conftest import chain_copy, run_kedro
from ups_kedro.stages import TRANSIENT_STAGES

pytestmark = pytest.mark.integration
STAGES = ("data_processing", *TRANSIENT_STAGES)


@pytest.fixture(scope="module")
def chain(smoke_chain: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with chain_copy(smoke_chain, tmp_path_factory.mktemp("training_chain")) as root:
        yield root


def _runs() -> dict[str, mlflow.entities.Run]:
    """The stage runs of the smoke ``make run`` (one per stage, children of its run)."""
    (parent,) = mlflow.search_runs(experiment_names=["ups_kedro"], output_format="list",
                                   filter_string="tags.`ups.pipeline` = '__default__'")
    runs = mlflow.search_runs(experiment_names=["ups_kedro_stages"], output_format="list",
                              filter_string=f"tags.`ups.parent_run_id` = '{parent.info.run_id}'")
    return {r.data.tags["ups.stage"]: r for r in runs}


def _ckpt(root: Path, stage: str) -> dict:
    return torch.load(root / "data/smoke/06_models" / f"{stage}.pt", weights_only=True)


def test_each_stage_is_one_mlflow_run_with_epoch_metrics(chain: Path) -> None:
    runs = _runs()
    assert set(STAGES) <= set(runs)
    client = mlflow.MlflowClient()
    for stage in STAGES[1:]:
        run = runs[stage]
        history = client.get_metric_history(run.info.run_id, f"{stage}/loss")
        assert [m.step for m in history] == list(range(1, len(history) + 1)) and history
        for key in ("val_loss", "lr", "grad_norm", "epochs_since_improve", "epoch_time_sec"):
            assert f"{stage}/{key}" in run.data.metrics, (stage, key)
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "checkpoints")}
        assert f"checkpoints/{stage}.pt" in artifacts
    # Params are flattened; lineage tags name the upstream artifacts consumed.
    op = runs["operator"]
    assert op.data.params["operator.model.architecture"] == "pdet_unet"
    assert op.data.tags["ups.operator.input.encoder_hash"] == _ckpt(chain, "autoencoder")[
        "lineage"]["encoder_hash"]
    assert "operator/loss_inv_enc" in op.data.metrics  # physical losses are on in smoke


def test_checkpoints_are_self_describing_and_linked(chain: Path) -> None:
    ae, op = _ckpt(chain, "autoencoder"), _ckpt(chain, "operator")
    diff, student = _ckpt(chain, "diff_residual"), _ckpt(chain, "consistency_distill")
    assert ae["kind"] == "autoencoder" and op["kind"] == "latent_operator"
    # Stage 2 default: a rollout corrector; Stage 3: its one-evaluation student.
    assert diff["kind"] == "rollout_corrector" and student["kind"] == "rollout_corrector"
    assert student["config"]["kind"] == "deterministic"
    encoder = ae["lineage"]["encoder_hash"]
    for ckpt in (op, diff, student):
        assert ckpt["lineage"]["encoder_hash"] == encoder
        assert ckpt["normaliser"] == ae["normaliser"]
    assert diff["lineage"]["operator_run_id"] == op["lineage"]["mlflow_run_id"]
    assert student["lineage"]["diff_residual_run_id"] == diff["lineage"]["mlflow_run_id"]
    # Stage 3 never overwrote Stage 2: the teacher file still holds the model Stage 2 trained.
    teacher_now = torch.load(chain / "data/smoke/06_models/diff_residual.pt", weights_only=True)
    assert teacher_now["lineage"]["mlflow_run_id"] == diff["lineage"]["mlflow_run_id"]
    assert teacher_now["lineage"]["stage"] == "diff_residual"


def test_evaluations_compare_against_persistence(chain: Path) -> None:
    reports = chain / "data/smoke/08_reporting"
    op = json.loads((reports / "operator_metrics.json").read_text())
    assert op["val_persistence_nrmse"] > 0 and op["val_operator_nrmse"] > 0
    assert np.isfinite(op["val_operator_one_step_nrmse"])
    diff = json.loads((reports / "diff_residual_metrics.json").read_text())
    assert any(k.startswith("val_diff_residual_") and k.endswith("_nfe_per_step") for k in diff)
    cd = json.loads((reports / "consistency_distill_metrics.json").read_text())
    assert cd["val_consistency_distill_1step_nfe_per_step"] == 2.0  # operator + one student call
    latents = np.load(chain / "data/smoke/05_model_input/latents_train/data.npy", mmap_mode="r")
    assert latents.ndim == 4  # [trajectories, time, tokens, dim]


def test_latents_from_another_encoder_are_refused(chain: Path) -> None:
    meta_path = chain / "data/smoke/05_model_input/latents_train/meta.json"
    original = meta_path.read_text()
    meta = json.loads(original)
    meta["encoder_hash"] = "0123456789abcdef"
    meta_path.write_text(json.dumps(meta))
    try:
        with pytest.raises(Exception, match="latents were written by another autoencoder"):
            run_kedro(chain, "operator")
    finally:
        meta_path.write_text(original)


def _wait_for_epoch(state: Path, epoch: int, proc: subprocess.Popen, timeout: float = 300) -> None:
    from ups_kedro.training.checkpoint import load_train_state

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"kedro run ended before epoch {epoch} (exit {proc.returncode})")
        if state.is_file():
            try:
                saved = load_train_state(state)
                if saved.epoch >= epoch and not saved.finished:  # not the previous run's
                    return
            except (OSError, RuntimeError, EOFError):
                pass  # replaced while we read it; try again
        time.sleep(0.2)
    raise AssertionError(f"no epoch {epoch} state within {timeout} s")


def test_killed_stage_resumes_to_the_uninterrupted_result(chain: Path) -> None:
    """SIGKILL `kedro run --pipeline operator` after epoch 2; the re-run ends where an
    uninterrupted run ends (same seed, CPU: identical weights and validation loss).

    The killed run is forced (``operator.force``): with the same parameters the stage is up
    to date after the reference run and would be reused.  Its status file then says
    ``running`` with a free lock (killed), so the next plain run resumes it."""
    params = {"operator": {"train": {"epochs": 4}}}
    run_kedro(chain, "operator", params=params)
    reference = _ckpt(chain, "operator")

    state = chain / "data/smoke/06_models/state/operator/last.pt"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "kedro", "run", "--env", "smoke", "--pipeline", "operator",
         "--params", "operator.train.epochs=4,operator.force=true"],
        cwd=chain, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_epoch(state, 2, proc)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL

    run_kedro(chain, "operator", params=params)
    resumed = _ckpt(chain, "operator")
    assert resumed["metrics"]["best_val_loss"] == reference["metrics"]["best_val_loss"]
    for key, tensor in reference["state_dict"].items():
        assert torch.equal(resumed["state_dict"][key], tensor), key
    # The resumed MLflow run replays epochs 1-2, so its curve is complete.
    run = mlflow.search_runs(experiment_names=["ups_kedro"], output_format="list",
                             order_by=["attributes.start_time DESC"], max_results=1)[0]
    steps = [m.step for m in mlflow.MlflowClient().get_metric_history(run.info.run_id,
                                                                       "operator/loss")]
    assert steps == [1, 2, 3, 4]


def test_edm_residual_diffusion_stays_an_option(chain: Path) -> None:
    """``diff_residual.method: edm`` trains the original's diffusion model; Stage 3 then runs
    the consistency distillation of it (the rollout path is for rollout correctors only)."""
    run_kedro(chain, "diff_residual", params={"diff_residual": {"method": "edm"}})
    run_kedro(chain, "consistency_distill")
    diff, student = _ckpt(chain, "diff_residual"), _ckpt(chain, "consistency_distill")
    assert diff["kind"] == student["kind"] == "diffusion_residual"
    assert diff["config"]["parameterisation"] == "edm"
    assert student["config"]["parameterisation"] == "consistency"
    metrics = json.loads((chain / "data/smoke/08_reporting/diff_residual_metrics.json")
                         .read_text())
    assert "val_diff_residual_4step_nrmse" in metrics
