"""The benchmark suite behind ``make benchmark`` (entry point: ``scripts/benchmark.py``)."""
