"""Tables, figures and the self-contained HTML report of an evaluation (no Kedro, no MLflow).

Everything is computed from a :class:`~ups_kedro.evaluation.rollout_file.RolloutSet`, so a
report can be rebuilt from the rollout file alone.
"""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence

import matplotlib

matplotlib.use("Agg")  # headless: nodes run in CI and on servers without a display

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from ups_kedro.evaluation import metrics  # noqa: E402
from ups_kedro.evaluation.rollout_file import RolloutSet  # noqa: E402

#: Published PDEBench FNO rollout nRMSE (arXiv v7, Table 7) for 1D Burgers, by ν.
PUBLISHED_FNO_BURGERS = {0.001: 2.9e-2, 0.01: 7.8e-3, 0.1: 2.9e-3, 1.0: 4.0e-3}
#: ... and for 1D advection, by β.
PUBLISHED_FNO_ADVECTION = {0.1: 7.7e-3, 0.4: 1.0e-2, 1.0: 9.7e-3, 4.0: 6.7e-3}


#: Row name of the published figure in the metrics table (not a measurement: never logged).
REFERENCE_ROW = "pdebench_fno_published"


def published_reference(raw_source: Mapping) -> tuple[str, float] | None:
    """``(REFERENCE_ROW, nRMSE)``: PDEBench's FNO (arXiv v7, Table 7) for this dataset, or None."""
    attrs = raw_source.get("attrs") or {}
    system = raw_source.get("system") or ("burgers" if "Nu" in attrs else
                                          "advection" if "beta" in attrs else None)
    table, key = {"burgers": (PUBLISHED_FNO_BURGERS, "Nu"),
                  "advection": (PUBLISHED_FNO_ADVECTION, "beta")}.get(system, (None, None))
    if table is None or key not in attrs:
        return None
    for value, nrmse in table.items():
        if math.isclose(float(attrs[key]), value, rel_tol=1e-6):
            return REFERENCE_ROW, nrmse
    return None


def score_rollouts(rs: RolloutSet) -> dict[str, dict[str, float]]:
    """Every PDEBench/The Well metric of every variant (``metrics.summarise``) plus its cost."""
    scores = {}
    for name, pred in rs.predictions.items():
        scores[name] = {**metrics.summarise(pred, rs.truth), **rs.variant_info.get(name, {})}
    return scores


def metrics_table(scores: Mapping[str, Mapping[str, float]],
                  reference: tuple[str, float] | None = None) -> pd.DataFrame:
    """One row per variant (index ``variant``), one column per metric; sorted by nRMSE.

    ``gain_vs_persistence`` = persistence nRMSE / variant nRMSE.  A published reference, when
    given, is a row with only its nRMSE (its other metrics were not published).
    """
    table = pd.DataFrame.from_dict({k: dict(v) for k, v in scores.items()}, orient="index")
    if "persistence" in table.index:
        table["gain_vs_persistence"] = table.loc["persistence", "nrmse"] / table["nrmse"]
    if reference is not None:
        table.loc[reference[0], "nrmse"] = reference[1]
    table.index.name = "variant"
    return table.sort_values("nrmse")


def horizon_table(rs: RolloutSet) -> pd.DataFrame:
    """Long table ``variant, horizon, time, nrmse``: mean nRMSE at each rolled-out frame."""
    times = rs.times[rs.initial_step:]
    rows = []
    for name, pred in rs.predictions.items():
        for h, value in enumerate(metrics.nrmse_by_horizon(pred, rs.truth), start=1):
            rows.append({"variant": name, "horizon": h, "time": float(times[h - 1]),
                         "nrmse": float(value)})
    return pd.DataFrame(rows)


def _style(name: str) -> dict:
    return {"linestyle": "--", "color": "grey"} if name in ("persistence", "solver") else {}


def horizon_figure(horizons: pd.DataFrame) -> Figure:
    """nRMSE against rollout step for every variant (log scale)."""
    fig, ax = plt.subplots(figsize=(7, 4.2), constrained_layout=True)
    for name, group in horizons.groupby("variant", sort=False):
        ax.plot(group["horizon"], group["nrmse"], label=name, **_style(str(name)))
    ax.set(xlabel="rollout step", ylabel="nRMSE (mean over trajectories)", yscale="log",
           title="Error against horizon")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    return fig


def spacetime_figure(rs: RolloutSet, variants: Sequence[str], n_examples: int = 3,
                     channel: int = 0) -> Figure:
    """Truth vs prediction space-time images (1D data; the first spatial axis for 2D data).

    Rows: ``n_examples`` trajectories; columns: truth, then each variant's prediction and error.
    """
    n = min(n_examples, rs.truth.shape[0])
    cols = ["truth", *variants]
    fig, axes = plt.subplots(n, len(cols), figsize=(2.4 * len(cols), 2.2 * n), squeeze=False,
                             constrained_layout=True)

    def image(a: np.ndarray) -> np.ndarray:  # [K, *space, C] → [K, X]
        a = a[..., channel]
        while a.ndim > 2:
            a = a[:, :, a.shape[2] // 2]
        return a

    x = rs.coords[0] if rs.coords else np.arange(rs.truth.shape[2])
    t = rs.times[rs.initial_step:]
    extent = (float(x[0]), float(x[-1]), float(t[-1]), float(t[0]))
    for i in range(n):
        truth = image(rs.truth[i])
        lim = float(np.abs(truth).max()) or 1.0
        for j, name in enumerate(cols):
            data = truth if name == "truth" else image(rs.predictions[name][i])
            ax = axes[i, j]
            ax.imshow(data, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim, extent=extent)
            if i == 0:
                ax.set_title(name, fontsize=8)
            if j == 0:
                ax.set_ylabel(f"trajectory {i}\nt", fontsize=8)
            ax.tick_params(labelsize=6)
    return fig


def spectra_figure(rs: RolloutSet, variants: Sequence[str]) -> Figure:
    """Energy spectra at the last rolled-out frame: truth against each variant (log-log)."""
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    spatial = rs.truth.ndim - 3
    k, e_true = metrics.energy_spectrum(rs.truth[:, -1], spatial_dims=spatial)
    ax.loglog(k[1:], e_true[1:], "k-", lw=2, label="truth")  # k = 0 (the mean) left out
    for name in variants:
        _, e = metrics.energy_spectrum(rs.predictions[name][:, -1], spatial_dims=spatial)
        ax.loglog(k[1:], e[1:], label=name, **_style(name))
    ax.set(xlabel="wavenumber k", ylabel="energy", title="Energy spectrum at the last step")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def trajectory_figure(tensor: np.ndarray, x: np.ndarray, t: np.ndarray, title: str = "",
                      max_samples: int = 4) -> Figure:
    """Space-time images of predicted trajectories ``tensor`` [B, T, X, C] (first channel)."""
    n = min(max_samples, tensor.shape[0])
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 3), squeeze=False, constrained_layout=True)
    lim = float(np.abs(tensor[:n, ..., 0]).max()) or 1.0
    for i in range(n):
        ax = axes[0, i]
        ax.imshow(tensor[i, ..., 0], aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
                  extent=(float(x[0]), float(x[-1]), float(t[-1]), float(t[0])))
        ax.set(xlabel="x", ylabel="t" if i == 0 else None, title=f"sample {i}")
    fig.suptitle(title, fontsize=9)
    return fig


def steady_figure(nu: np.ndarray, u: np.ndarray, max_samples: int = 4) -> Figure:
    """Coefficient field ``nu`` [B, X, Y] above the predicted steady field ``u`` [B, X, Y]."""
    n = min(max_samples, nu.shape[0])
    fig, axes = plt.subplots(2, n, figsize=(2.6 * n, 5), squeeze=False, constrained_layout=True)
    for i in range(n):
        axes[0, i].imshow(nu[i], cmap="viridis")
        axes[0, i].set_title(f"coefficient {i}", fontsize=8)
        axes[1, i].imshow(u[i], cmap="magma")
        axes[1, i].set_title(f"steady field {i}", fontsize=8)
    return fig


def _png(fig: Figure) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110)
    return base64.b64encode(buffer.getvalue()).decode()


REPORT_COLUMNS = ("nrmse", "nrmse_h1", "nrmse_h5", "nrmse_h10", "nrmse_last", "rmse", "crmse",
                  "frmse_low", "frmse_mid", "frmse_high", "max_error", "corr_steps_0.8",
                  "corr_steps_0.95", "gain_vs_persistence", "nfe_per_step", "ms_per_trajectory")


def html_report(title: str, table: pd.DataFrame, figures: Mapping[str, Figure],
                facts: Mapping[str, object], notes: Sequence[str] = ()) -> str:
    """A self-contained HTML page (figures inlined as PNG) with the metrics table and notes."""
    cols = [c for c in REPORT_COLUMNS if c in table.columns]
    body = table[cols].to_html(float_format=lambda v: f"{v:.4g}", na_rep="–", border=0)
    facts_html = "".join(f"<li><b>{html.escape(str(k))}</b>: {html.escape(str(v))}</li>"
                         for k, v in facts.items())
    notes_html = "".join(f"<li>{html.escape(n)}</li>" for n in notes)
    figs = "".join(f'<h2>{html.escape(name)}</h2><img alt="{html.escape(name)}" '
                   f'src="data:image/png;base64,{_png(fig)}"/>' for name, fig in figures.items())
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}
table{{border-collapse:collapse;font-size:12px}}td,th{{padding:3px 8px;text-align:right}}
tr:nth-child(even){{background:#f3f3f3}}img{{max-width:100%}}</style></head>
<body><h1>{html.escape(title)}</h1><ul>{facts_html}</ul>
<p>nRMSE: PDEBench definition (per sample, channel and frame ‖pred − true‖₂/‖true‖₂ over space,
then a plain mean), decoded rollouts in physical units; h<i>k</i>: the <i>k</i>-th rolled-out
frame. Lower is better except gain and corr_steps.</p>
{body}<ul>{notes_html}</ul>{figs}</body></html>
"""
