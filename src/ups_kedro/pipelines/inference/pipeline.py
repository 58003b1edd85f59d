"""``inference`` (on request: ``kedro run --pipeline inference``)."""

from kedro.pipeline import Node, Pipeline

from ups_kedro.pipelines.inference import nodes

STAGE = "inference"
PARAMS = f"params:{STAGE}"


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        # always_run: the champion lives in the MLflow Model Registry, outside the catalog, so
        # an unchanged set of inputs does not mean an unchanged model (ups_kedro.runner)
        [Node(nodes.run_inference, PARAMS, ["trajectory", "figure"], name="run_inference",
              tags=["always_run"])],
        namespace=STAGE,
        parameters={PARAMS},
    )
