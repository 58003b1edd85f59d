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
