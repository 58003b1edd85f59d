"""Serving the surrogate: the MLflow pyfunc model and Model Registry access (no Kedro).

Used by the ``promotion`` pipeline (register a champion) and ``inference`` (load it back).
"""
