"""``inference`` (on request: ``kedro run --pipeline inference``)."""

from kedro.pipeline import Node, Pipeline

from ups_kedro.pipelines.inference import nodes

STAGE = "inference"
PARAMS = f"params:{STAGE}"


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [Node(nodes.run_inference, PARAMS, ["trajectory", "figure"], name="run_inference")],
        namespace=STAGE,
        parameters={PARAMS},
    )
