"""``consistency_distill`` (Stage 3): distil the Stage 2 sampler into a few-step student."""

from kedro.pipeline import Node, Pipeline

from ups_kedro.pipelines.consistency_distill import nodes

STAGE = "consistency_distill"
PARAMS = f"params:{STAGE}"
UPSTREAM = {
    "diff_residual_checkpoint": "diff_residual.checkpoint",
    "operator_checkpoint": "operator.checkpoint",
    "autoencoder_checkpoint": "autoencoder.checkpoint",
    "latents_train": "autoencoder.latents_train",
    "latents_val": "autoencoder.latents_val",
    "fields_val": "data_processing.fields_val",
}


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(nodes.distill_consistency,
                 ["diff_residual_checkpoint", "operator_checkpoint", "latents_train",
                  "latents_val", PARAMS], "checkpoint", name="distill_consistency"),
            Node(nodes.evaluate_consistency_distill,
                 ["checkpoint", "diff_residual_checkpoint", "operator_checkpoint",
                  "autoencoder_checkpoint", "fields_val", PARAMS], "metrics",
                 name="evaluate_consistency_distill"),
        ],
        namespace=STAGE,
        inputs=UPSTREAM,
        parameters={PARAMS},
    )
