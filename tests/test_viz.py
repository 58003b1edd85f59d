"""kedro-viz serves every pipeline with layered, readable datasets; a headless screenshot of
a stage view shows the pipeline asked for (skipped where Chromium is not installed)."""

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
        # Every pipeline's view included: its layer bands in data-flow order.
        assert viz.check_graph(graph, {"__default__", *DEFAULT_CHAIN, "promotion",
                                       "inference"}, port) == []
        names = {n["name"] for n in graph["nodes"]}
        assert {"evaluation.rollouts", "operator.checkpoint", "evaluation.report"} <= names
        if not any(shutil.which(b) for b in viz.BROWSERS):
            pytest.skip("no Chromium on PATH: graph checked, screenshot not taken")
        shot = viz.screenshot(port, "operator", tmp_path / "viz.png")
    finally:
        viz.stop(proc)
    # The whole process group is gone: nothing serves the port any more.
    assert proc.poll() is not None and viz.port_is_free(port)
    # ?pid= selected the operator stage: its nodes are drawn, no other stage's.
    assert shot["active"] == "operator"
    assert {"train_operator", "operator.checkpoint"} <= set(shot["labels"])
    assert not any(label.startswith(("train_autoencoder", "evaluation.")) for label in
                   shot["labels"])
    assert shot["layers"] == sorted(shot["layers"], key=viz.LAYERS.index) and shot["layers"]
    image = matplotlib.image.imread(shot["path"])
    assert image.shape[:2] == (viz.WINDOW[1], viz.WINDOW[0])
    assert image[..., :3].std() > 0.02  # a drawn graph, not a blank page
