"""``steady_prior`` (Stage 4): a steady-state prior trained on real (Darcy) steady states.

The steady data come from the ``data_processing`` pipeline (``data_processing.steady_*``,
block ``data_processing.steady``); this stage only trains and evaluates, so after
``kedro run --pipeline data_processing --tags steady`` it runs on its own
(``kedro run --pipeline steady_prior``); ``kedro run --tags steady`` runs data and stage
together (every node of both is tagged ``steady``).  With ``steady_prior.train.epochs: 0`` — or no steady
data (``data_processing.steady.enabled: false``) — it is skipped at almost no cost.
Its own datasets are ``steady_prior.<thing>`` (``conf/base/catalog_steady_prior.yml``).
"""

from kedro.pipeline import Node, Pipeline

from ups_kedro.pipelines.steady_prior import nodes

STAGE = "steady_prior"
PARAMS = f"params:{STAGE}"
STEADY_TAG = "steady"  # as data_processing's steady nodes: `kedro run --tags steady` runs both
UPSTREAM = {
    **{f"solutions_{s}": f"data_processing.steady_solutions_{s}" for s in ("train", "val")},
    **{f"coefficients_{s}": f"data_processing.steady_coefficients_{s}" for s in ("train", "val")},
    "normaliser": "data_processing.steady_normaliser",
}


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(nodes.train_steady_autoencoder,
                 ["solutions_train", "solutions_val", "normaliser", PARAMS],
                 "autoencoder_checkpoint", name="train_steady_autoencoder"),
            Node(nodes.train_steady_prior,
                 ["autoencoder_checkpoint", "solutions_train", "solutions_val",
                  "coefficients_train", "coefficients_val", "normaliser", PARAMS],
                 "checkpoint", name="train_steady_prior"),
            Node(nodes.evaluate_steady_prior,
                 ["checkpoint", "autoencoder_checkpoint", "solutions_train", "solutions_val",
                  "coefficients_val", PARAMS], "metrics", name="evaluate_steady_prior"),
        ],
        namespace=STAGE,
        inputs=UPSTREAM,
        parameters={PARAMS},
        tags=STEADY_TAG,
    )
