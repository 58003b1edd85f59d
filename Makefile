# The two commands: `make run` (set up + train/evaluate on the built-in data) and
# `make test` (set up + the whole test suite). Everything else is optional.
SHELL := /bin/bash
VENV ?= .venv
export KEDRO_DISABLE_TELEMETRY := 1
export MLFLOW_DISABLE_TELEMETRY := true
export DO_NOT_TRACK := 1
export PYTHONUNBUFFERED := 1

.PHONY: setup run test viz mlflow-ui clean-smoke benchmark seeds

setup:
	scripts/setup.sh

run: setup
	$(VENV)/bin/kedro run $(ARGS)

test: setup
	$(VENV)/bin/python -m pytest $(PYTEST_ARGS)

viz: setup
	$(VENV)/bin/kedro viz run --no-browser --host 127.0.0.1 --port 4141

mlflow-ui: setup
	$(VENV)/bin/mlflow server --host 127.0.0.1 --port 5000 --workers 1 \
	  --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --default-artifact-root $(CURDIR)/mlartifacts

clean-smoke:
	rm -rf data/smoke

# every benchmark section -> data/08_reporting/benchmark.{json,md} (docs/benchmark.md);
# ARGS=--quick: tiny sizes, checks the suite runs
benchmark: setup
	$(VENV)/bin/python scripts/benchmark.py $(ARGS)

# autoencoder -> operator -> Stage 2 -> Stage 3 -> evaluation for seeds 0,1,2 on the same data:
# mean ± sd and CV of each variant's rollout nRMSE -> data/08_reporting/seeds.{json,md}
# (scripts/seeds.py); ARGS="--env smoke" for a quick run, ARGS="--seeds 0,1,2,3,4" for more
seeds: setup
	$(VENV)/bin/python scripts/seeds.py $(ARGS)
