"""ups_kedro: a Kedro + MLflow multi-stage latent neural PDE surrogate."""
__version__ = "0.1.0"
