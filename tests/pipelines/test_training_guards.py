"""The training engine's guards in real Kedro sessions (smoke sizes, real MLflow store):
a diverged run and a locked stage leave the published checkpoint as it was, the run-level
tags reach the MLflow run, and stage seeds derive from the top-level seed.

One project copy serves the module (data_processing → autoencoder → operator, ~1-2 min on a
loaded 2-core machine, like ``test_training_chain.py``).
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import mlflow
import pytest

from tests.conftest import project_copy, run_kedro
from ups_kedro.training import seeds
from ups_kedro.training.health import DivergenceError
from ups_kedro.training.lock import StageLockedError

pytestmark = pytest.mark.integration
SRC = Path(__file__).resolve().parents[2] / "src"


def _drop_train_seed(root: Path, stage: str) -> None:
    """No explicit train.seed (so it is derived), whether or not the file still pins one."""
    path = root / "conf/base" / f"parameters_{stage}.yml"
    text = path.read_text()
    path.write_text(re.sub(r"(\n  train:\n(?:    .*\n)*?)    seed: \d+\n", r"\1", text, count=1))


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with project_copy(tmp_path_factory.mktemp("guards")) as root:
        _drop_train_seed(root, "operator")
        for stage in ("data_processing", "autoencoder", "operator"):
            run_kedro(root, stage)
        yield root
        seeds.set_base_seed(None)


def _digest(root: Path) -> str:
    return hashlib.sha256((root / "data/smoke/06_models/operator.pt").read_bytes()).hexdigest()


def _last_run(pipeline: str) -> mlflow.entities.Run:
    runs = mlflow.search_runs(experiment_names=["ups_kedro"], output_format="list",
                              filter_string=f"tags.`ups.pipeline` = '{pipeline}'",
                              order_by=["attributes.start_time DESC"])
    return runs[0]


def test_run_level_tags_and_derived_seed(trained: Path) -> None:
    tags = _last_run("operator").data.tags
    assert tags["ups.seed"] == "0"
    assert tags["ups.operator.seed"] == str(seeds.derive_seed(0, "operator"))
    assert tags["ups.operator.resumed_from"] == "0"
    assert int(tags["ups.operator.num_threads"]) >= 1
    assert float(tags["ups.operator.initial_val_loss"]) > 0
    # A runtime --params seed=N gives every derived stage seed a new value.
    run_kedro(trained, "operator", params={"seed": 5, "operator": {"train": {"epochs": 1}}})
    tags = _last_run("operator").data.tags
    assert tags["ups.seed"] == "5"
    assert tags["ups.operator.seed"] == str(seeds.derive_seed(5, "operator"))


def test_diverged_run_does_not_replace_the_checkpoint(trained: Path) -> None:
    before = _digest(trained)
    with pytest.raises(DivergenceError, match="stage 'operator' diverged at epoch 1"):
        run_kedro(trained, "operator",
                  params={"operator": {"train": {"optimizer": {"lr": 1000.0}}}})
    assert _digest(trained) == before


def test_second_concurrent_run_is_refused(trained: Path) -> None:
    state_dir = trained / "data/smoke/06_models/state/operator"
    code = textwrap.dedent(f"""
        import time
        from pathlib import Path
        from ups_kedro.training.lock import StageLock
        with StageLock(Path({str(state_dir)!r}), "operator", "first-run"):
            print("held", flush=True)
            time.sleep(120)
    """)
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                              env={**os.environ, "PYTHONPATH": str(SRC)})
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        before = _digest(trained)
        with pytest.raises(StageLockedError,
                           match=f"operator is locked by pid {holder.pid}, run first-run"):
            run_kedro(trained, "operator")
        assert _digest(trained) == before
    finally:
        holder.kill()
        holder.wait()
