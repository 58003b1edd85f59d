"""``operator`` (Stage 1): latent operator z(t) → z(t+dt), trained unrolled, scored by rollouts."""

from kedro.pipeline import Node, Pipeline

from ups_kedro.pipelines.operator import nodes

STAGE = "operator"
PARAMS = f"params:{STAGE}"
UPSTREAM = {
    "latents_train": "autoencoder.latents_train",
    "latents_val": "autoencoder.latents_val",
    "autoencoder_checkpoint": "autoencoder.checkpoint",
    "fields_train": "data_processing.fields_train",
    "fields_val": "data_processing.fields_val",
}


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(nodes.train_operator,
                 ["latents_train", "latents_val", "autoencoder_checkpoint", "fields_train",
                  "fields_val", PARAMS], "checkpoint", name="train_operator"),
            Node(nodes.evaluate_operator,
                 ["checkpoint", "autoencoder_checkpoint", "fields_val", PARAMS], "metrics",
                 name="evaluate_operator"),
        ],
        namespace=STAGE,
        inputs=UPSTREAM,
        parameters={PARAMS},
    )
