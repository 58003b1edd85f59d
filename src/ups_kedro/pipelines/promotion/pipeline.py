"""``promotion`` (on request: ``kedro run --pipeline promotion``): the original's "fast-to-SOTA"
orchestrator done right — validation gate, test gate, registry, leaderboard."""

from kedro.pipeline import Node, Pipeline

from ups_kedro.pipelines.promotion import nodes
from ups_kedro.pipelines.upstream import STAGE_CHECKPOINTS

STAGE = "promotion"
PARAMS = f"params:{STAGE}"
CHECKPOINTS = list(STAGE_CHECKPOINTS)
UPSTREAM = {
    **STAGE_CHECKPOINTS,
    "fields_val": "data_processing.fields_val",
    "fields_test": "data_processing.fields_test",
}


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(nodes.gate_on_validation, [*CHECKPOINTS, "fields_val", PARAMS],
                 "validation_gate", name="gate_on_validation"),
            Node(nodes.gate_on_test, ["validation_gate", *CHECKPOINTS, "fields_test", PARAMS],
                 "test_gate", name="gate_on_test"),
            Node(nodes.register_champion,
                 ["validation_gate", "test_gate", *CHECKPOINTS, "fields_val", PARAMS], "decision",
                 name="register_champion"),
            Node(nodes.build_leaderboard, ["decision", PARAMS], "leaderboard",
                 name="build_leaderboard"),
        ],
        namespace=STAGE,
        inputs=UPSTREAM,
        parameters={PARAMS},
    )
