"""``diff_residual`` pipeline (Stage 2): a genuine diffusion residual corrector."""

from ups_kedro.pipelines.diff_residual.pipeline import create_pipeline

__all__ = ["create_pipeline"]
