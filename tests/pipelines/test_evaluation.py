"""evaluation, promotion and inference in real Kedro sessions on the smoke chain.

One project copy of the session's smoke chain (``tests/conftest.py: smoke_chain``, the
``__default__`` pipeline run once, as ``make run`` does); each test runs the on-request pipelines
against it as a user would (``kedro run --pipeline evaluation`` …).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import h5py
import mlflow
import numpy as np
import pandas as pd
import pytest

from tests.conftest import chain_copy, run_kedro
from ups_kedro.evaluation import metrics
from ups_kedro.stages import TRANSIENT_STAGES

pytestmark = pytest.mark.integration
CHAIN = ("data_processing", *TRANSIENT_STAGES, "steady_prior", "evaluation")  # __default__
# Smoke models are far from good: relax the first-run gate so a champion exists to test with.
EASY_GATE = {"first_run": {"min_gain_vs_persistence": 0.01, "min_improvement_vs_operator": -10.0}}


@pytest.fixture(scope="module")
def evaluated(smoke_chain: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The session's smoke ``__default__`` run (what `make run` runs), in this module's copy."""
    with chain_copy(smoke_chain, tmp_path_factory.mktemp("evaluation")) as root:
        yield root


def _reports(root: Path) -> Path:
    return root / "data/smoke/08_reporting"


def _last_run(pipeline: str) -> mlflow.entities.Run:
    runs = mlflow.search_runs(experiment_names=["ups_kedro"], output_format="list",
                              filter_string=f"tags.`ups.pipeline` = '{pipeline}'",
                              order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0]


def _champion_version() -> str:
    client = mlflow.MlflowClient()
    return str(client.get_model_version_by_alias("ups_kedro_surrogate", "champion").version)


def test_every_variant_is_scored_and_the_rollout_file_rescores(evaluated: Path) -> None:
    table = pd.read_csv(_reports(evaluated) / "evaluation_metrics.csv", index_col="variant")
    expected = {"persistence", "solver", "operator", "diff_residual",
                "consistency_distill_1step", "consistency_distill_2step",
                "gated_consistency_distill_1step", "pdebench_fno_published"}
    assert expected <= set(table.index)
    for col in ("nrmse_h1", "nrmse_h5", "nrmse_h10", "nrmse_last", "rmse", "crmse", "frmse_low",
                "frmse_mid", "frmse_high", "max_error", "corr_steps_0.8", "corr_steps_0.95",
                "ms_per_trajectory", "nfe_per_step"):
        assert np.isfinite(table.loc["operator", col]), col
    # The solver re-solves the same trajectories from the same frame: near-exact.
    assert table.loc["solver", "nrmse"] < 1e-3
    horizons = pd.read_csv(_reports(evaluated) / "evaluation_nrmse_by_horizon.csv")
    steps = int(horizons["horizon"].max())
    # Threshold calibrated on validation (the median latent change): some steps, not all.
    fraction = table.loc["gated_consistency_distill_1step", "corrected_fraction"]
    assert 0 < fraction < 1 and steps > 1
    assert table.loc["gated_consistency_distill_1step", "nfe_per_step"] == pytest.approx(
        1 + fraction)

    # Anyone can re-score the HDF5 file: PDEBench layout, given frames first.
    with h5py.File(evaluated / "data/smoke/07_model_output/rollouts.h5") as f:
        n_given = int(f.attrs["initial_step"])
        truth = f["tensor"][()][:, n_given:, :, None].astype(np.float64)
        pred = f["predictions/operator"][()][:, n_given:, :, None].astype(np.float64)
        np.testing.assert_array_equal(f["predictions/operator"][:, :n_given],
                                      f["tensor"][:, :n_given])
        assert f["t-coordinate"].shape[0] == f["tensor"].shape[1] + 1
    per_frame = np.linalg.norm(pred - truth, axis=2) / np.linalg.norm(truth, axis=2)
    assert per_frame.mean() == pytest.approx(table.loc["operator", "nrmse"], rel=1e-5)
    assert per_frame.mean() == pytest.approx(float(metrics.nrmse(pred, truth).mean()), rel=1e-9)

    run = _last_run("__default__")
    assert run.data.metrics["evaluation/operator/nrmse"] == pytest.approx(
        table.loc["operator", "nrmse"])
    assert "evaluation/pdebench_fno_published/nrmse" not in run.data.metrics  # not measured
    artifacts = {a.path for a in mlflow.MlflowClient().list_artifacts(run.info.run_id,
                                                                       "evaluation/figures")}
    assert {f"evaluation/figures/evaluation_{n}.png" for n in ("spacetime", "horizon",
                                                               "spectra")} <= artifacts
    html = (_reports(evaluated) / "evaluation_report.html").read_text()
    assert html.count("data:image/png;base64,") == 3 and "<table" in html
    assert set(horizons["variant"]) == set(table.index) - {"pdebench_fno_published"}


def test_steady_field_error_is_part_of_evaluation(evaluated: Path) -> None:
    steady = json.loads((_reports(evaluated) / "evaluation_steady_metrics.json").read_text())
    assert steady["skipped"] is False and steady["split"] == "test"
    assert len(steady["nrmse_by_step"]) >= 2 and steady["nrmse"] == steady["nrmse_by_step"][-1]
    assert "evaluation/steady_prior/nrmse" in _last_run("__default__").data.metrics


def _stage_runs(stage: str) -> list[mlflow.entities.Run]:
    return mlflow.search_runs(experiment_names=["ups_kedro_stages"], output_format="list",
                              filter_string=f"tags.`ups.stage` = '{stage}'",
                              order_by=["attributes.start_time DESC"])


def test_make_run_is_readable_in_mlflow(evaluated: Path) -> None:
    """Name, description, tags, one run per stage, dataset inputs, system metrics, checkpoints."""
    from ups_kedro.serving.registry import load_run_checkpoint

    run = _last_run("__default__")
    tags, rid = run.data.tags, run.info.run_id
    assert run.info.run_name.startswith("__default__ · smoke · ")
    assert "nRMSE" in run.info.run_name  # the headline score
    note = tags["mlflow.note.content"]
    assert "| operator | model.architecture=" in note and "| variant | nRMSE |" in note
    assert "runner" not in tags and "run_id" not in tags  # kedro-mlflow's noise
    assert tags["kedro.session_id"] and tags["ups.stages"] == ",".join(CHAIN)
    # One comparable run per stage, linked back, with that stage's params, metrics, artifacts.
    for stage in CHAIN:
        (child,) = [r for r in _stage_runs(stage) if r.data.tags["ups.parent_run_id"] == rid]
        assert child.info.status == "FINISHED" and child.info.run_name.startswith(stage)
        assert all(k.startswith(f"{stage}.") for k in child.data.params)
        assert all(k.startswith(f"{stage}/") for k in child.data.metrics)
    operator = [r for r in _stage_runs("operator") if r.data.tags["ups.parent_run_id"] == rid][0]
    assert operator.data.params["operator.train.epochs"] == run.data.params["operator.train.epochs"]
    client = mlflow.MlflowClient()
    assert len(client.get_metric_history(operator.info.run_id, "operator/loss")) == len(
        client.get_metric_history(rid, "operator/loss")) > 1
    assert "checkpoints/operator.pt" in {
        a.path for a in client.list_artifacts(operator.info.run_id, "checkpoints")}
    inputs = {i.dataset.name: i for i in operator.inputs.dataset_inputs}
    assert "autoencoder.latents_train" in inputs
    # Dataset inputs on the pipeline run: split, manifest hash and shape of each array loaded.
    logged = {i.dataset.name: {t.key: t.value for t in i.tags} for i in run.inputs.dataset_inputs}
    fields = logged["data_processing.fields_train"]
    assert fields["mlflow.data.context"] == "training" and fields["split_manifest_hash"] != "None"
    assert fields["shape"].count("x") == 3
    # System metrics (MLflow samples them with psutil).
    pytest.importorskip("psutil")
    assert "system/cpu_utilization_percentage" in run.data.metrics
    # Checkpoints load back from MLflow by run id.
    ckpt = load_run_checkpoint(rid, "operator")
    local = torch_load(evaluated / "data/smoke/06_models/operator.pt")
    assert ckpt["lineage"] == local["lineage"]
    with pytest.raises(FileNotFoundError, match="has no artifact checkpoints/nope.pt"):
        load_run_checkpoint(rid, "nope")


def torch_load(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def test_absent_corrector_checkpoints_are_skipped_with_a_note(evaluated: Path) -> None:
    student = evaluated / "data/smoke/06_models/consistency_distill.pt"
    aside = student.with_suffix(".aside")
    student.rename(aside)
    try:
        run_kedro(evaluated, "evaluation", params={"evaluation": {"split": "val"}})
        table = pd.read_csv(_reports(evaluated) / "evaluation_metrics.csv", index_col="variant")
        assert "operator" in table.index and "diff_residual" in table.index
        assert not any(v.startswith(("consistency_distill", "gated")) for v in table.index)
        html = (_reports(evaluated) / "evaluation_report.html").read_text()
        assert "consistency_distill checkpoint absent" in html
    finally:
        aside.rename(student)
    # The evaluation alone made a stage run comparable with the one inside __default__.
    alone, in_chain = _stage_runs("evaluation")[:2]
    assert alone.data.tags["ups.parent_pipeline"] == "evaluation"
    assert in_chain.data.tags["ups.parent_pipeline"] == "__default__"
    assert "evaluation/operator/nrmse" in alone.data.metrics
    assert "evaluation/operator/nrmse" in in_chain.data.metrics


def test_promotion_registers_a_champion_then_gates_against_it(evaluated: Path) -> None:
    easy = {"promotion": {"validation_gate": EASY_GATE, "test_gate": EASY_GATE}}
    run_kedro(evaluated, "promotion", params=easy)
    first = json.loads((_reports(evaluated) / "promotion_decision.json").read_text())
    assert first["promoted"] and first["version"] == "1"
    assert first["validation"]["rule"].startswith("first run")
    assert _champion_version() == "1"
    _check_registered_model(evaluated, first)

    # The same models again, asked to be 50 % better than the champion: the champion is
    # re-scored on the same trajectories, so it scores exactly the same and the gate fails.
    strict = {"promotion": {"validation_gate": {"min_improvement_vs_champion": 0.5}}}
    run_kedro(evaluated, "promotion", params=strict)
    second = json.loads((_reports(evaluated) / "promotion_decision.json").read_text())
    assert not second["promoted"] and second["version"] is None
    gate = second["validation"]
    assert gate["champion_nrmse"] == pytest.approx(gate["candidate_nrmse"], rel=1e-6)
    assert second["test"]["skipped"]
    assert _champion_version() == "1"
    board = pd.read_csv(_reports(evaluated) / "leaderboard.csv")
    assert list(board["decision"]).count("promoted") == 1 and len(board) == 2


def _check_registered_model(root: Path, decision: dict) -> None:
    """The standard pyfunc call honours n_steps; the version links to its run; pinned env."""
    model = mlflow.pyfunc.load_model("models:/ups_kedro_surrogate@champion")
    with h5py.File(root / "data/smoke/01_raw/1D_Burgers_Sols_Nu0.01.hdf5") as f:
        u0 = f["tensor"][:3, 45, ::4][..., None].astype(np.float32)  # [3, X, 1]
    out = model.predict(u0, params={"n_steps": 5})
    assert out.shape == (3, 5, *u0.shape[1:]) and np.isfinite(out).all()
    assert model.predict(u0).shape[1] == 1  # the signature's default
    assert model.metadata.get_input_schema() is not None and model.input_example is not None
    version = mlflow.MlflowClient().get_model_version_by_alias("ups_kedro_surrogate", "champion")
    assert version.run_id == decision["run_id"] is not None
    local = Path(mlflow.artifacts.download_artifacts("models:/ups_kedro_surrogate@champion"))
    requirements = (local / "requirements.txt").read_text().split()
    assert all("==" in r for r in requirements) and any(r.startswith("torch==") for r in
                                                         requirements)
    assert (local / "code/ups_kedro/serving/pyfunc.py").is_file()


def test_inference_from_the_champion_and_from_checkpoints(evaluated: Path) -> None:
    # Needs a champion: the promotion test (earlier in this module) registered one.
    out = evaluated / "data/smoke/07_model_output/inference_trajectory.h5"
    run_kedro(evaluated, "inference", params={"inference": {"n_steps": 5}})
    with h5py.File(out) as f:
        champion = f["tensor"][()]
        assert champion.shape[:2] == (4, 6) and np.isfinite(champion).all()
        assert "ups_kedro_surrogate v1" in f.attrs["model"]
    with h5py.File(evaluated / "data/smoke/01_raw/1D_Burgers_Sols_Nu0.01.hdf5") as f:
        np.testing.assert_allclose(champion[:, 0], f["tensor"][:4, 45, ::4], rtol=1e-6)

    np.save(evaluated / "u0.npy", champion[:2, 0])
    run_kedro(evaluated, "inference", params={"inference": {
        "source": "checkpoints", "variant": "operator", "n_steps": 3,
        "initial_condition": {"path": "u0.npy", "samples": None}}})
    with h5py.File(out) as f:
        assert f["tensor"].shape[:2] == (2, 4) and f.attrs["variant"] == "operator"
    assert (_reports(evaluated) / "inference.png").stat().st_size > 0


def test_steady_inference_writes_a_darcy_file(evaluated: Path) -> None:
    run_kedro(evaluated, "inference", params={"inference": {
        "mode": "steady", "source": "checkpoints",
        "initial_condition": {"path": "data/smoke/01_raw/2D_DarcyFlow_beta1.0_Train.hdf5",
                              "samples": [0, 1], "space_stride": 2}}})
    with h5py.File(evaluated / "data/smoke/07_model_output/inference_trajectory.h5") as f:
        assert f["tensor"].shape == (2, 1, 16, 16) and f["nu"].shape == (2, 16, 16)
        assert np.isfinite(f["tensor"][()]).all()


def test_inference_with_a_missing_file_fails_clearly(evaluated: Path) -> None:
    with pytest.raises(Exception, match="does not exist; give an .h5/.hdf5"):
        run_kedro(evaluated, "inference", params={"inference": {
            "source": "checkpoints", "initial_condition": {"path": "nope.h5"}}})


def test_comparison_notebook_runs_on_the_outputs(evaluated: Path, monkeypatch) -> None:
    """Every code cell of notebooks/compare_runs.ipynb, in order, on this project copy."""
    import matplotlib

    matplotlib.use("Agg")
    notebook = json.loads((Path(__file__).parents[2] / "notebooks/compare_runs.ipynb")
                          .read_text())
    monkeypatch.setenv("UPS_PROJECT_ROOT", str(evaluated))
    monkeypatch.setenv("UPS_DATA_DIR", "data/smoke")
    namespace: dict = {}
    for cell in notebook["cells"]:
        if cell["cell_type"] == "code":
            exec(compile("".join(cell["source"]), "compare_runs.ipynb", "exec"), namespace)
    assert not namespace["board"].empty  # the promotion test ran before this one
    assert namespace["scores"].loc["operator", "nrmse"] > 0
    # make run (__default__) and the evaluation run of an earlier test, side by side.
    compare = namespace["compare"]
    assert compare.shape[1] == 2 and any(c.startswith("__default__") for c in compare.columns)
    assert compare.loc["operator"].gt(0).all()  # variants missing from one run are NaN
    assert namespace["operator_runs"].shape[1] >= 1
