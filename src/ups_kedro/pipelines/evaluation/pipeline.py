"""``evaluation``: decoded autoregressive rollouts of every variant, scored the PDEBench way.

Inputs are the stages' own catalog datasets, so in ``__default__`` it runs after them and
kedro-viz draws the edges; corrector checkpoints (``ups_kedro.stages``) are optional (absent →
variant skipped).
"""

from kedro.pipeline import Node, Pipeline

from ups_kedro.pipelines.evaluation import nodes
from ups_kedro.pipelines.upstream import CHECKPOINT_DATASETS, CHECKPOINT_INPUTS

STAGE = "evaluation"
PARAMS = f"params:{STAGE}"
UPSTREAM = {
    **CHECKPOINT_DATASETS,
    "fields_val": "data_processing.fields_val",
    "fields_test": "data_processing.fields_test",
    "raw_source": "data_processing.raw_source",
    "steady_prior_checkpoint": "steady_prior.checkpoint",
    "steady_autoencoder_checkpoint": "steady_prior.autoencoder_checkpoint",
    **{f"steady_{kind}_{split}": f"data_processing.steady_{kind}_{split}"
       for kind in ("solutions", "coefficients") for split in ("train", "val", "test")
       if not (kind == "coefficients" and split == "train")},
}


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline(
        [
            Node(nodes.rollout_variants,
                 {"fields_val": "fields_val", "fields_test": "fields_test",
                  "raw_source": "raw_source", "params": PARAMS, **CHECKPOINT_INPUTS},
                 "rollouts", name="rollout_variants"),
            Node(nodes.score_evaluation, ["rollouts", "raw_source", PARAMS],
                 ["metrics_table", "horizon_table"], name="score_evaluation"),
            Node(nodes.render_report, ["rollouts", "metrics_table", "horizon_table", PARAMS],
                 ["figure_spacetime", "figure_horizon", "figure_spectra", "report"],
                 name="render_report"),
            Node(nodes.evaluate_steady,
                 ["steady_prior_checkpoint", "steady_autoencoder_checkpoint",
                  "steady_solutions_train", "steady_solutions_val", "steady_solutions_test",
                  "steady_coefficients_val", "steady_coefficients_test", PARAMS],
                 "steady_metrics", name="evaluate_steady", tags=["steady"]),
        ],
        namespace=STAGE,
        inputs=UPSTREAM,
        parameters={PARAMS},
    )
