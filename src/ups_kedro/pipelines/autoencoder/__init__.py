"""``autoencoder`` pipeline: a trained latent space (the original's was a random projection)."""

from ups_kedro.pipelines.autoencoder.pipeline import create_pipeline

__all__ = ["create_pipeline"]
