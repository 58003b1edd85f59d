"""Re-run only what changed (issue 13), in real Kedro sessions on one smoke chain.

One project copy serves the module: the whole default pipeline is run, run again (every node
up to date: nothing runs, every stage says it is reused), then run with one Stage 2 parameter
changed (Stage 2, Stage 3 and evaluation rerun, nothing upstream); then a killed stage resumes
through its status file and a hand-edited status file retrains.  Every run uses the runner
``kedro run`` uses (:class:`ups_kedro.runner.ReuseRunner`).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from tests.conftest import project_copy
from ups_kedro.pipelines.stage_dry_run import dry_run, format_table
from ups_kedro.runner import ReuseRunner
from ups_kedro.training import stage_status as st

pytestmark = pytest.mark.integration
TRAINED = ("autoencoder", "steady_prior/autoencoder", "steady_prior", "operator",
           "diff_residual", "consistency_distill")
SAME: dict = {}  # no runtime parameters: the unchanged runs
STAGE2 = {"diff_residual": {"corrector": {"train": {"epochs": 3}}}}  # Stage 2's own epochs


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def _run(root: Path, params: dict, pipeline: str = "__default__") -> tuple[list[str], float]:
    """(stage_cache and runner log lines, wall seconds) of one ``kedro run``."""
    from kedro.framework.session import KedroSession
    from kedro.framework.startup import bootstrap_project

    handler = _Lines()
    logs = [logging.getLogger(name) for name in ("ups_kedro.pipelines.stage_cache",
                                                 "ups_kedro.runner")]
    for log in logs:
        log.addHandler(handler)
    try:
        started = time.perf_counter()
        bootstrap_project(root)
        with KedroSession.create(project_path=root, env="smoke", runtime_params=params) as session:
            session.run(pipeline_names=[pipeline], runner=ReuseRunner())
        return handler.lines, time.perf_counter() - started
    finally:
        for log in logs:
            log.removeHandler(handler)


def _skipped(lines: list[str]) -> tuple[int, int]:
    """(skipped, total) nodes from the runner's summary line ((0, 0) when nothing was skipped)."""
    for line in lines:
        if line.startswith("Re-run only what changed: "):
            skipped, _, total = line.split(": ", 1)[1].split()[:3]
            return int(skipped), int(total)
    return 0, 0


def _last_run() -> mlflow.entities.Run:
    return mlflow.search_runs(experiment_names=["ups_kedro"], output_format="list",
                              order_by=["attributes.start_time DESC"], max_results=1)[0]


def _jsonl(root: Path, stage: str) -> list[dict]:
    path = root / "data/smoke/08_reporting/logs" / f"{stage.replace('/', '.')}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _state_dir(root: Path, stage: str) -> Path:
    sub = {"steady_prior/autoencoder": "steady_prior/autoencoder",
           "steady_prior": "steady_prior/prior"}.get(stage, stage)
    return root / "data/smoke/06_models/state" / sub


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    with project_copy(tmp_path_factory.mktemp("cache")) as root:
        first_lines, first = _run(root, SAME)
        first_run = _last_run()
        logs = {stage: _jsonl(root, stage) for stage in TRAINED}
        second_lines, second = _run(root, SAME)
        second_run = _last_run()
        yield {"root": root, "first": first, "second": second, "first_run": first_run,
               "second_run": second_run, "first_lines": first_lines,
               "second_lines": second_lines, "logs": logs}


def test_second_run_trains_nothing_and_records_the_source_runs(chain: dict) -> None:
    root, source = chain["root"], chain["first_run"].info.run_id
    print(f"\nsmoke wall time: first {chain['first']:.1f} s, second {chain['second']:.1f} s "
          f"({chain['second'] / chain['first']:.0%}); load {os.getloadavg()[0]:.2f}")
    for stage in TRAINED:
        line = f"{stage}: up to date (fingerprint "
        said = [m for m in chain["second_lines"] if m.startswith(line)]
        assert len(said) == 1 and f"trained in run {source}) — reused" in said[0], stage
        assert _jsonl(root, stage) == chain["logs"][stage], f"{stage} trained again"
        status = st.read_status(_state_dir(root, stage))
        assert status.state == st.FINISHED and status.run_id == source
    assert not any(": training (" in m for m in chain["second_lines"])
    skipped, total = _skipped(chain["second_lines"])
    assert skipped == total > 20, chain["second_lines"][:3]  # no node ran at all
    run = chain["second_run"]
    for stage in TRAINED:
        assert run.data.tags[f"ups.{stage}.reused_from"] == source
    assert run.data.tags["ups.evaluation.reused_from"] == source
    # The reused stages' final metrics, and the evaluation's, are on the new run.
    assert "operator/best_val_loss" in run.data.metrics and "operator/val_loss" in run.data.metrics
    first = chain["first_run"].data.metrics
    scores = {k: v for k, v in first.items() if k.startswith("evaluation/")}
    assert scores and all(run.data.metrics[k] == v for k, v in scores.items())
    assert chain["second"] < chain["first"]


def test_kedro_status_lists_every_stage_without_training(chain: dict) -> None:
    from click.testing import CliRunner

    from ups_kedro.cli import cli

    before = {stage: _jsonl(chain["root"], stage) for stage in TRAINED}
    result = CliRunner().invoke(cli, ["status", "--env", "smoke"])
    assert result.exit_code == 0, result.output
    rows = [line for line in result.output.splitlines()
            if "up to date" in line and not line.startswith("nodes: ")]
    assert {row.split()[0] for row in rows} == set(TRAINED), result.output
    nodes = [line for line in result.output.splitlines() if line.startswith("nodes: ")]
    assert nodes and nodes[0].endswith(", 0 would run"), result.output
    assert {stage: _jsonl(chain["root"], stage) for stage in TRAINED} == before


def test_a_removed_output_is_remade_by_its_node_alone(chain: dict) -> None:
    root = chain["root"]
    report = root / "data/smoke/08_reporting/evaluation_report.html"
    before = {stage: _jsonl(root, stage) for stage in TRAINED}
    report.unlink()
    lines, _ = _run(root, SAME)
    assert report.is_file()
    said = [m for m in lines if m.startswith("evaluation.render_report: runs (")]
    assert said and "output evaluation.report was changed or removed" in said[0], lines
    assert not [m for m in lines if ": runs (" in m and not m.startswith("evaluation.render")]
    skipped, total = _skipped(lines)
    assert skipped == total - 1
    assert {stage: _jsonl(root, stage) for stage in TRAINED} == before


def test_jsonl_has_one_whole_line_per_epoch(chain: dict) -> None:
    lines = chain["logs"]["operator"]
    assert [r["epoch"] for r in lines] == [1, 2, 3]
    for key in ("loss", "loss_forward", "val_loss", "lr", "grad_norm", "grad_vanishing",
                "grad_exploding", "samples_per_sec", "epoch_time_sec", "wall_time", "run_id"):
        assert key in lines[0], key
    artifacts = mlflow.MlflowClient().list_artifacts(chain["first_run"].info.run_id, "logs")
    assert "logs/operator.jsonl" in {a.path for a in artifacts}


def test_a_stage2_change_retrains_stage2_stage3_only(chain: dict) -> None:
    root = chain["root"]
    verdicts = {v.stage: v for v in dry_run(root, "smoke", STAGE2)}
    print("\n" + format_table(list(verdicts.values())))
    for stage in ("autoencoder", "operator", "steady_prior/autoencoder", "steady_prior"):
        assert verdicts[stage].state == "up to date", verdicts[stage]
    assert verdicts["diff_residual"].state == "train"
    assert "parameter corrector.train.epochs: 2 → 3" in verdicts["diff_residual"].reason
    assert verdicts["consistency_distill"].state == "train"
    assert "upstream retrains (train_diff_residual)" in verdicts["consistency_distill"].reason
    forced = {v.stage: v for v in dry_run(root, "smoke", {**SAME, "operator": {"force": True}})}
    assert forced["operator"].reason == "operator.force is true"
    assert [forced[s].state for s in ("autoencoder", "diff_residual", "consistency_distill")] == [
        "up to date", "train", "train"]

    lines, _ = _run(root, STAGE2)
    run = _last_run()
    for stage in ("autoencoder", "operator", "steady_prior/autoencoder", "steady_prior"):
        assert any(m.startswith(f"{stage}: up to date") for m in lines), stage
        assert _jsonl(root, stage) == chain["logs"][stage]
    assert any(m.startswith("diff_residual: training") and "corrector.train.epochs: 2 → 3" in m
               for m in lines)
    assert any(m.startswith("consistency_distill: training") and "input diff_residual changed"
               in m for m in lines)
    new = [r for r in _jsonl(root, "diff_residual") if r["run_id"] == run.info.run_id]
    assert [r["epoch"] for r in new] == [1, 2, 3]
    assert any(r["run_id"] == run.info.run_id for r in _jsonl(root, "consistency_distill"))
    history = mlflow.MlflowClient().get_metric_history(run.info.run_id, "diff_residual/loss")
    assert [m.step for m in history] == [1, 2, 3]
    assert "ups.diff_residual.reused_from" not in run.data.tags
    assert "ups.consistency_distill.reused_from" not in run.data.tags
    assert run.data.tags["ups.operator.reused_from"] == chain["first_run"].info.run_id
    assert any(k.startswith("evaluation/") for k in run.data.metrics)


def test_a_killed_stage_resumes_through_its_status_file(chain: dict) -> None:
    root = chain["root"]
    params = "operator.train.epochs=6"
    state_dir = _state_dir(root, "operator")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kedro", "run", "--env", "smoke", "--pipeline", "operator",
         "--params", params], cwd=root, env={**os.environ, "PYTHONUNBUFFERED": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline and proc.poll() is None:
            status = _try_status(state_dir)
            if status is not None and status.state == st.RUNNING and status.epochs_done >= 2:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    killed = st.read_status(state_dir)
    assert killed.state == st.RUNNING and st.effective_state(killed, state_dir) == st.KILLED
    lines, _ = _run(root, {"operator": {"train": {"epochs": 6}}}, "operator")
    assert any(m.startswith("operator: resuming") and "was killed after epoch" in m
               for m in lines), lines
    run = _last_run()
    assert int(run.data.tags["ups.operator.resumed_from"]) >= 2
    done = st.read_status(state_dir)
    assert done.state == st.FINISHED and done.epochs_done == 6
    assert done.checkpoint_id == killed.checkpoint_id  # one training, resumed
    epochs = [r["epoch"] for r in _jsonl(root, "operator")
              if r["training_id"] == done.checkpoint_id]
    assert epochs == [1, 2, 3, 4, 5, 6]  # replayed epochs are not logged twice


def _try_status(state_dir: Path) -> st.StageStatus | None:
    try:
        return st.read_status(state_dir)
    except st.StatusFileError:
        return None


def test_a_hand_edited_status_file_warns_and_retrains(chain: dict) -> None:
    root = chain["root"]
    path = _state_dir(root, "operator") / "status.json"
    body = json.loads(path.read_text())
    body["state"] = "finished"
    body["epochs_done"] = 99  # edited without the checksum
    path.write_text(json.dumps(body))
    lines, _ = _run(root, {"operator": {"train": {"epochs": 6}}}, "operator")
    warned = [m for m in lines if "was edited or corrupted" in m]
    assert warned and str(path) in warned[0] and "retrains" in warned[0]
    assert any(m.startswith("operator: training") for m in lines)
    assert st.read_status(path.parent).state == st.FINISHED
    path.write_text("{not json")
    lines, _ = _run(root, {"operator": {"train": {"epochs": 6}}}, "operator")
    assert any("is unreadable" in m and str(path) in m for m in lines)
    assert any(m.startswith("operator: training") for m in lines)
