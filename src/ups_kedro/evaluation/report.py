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
#: What the published row is, wherever it is shown beside our numbers.
REFERENCE_CAVEAT = (
    f"{REFERENCE_ROW} is not measured here: it is the nRMSE PDEBench published for its FNO "
    "(arXiv 2210.07182 v7, Table 7) on PDEBench's own data for the same coefficient, trained on "
    "a GPU with 9,000 training trajectories and its own rollout protocol. It places our figure "
    "on the literature's scale; it is not a like-for-like comparison on our data and split.")


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


#: Fixed styles for the reference rows; learned variants cycle through STYLE_CYCLE.
FIXED_STYLES = {
    "persistence": {"color": "0.45", "linestyle": ":", "marker": "x"},
    "solver": {"color": "black", "linestyle": "-.", "marker": "+"},
    "operator": {"color": "tab:blue", "linestyle": "-", "marker": "o", "linewidth": 2.2},
}
STYLE_CYCLE = [
    {"color": c, "linestyle": ls, "marker": m}
    for c, ls, m in zip(("tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown",
                         "tab:pink", "tab:olive", "tab:cyan"),
                        ("--", "-.", (0, (5, 1)), (0, (3, 1, 1, 1)), "--", "-.", ":", "-"),
                        ("s", "^", "D", "v", "P", "*", "<", ">"))
]


def variant_styles(names: Sequence[str]) -> dict[str, dict]:
    """A distinct (colour, line style, marker) per variant, stable for the reference rows."""
    styles, cycle = {}, iter(STYLE_CYCLE * (1 + len(names) // len(STYLE_CYCLE)))
    for name in names:
        styles[name] = dict(FIXED_STYLES.get(name) or next(cycle))
    return styles


def horizon_figure(horizons: pd.DataFrame) -> Figure:
    """nRMSE against rollout step for every variant (log scale), and below, each learned
    variant's nRMSE divided by the operator's at the same step (linear: < 1 means the corrector
    helps at that step; persistence and the solver are left out, they would squash it).

    Every variant has its own colour, line style and marker; markers are thinned and staggered
    between variants and the operator is drawn underneath, so curves that coincide in the upper
    panel still show each variant's markers.
    """
    names = list(dict.fromkeys(horizons["variant"]))
    learned = [n for n in names if n not in ("operator", *FIXED_STYLES)]
    has_ratio = "operator" in names and bool(learned)
    fig, axes = plt.subplots(2 if has_ratio else 1, 1, figsize=(7.5, 6.4 if has_ratio else 4.2),
                             sharex=True, squeeze=False, constrained_layout=True,
                             gridspec_kw={"height_ratios": [2, 1.2] if has_ratio else [1]})
    # Markers every `every` steps, each variant offset by one: no two variants share a step.
    every = max(len(names), int(horizons["horizon"].max()) // 12, 1)

    def draw(ax, name: str, i: int, y: pd.Series) -> None:
        style = variant_styles(names)[name]
        ax.plot(y.index, y.values, label=name, markevery=(i % every, every), markersize=4,
                linewidth=style.pop("linewidth", 1.4), zorder=1 if name == "operator" else 3,
                **style)

    ax = axes[0, 0]
    for i, name in enumerate(names):
        draw(ax, name, i, horizons[horizons["variant"] == name].set_index("horizon")["nrmse"])
    ax.set(ylabel="nRMSE (mean over trajectories)", yscale="log", title="Error against horizon")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    if has_ratio:
        base = horizons[horizons["variant"] == "operator"].set_index("horizon")["nrmse"]
        rax = axes[1, 0]
        for name in learned:
            group = horizons[horizons["variant"] == name].set_index("horizon")["nrmse"]
            draw(rax, name, names.index(name), (group / base.reindex(group.index)).dropna())
        rax.axhline(1.0, color="tab:blue", linewidth=1.2, label="operator")
        rax.set(ylabel="nRMSE / operator's")
        rax.grid(True, alpha=0.3)
    axes[-1, 0].set_xlabel("rollout step")
    return fig


def spacetime_figure(rs: RolloutSet, variants: Sequence[str], n_examples: int = 3,
                     channel: int = 0) -> Figure:
    """Truth, prediction and error space-time images (1D data; a mid-plane cut of 2D data).

    Rows: ``n_examples`` trajectories; columns: truth, then for each variant its prediction
    and its signed error (prediction − truth).  Truth and predictions share one colour scale
    (the bar beside the truth); each error panel has its own symmetric scale and colour bar, so
    a 2 % error is as visible as persistence's 50 %.  Titles give that trajectory's nRMSE.
    """
    n = min(n_examples, rs.truth.shape[0])
    fig, axes = plt.subplots(n, 1 + 2 * len(variants),
                             figsize=(2.2 + 2.6 * (1 + 2 * len(variants)), 2.4 * n),
                             squeeze=False, constrained_layout=True)

    def image(a: np.ndarray) -> np.ndarray:  # [K, *space, C] → [K, X]
        a = a[..., channel]
        while a.ndim > 2:
            a = a[:, :, a.shape[2] // 2]
        return a

    def bar(mappable, ax, label: str | None = None) -> None:
        cb = fig.colorbar(mappable, ax=ax, fraction=0.08, pad=0.02)
        cb.ax.tick_params(labelsize=6)
        if label:
            cb.set_label(label, fontsize=7)

    x = rs.coords[0] if rs.coords else np.arange(rs.truth.shape[2])
    t = rs.times[rs.initial_step:]
    extent = (float(x[0]), float(x[-1]), float(t[-1]), float(t[0]))
    for i in range(n):
        truth = image(rs.truth[i])
        lim = float(np.abs(truth).max()) or 1.0
        shown = axes[i, 0].imshow(truth, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
                                  extent=extent)
        bar(shown, axes[i, 0])
        axes[i, 0].set_title("truth" if i == 0 else "", fontsize=8)
        axes[i, 0].set_ylabel(f"trajectory {i}\nt", fontsize=8)
        for j, name in enumerate(variants):
            pred_ax, err_ax = axes[i, 1 + 2 * j], axes[i, 2 + 2 * j]
            pred = image(rs.predictions[name][i])
            error = pred - truth
            elim = float(np.abs(error).max()) or lim
            score = float(metrics.nrmse(rs.predictions[name][i:i + 1],
                                        rs.truth[i:i + 1]).mean())
            pred_ax.imshow(pred, aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
                           extent=extent)
            err = err_ax.imshow(error, aspect="auto", cmap="PuOr_r", vmin=-elim, vmax=elim,
                                extent=extent)
            bar(err, err_ax, "pred − truth" if j == len(variants) - 1 else None)
            pred_ax.set_title(f"{name}\nnRMSE {score:.3g}", fontsize=7)
            err_ax.set_title(f"error of {name}", fontsize=7)
        for ax in axes[i]:
            ax.tick_params(labelsize=6)
    for ax in axes[-1]:
        ax.set_xlabel("x", fontsize=8)
    return fig


def spectra_figure(rs: RolloutSet, variants: Sequence[str]) -> Figure:
    """Energy spectra at the last rolled-out frame: truth against each variant (log-log)."""
    fig, ax = plt.subplots(figsize=(6, 4), constrained_layout=True)
    spatial = rs.truth.ndim - 3
    k, e_true = metrics.energy_spectrum(rs.truth[:, -1], spatial_dims=spatial)
    styles = variant_styles(list(variants))
    ax.loglog(k[1:], e_true[1:], "k-", lw=2, label="truth")  # k = 0 (the mean) left out
    for name in variants:
        _, e = metrics.energy_spectrum(rs.predictions[name][:, -1], spatial_dims=spatial)
        ax.loglog(k[1:], e[1:], label=name, markevery=max(1, len(k) // 12), markersize=3,
                  **styles[name])
    ax.set(xlabel="wavenumber k", ylabel="energy", title="Energy spectrum at the last step")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    return fig


def trajectory_figure(tensor: np.ndarray, x: np.ndarray, t: np.ndarray, title: str = "",
                      max_samples: int = 4) -> Figure:
    """Space-time images of predicted trajectories ``tensor`` [B, T, X(, Y), C] (first channel;
    2D: the middle row in y, as :func:`spacetime_figure`)."""
    n = min(max_samples, tensor.shape[0])
    frames = tensor[:n, ..., 0]
    while frames.ndim > 3:
        frames = frames[:, :, :, frames.shape[3] // 2]
    fig, axes = plt.subplots(1, n, figsize=(3 * n, 3), squeeze=False, constrained_layout=True)
    lim = float(np.abs(frames).max()) or 1.0
    for i in range(n):
        ax = axes[0, i]
        ax.imshow(frames[i], aspect="auto", cmap="RdBu_r", vmin=-lim, vmax=lim,
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
    if REFERENCE_ROW in table.index:
        notes = [*notes, REFERENCE_CAVEAT]
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
