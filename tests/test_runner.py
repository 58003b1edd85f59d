"""The node-level reuse runner's rules that need no Kedro session (ups_kedro.runner)."""

from __future__ import annotations

import os
from pathlib import Path

from kedro.io import DataCatalog, MemoryDataset
from kedro.pipeline import Node

from ups_kedro import runner


def _identity(x):
    return x


def test_a_file_named_by_a_parameter_is_part_of_its_token(tmp_path: Path) -> None:
    """Rewriting an input file under the same path (a PDEBench file, an initial condition)
    changes the parameter block's token, so the node reading it is not skipped."""
    data = tmp_path / "u0.npy"
    data.write_bytes(b"one")
    catalog = DataCatalog({"params:inference": MemoryDataset(
        {"initial_condition": {"path": str(data)}, "n_steps": 5})})
    before = runner.dataset_token(catalog, "params:inference")
    assert runner.dataset_token(catalog, "params:inference") == before  # stable
    data.write_bytes(b"other content")
    os.utime(data, ns=(1, 1))
    assert runner.dataset_token(catalog, "params:inference") != before


def test_nodes_that_read_the_model_registry_always_run(tmp_path: Path) -> None:
    out = tmp_path / "decision.json"
    out.write_text("{}")
    node = Node(_identity, "params:promotion", "decision", name="gate",
                tags=[runner.ALWAYS_RUN_TAG])
    catalog = DataCatalog({"params:promotion": MemoryDataset({"variant": "best"})})
    reason = runner._why_run(node, catalog, {"signature": "x"}, set())  # noqa: SLF001
    assert reason == "it reads the model registry"
    plain = Node(_identity, "params:promotion", "decision", name="plain")
    assert runner._why_run(plain, catalog, {"signature": "x"}, set()) != reason  # noqa: SLF001
