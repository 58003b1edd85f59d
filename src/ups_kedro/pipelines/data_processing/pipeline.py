"""``data_processing``: raw PDEBench-layout data → splits, prepared fields, normaliser.

Nodes and datasets live in the ``data_processing`` namespace, so datasets are named
``data_processing.<thing>`` and kedro-viz draws the stage as one collapsible box.
"""

from kedro.pipeline import Node, Pipeline

from ups_kedro.pipelines.data_processing import nodes

STAGE = "data_processing"
PARAMS = f"params:{STAGE}"


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(nodes.acquire_raw_data, PARAMS, "raw_source", name="acquire_raw_data"),
            Node(nodes.split_trajectories, ["raw_source", PARAMS], "split_manifest",
                 name="split_trajectories"),
            Node(nodes.prepare_fields, ["raw_source", "split_manifest", PARAMS],
                 ["fields_train", "fields_val", "fields_test"], name="prepare_fields"),
            Node(nodes.compute_normaliser, "fields_train", "normaliser",
                 name="compute_normaliser"),
        ],
        namespace=STAGE,
        parameters={PARAMS},
    )
