"""``diff_residual`` (Stage 2): conditional diffusion model of z_target − operator(z)."""

from kedro.pipeline import Node, Pipeline

from ups_kedro.pipelines.diff_residual import nodes

STAGE = "diff_residual"
PARAMS = f"params:{STAGE}"
UPSTREAM = {
    "operator_checkpoint": "operator.checkpoint",
    "autoencoder_checkpoint": "autoencoder.checkpoint",
    "latents_train": "autoencoder.latents_train",
    "latents_val": "autoencoder.latents_val",
    "fields_val": "data_processing.fields_val",
}


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(nodes.train_diff_residual,
                 ["operator_checkpoint", "latents_train", "latents_val", PARAMS], "checkpoint",
                 name="train_diff_residual"),
            Node(nodes.evaluate_diff_residual,
                 ["checkpoint", "operator_checkpoint", "autoencoder_checkpoint", "fields_val",
                  PARAMS], "metrics", name="evaluate_diff_residual"),
        ],
        namespace=STAGE,
        inputs=UPSTREAM,
        parameters={PARAMS},
    )
