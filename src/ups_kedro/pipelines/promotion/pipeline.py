"""``promotion`` (on request: ``kedro run --pipeline promotion``): the original's "fast-to-SOTA"
orchestrator done right — validation gate, test gate, registry, leaderboard."""

from kedro.pipeline import Node, Pipeline

from ups_kedro.pipelines.promotion import nodes
from ups_kedro.pipelines.upstream import CHECKPOINT_DATASETS, CHECKPOINT_INPUTS

STAGE = "promotion"
PARAMS = f"params:{STAGE}"
UPSTREAM = {
    **CHECKPOINT_DATASETS,
    "fields_val": "data_processing.fields_val",
    "fields_test": "data_processing.fields_test",
}


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(nodes.gate_on_validation,
                 {"fields_val": "fields_val", "params": PARAMS, **CHECKPOINT_INPUTS},
                 "validation_gate", name="gate_on_validation"),
            Node(nodes.gate_on_test,
                 {"validation_gate": "validation_gate", "fields_test": "fields_test",
                  "params": PARAMS, **CHECKPOINT_INPUTS}, "test_gate", name="gate_on_test"),
            Node(nodes.register_champion,
                 {"validation_gate": "validation_gate", "test_gate": "test_gate",
                  "fields_val": "fields_val", "params": PARAMS, **CHECKPOINT_INPUTS},
                 "decision", name="register_champion"),
            Node(nodes.build_leaderboard, ["decision", PARAMS], "leaderboard",
                 name="build_leaderboard"),
        ],
        namespace=STAGE,
        inputs=UPSTREAM,
        # every gate compares with the current champion in the MLflow Model Registry, which is
        # outside the catalog: never skipped as up to date (ups_kedro.runner)
        tags=["always_run"],
        parameters={PARAMS},
    )
