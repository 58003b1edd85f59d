"""``steady_prior`` (Stage 4): a steady-state prior trained on real (Darcy) steady states.

Datasets are ``steady_prior.<thing>`` (``conf/base/catalog_steady_prior.yml``); the stage needs
nothing from the other stages, so it runs on its own (``kedro run --pipeline steady_prior``)
and, with ``steady_prior.train.epochs: 0``, is skipped at almost no cost.
"""

from kedro.pipeline import Node, Pipeline

from ups_kedro.pipelines.steady_prior import nodes

STAGE = "steady_prior"
PARAMS = f"params:{STAGE}"
SPLITS = ("train", "val", "test")


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(nodes.generate_steady_data, PARAMS, "raw_source", name="generate_steady_data"),
            Node(nodes.split_steady_samples, ["raw_source", PARAMS], "split_manifest",
                 name="split_steady_samples"),
            Node(nodes.prepare_steady_data, ["raw_source", "split_manifest", PARAMS],
                 [*(f"solutions_{s}" for s in SPLITS), *(f"coefficients_{s}" for s in SPLITS)],
                 name="prepare_steady_data"),
            Node(nodes.compute_steady_normaliser,
                 ["solutions_train", "coefficients_train", PARAMS], "normaliser",
                 name="compute_steady_normaliser"),
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
        parameters={PARAMS},
    )
