"""kedro-viz serves every pipeline with layered, readable datasets; a headless screenshot
renders where Chromium is installed (skipped elsewhere)."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import matplotlib.image
import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "scripts"))
import viz_screenshot as viz  # noqa: E402

from ups_kedro.pipeline_registry import DEFAULT_CHAIN  # noqa: E402

pytestmark = pytest.mark.integration


def test_kedro_viz_graph_and_screenshot(tmp_path: Path) -> None:
    port = viz.free_port()
    proc = viz.start_viz(port, REPO, tmp_path / "viz.log")
    try:
        graph = viz.fetch_graph(port, proc)
        assert viz.check_graph(graph, {"__default__", *DEFAULT_CHAIN, "promotion",
                                       "inference"}) == []
        names = {n["name"] for n in graph["nodes"]}
        assert {"evaluation.rollouts", "operator.checkpoint", "evaluation.report"} <= names
        if not any(shutil.which(b) for b in viz.BROWSERS):
            pytest.skip("no Chromium on PATH: graph checked, screenshot not taken")
        shot = viz.screenshot(port, "__default__", tmp_path / "viz.png")
    finally:
        viz.stop(proc)
    assert proc.poll() is not None  # stopped by its own pid
    image = matplotlib.image.imread(shot)
    assert image.shape[:2] == (1100, 1800)
    assert image[..., :3].std() > 0.02  # a drawn graph, not a blank page
