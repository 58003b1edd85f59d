"""Tables of an evaluation: gains, the published reference row, the horizon table."""

from __future__ import annotations

import numpy as np
import pytest

from ups_kedro.evaluation.report import (
    REFERENCE_ROW,
    horizon_table,
    metrics_table,
    published_reference,
)
from ups_kedro.evaluation.rollout_file import RolloutSet


def test_metrics_table_gain_and_reference_row() -> None:
    table = metrics_table({"persistence": {"nrmse": 1.0}, "operator": {"nrmse": 0.05}},
                          (REFERENCE_ROW, 7.8e-3))
    assert table.index.name == "variant" and list(table.index)[0] == REFERENCE_ROW
    assert table.loc["operator", "gain_vs_persistence"] == pytest.approx(20.0)


def test_published_figures_match_dataset_parameters() -> None:
    assert published_reference({"system": "burgers", "attrs": {"Nu": 0.01}})[1] == 7.8e-3
    assert published_reference({"attrs": {"beta": 0.4}})[1] == 1.0e-2
    assert published_reference({"system": "burgers", "attrs": {"Nu": 0.02}}) is None


def test_horizon_table_is_nrmse_per_rolled_out_frame() -> None:
    truth = np.ones((2, 3, 4, 1), np.float32)
    pred = truth.copy()
    pred[:, 1] *= 1.5  # horizon 2: error 0.5 / norm 1
    rs = RolloutSet(truth[:, :1], truth, {"m": pred}, np.arange(4.0), [np.arange(4.0)], ["u"], 1)
    table = horizon_table(rs)
    assert table["nrmse"].tolist() == pytest.approx([0.0, 0.5, 0.0])
    assert table["time"].tolist() == [1.0, 2.0, 3.0]


def _rollouts(variants: dict[str, float]) -> RolloutSet:
    """Sine-wave truth [3, 10, 16, 1]; each variant = truth × (1 + its relative error)."""
    x, t = np.linspace(0, 1, 16), np.linspace(0, 1, 11)
    truth = np.sin(2 * np.pi * (x[None, None, :] - 0.3 * t[None, 1:, None]))[..., None]
    truth = np.repeat(truth, 3, axis=0).astype(np.float32)
    preds = {name: truth * (1 + err) for name, err in variants.items()}
    return RolloutSet(truth[:, :1], truth, preds, t, [x], ["u"], 1)


def test_spacetime_figure_has_error_panels_and_colour_bars() -> None:
    from ups_kedro.evaluation.report import spacetime_figure

    rs = _rollouts({"persistence": 0.5, "operator": 0.02})
    fig = spacetime_figure(rs, ["persistence", "operator"], n_examples=2)
    images = [ax for ax in fig.axes if ax.images]
    titles = [ax.get_title() for ax in images]
    assert len(images) == 2 * 5  # rows × (truth + 2 × (prediction, error))
    assert titles.count("error of operator") == 2 and "operator\nnRMSE 0.02" in titles
    # Each error panel has its own scale: the operator's 2 % error fills its colour range.
    err = next(ax for ax in images if ax.get_title() == "error of operator").images[0]
    assert err.get_clim() == pytest.approx((-0.02, 0.02), rel=1e-3)
    colour_bars = [ax for ax in fig.axes if not ax.images]
    assert len(colour_bars) == 2 * 3  # truth/prediction scale + one per error panel, per row


def test_horizon_figure_distinguishes_every_variant() -> None:
    from ups_kedro.evaluation.report import horizon_figure

    names = ["persistence", "solver", "operator", "diff_residual_16step",
             "consistency_distill_1step", "consistency_distill_2step",
             "gated_consistency_distill_1step"]
    rs = _rollouts({n: 0.01 * (i + 1) for i, n in enumerate(names)})
    fig = horizon_figure(horizon_table(rs))
    main, ratio = fig.axes[:2]
    styles = {(line.get_color(), str(line.get_linestyle()), line.get_marker())
              for line in main.get_lines()}
    assert len(main.get_lines()) == len(names) == len(styles)
    assert main.get_yscale() == "log" and ratio.get_ylabel() == "nRMSE / operator's"
    # Ratio panel: the learned variants (not operator, persistence, solver), plus the line at 1.
    assert len(ratio.get_lines()) == len(names) - 3 + 1
    diff = next(line for line in ratio.get_lines() if line.get_color() == "tab:orange")
    assert diff.get_ydata() == pytest.approx(np.full(10, 0.04 / 0.03), rel=1e-4)


def test_html_report_explains_the_published_row() -> None:
    import pandas as pd

    from ups_kedro.evaluation.report import REFERENCE_CAVEAT, html_report

    table = metrics_table({"operator": {"nrmse": 0.05}}, (REFERENCE_ROW, 7.8e-3))
    page = html_report("t", table, {}, {})
    assert "9,000 training trajectories" in page and REFERENCE_CAVEAT[:40] in page
    assert "9,000" not in html_report("t", pd.DataFrame({"nrmse": [0.1]},
                                                        index=pd.Index(["op"], name="variant")),
                                      {}, {})
