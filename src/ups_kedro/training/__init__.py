"""The training engine shared by every stage, and each stage's losses (no Kedro, no MLflow)."""
