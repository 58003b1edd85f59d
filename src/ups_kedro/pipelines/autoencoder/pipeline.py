"""``autoencoder``: train the grid encoder / any-point decoder and write latent tensors."""

from kedro.pipeline import Node, Pipeline

from ups_kedro.pipelines.autoencoder import nodes

STAGE = "autoencoder"
PARAMS = f"params:{STAGE}"
# Upstream datasets, used under their short names inside this namespace.
UPSTREAM = {name: f"data_processing.{name}"
            for name in ("fields_train", "fields_val", "fields_test", "normaliser")}


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(nodes.train_autoencoder, ["fields_train", "fields_val", "normaliser", PARAMS],
                 "checkpoint", name="train_autoencoder"),
            Node(nodes.encode_latents,
                 ["checkpoint", "fields_train", "fields_val", "fields_test", PARAMS],
                 ["latents_train", "latents_val", "latents_test"], name="encode_latents"),
            Node(nodes.evaluate_reconstruction, ["checkpoint", "fields_val"], "metrics",
                 name="evaluate_reconstruction"),
        ],
        namespace=STAGE,
        inputs=UPSTREAM,
        parameters={PARAMS},
    )
