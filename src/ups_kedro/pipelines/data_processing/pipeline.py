"""``data_processing``: raw PDEBench-layout data → splits, prepared arrays, normalisers.

Nodes and datasets live in the ``data_processing`` namespace, so datasets are named
``data_processing.<thing>`` and kedro-viz draws the stage as one collapsible box.  Two
independent branches:

* transient (the time-dependent data set of Stages 1–3): ``raw_source`` → ``split_manifest`` →
  ``fields_{split}`` → ``normaliser``;
* steady (the Darcy problem of Stage 4, block ``data_processing.steady``, tag ``steady``):
  ``steady_raw_source`` → ``steady_split_manifest`` → ``steady_solutions_{split}`` and
  ``steady_coefficients_{split}`` → ``steady_normaliser``.  Run it alone with
  ``kedro run --pipeline data_processing --tags steady``.
"""

from kedro.pipeline import Node, Pipeline

from ups_kedro.pipelines.data_processing import nodes

STAGE = "data_processing"
PARAMS = f"params:{STAGE}"
# Read only to check, before generating anything, that the autoencoder's token grid fits the data.
AUTOENCODER_PARAMS = "params:autoencoder"
SPLITS = ("train", "val", "test")
STEADY_TAG = "steady"


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(nodes.acquire_raw_data, [PARAMS, AUTOENCODER_PARAMS], "raw_source",
                 name="acquire_raw_data"),
            Node(nodes.split_trajectories, ["raw_source", PARAMS], "split_manifest",
                 name="split_trajectories"),
            Node(nodes.prepare_fields, ["raw_source", "split_manifest", PARAMS],
                 ["fields_train", "fields_val", "fields_test"], name="prepare_fields"),
            Node(nodes.compute_normaliser, "fields_train", "normaliser",
                 name="compute_normaliser"),
            # -- the steady problem of Stage 4 -------------------------------------------------
            Node(nodes.acquire_steady_data, PARAMS, "steady_raw_source",
                 name="acquire_steady_data", tags=STEADY_TAG),
            Node(nodes.split_steady_samples, ["steady_raw_source", PARAMS],
                 "steady_split_manifest", name="split_steady_samples", tags=STEADY_TAG),
            Node(nodes.prepare_steady_data,
                 ["steady_raw_source", "steady_split_manifest", PARAMS],
                 [*(f"steady_solutions_{s}" for s in SPLITS),
                  *(f"steady_coefficients_{s}" for s in SPLITS)],
                 name="prepare_steady_data", tags=STEADY_TAG),
            Node(nodes.compute_steady_normaliser,
                 ["steady_solutions_train", "steady_coefficients_train", PARAMS],
                 "steady_normaliser", name="compute_steady_normaliser", tags=STEADY_TAG),
        ],
        namespace=STAGE,
        parameters={PARAMS, AUTOENCODER_PARAMS},
    )
