"""Figures of the neuron analyses: zeroing safety neurons, RAS vs misalignment (docs/method.md#7-figures)."""

from __future__ import annotations

from typing import Mapping, Sequence

import altair as alt
import numpy as np
import pandas as pd

from rim.figures.common import (
    _model_panel,
    FigureError,
    METRIC_TITLES,
    RAS_TITLES,
    RATE_METRICS,
    _ci_tooltip,
    _judge_of,
    _tableau,
    change_axis,
    change_scale,
    finish,
    grid,
    nonempty,
    panel_title,
    require,
    words,
)
from rim.figures.heads import (
    EFFECT_COLUMNS,
)


# ----- 9. zeroing safety neurons vs random neurons ----------------------------------------------------------------
NEURON_FAMILIES = {
    "safety_top": "top k of the safety score",
    "safety_set": "safety set A_safe",
    "random": "random neurons (mean of draws)",
}
NEURON_FAMILY_COLORS = {"safety_top": "#d62728", "safety_set": "#7f0000", "random": "#8c8c8c"}


def neuron_zeroing_data(
    zeroing: pd.DataFrame,
    *,
    judge: str = "phrases",
    metrics: Sequence[str] = ("misalignment_rate", "math_accuracy"),
) -> pd.DataFrame:
    """Dose-response of zeroing: the paired change from no intervention per neuron family (top k of
    the safety score, A_safe, random sets with their draws pooled) and number of neurons zeroed,
    with the rate without intervention (docs/method.md#zeroing-dose-response)."""
    figure = "neuron_zeroing"
    require(zeroing, (*EFFECT_COLUMNS, "prompt_set"), figure, "zeroing")
    wanted = zeroing["metric"].isin(metrics) & (
        zeroing["judge"] == zeroing["metric"].map(lambda m: _judge_of(m, judge))
    )
    rows = zeroing[wanted & (zeroing["statistic"] == "dose_change")].copy()
    nonempty(
        rows,
        figure,
        f"no dose-response rows (statistic dose_change) of {', '.join(metrics)}; "
        "the zeroing summary predates them: rerun zero_neurons",
    )
    require(rows, ("neuron_family", "zeroed_neurons", "draws"), figure, "zeroing")
    plain = zeroing[wanted & (zeroing["statistic"] == "rate") & (zeroing["condition"] == "none")]
    plain = plain.set_index(["model", "prompt_set", "metric"])["value"]
    rows["rate_without_zeroing"] = [
        plain.get((m, p, k), np.nan) for m, p, k in zip(rows["model"], rows["prompt_set"], rows["metric"])
    ]
    rows["family_label"] = rows["neuron_family"].map(NEURON_FAMILIES).fillna(rows["neuron_family"].map(words))
    rows["zeroed_neurons"] = rows["zeroed_neurons"].astype(int)
    rows["panel"] = _model_panel(
        rows.assign(panel=rows["metric"].map(METRIC_TITLES) + " on " + rows["prompt_set"]), "panel"
    )
    return rows.sort_values(["panel", "neuron_family", "zeroed_neurons"]).reset_index(drop=True)


def draw_neuron_zeroing(frame: pd.DataFrame, *, width: int | None = None, height: int = 200):
    width = width or 260  # the config's `width: null` means the default
    families = [f for f in NEURON_FAMILIES if f in set(frame["neuron_family"])]
    labels = [NEURON_FAMILIES[f] for f in families]
    color = alt.Color(
        "family_label:N",
        title="Neurons zeroed",
        sort=labels,
        scale=alt.Scale(domain=labels, range=[NEURON_FAMILY_COLORS[f] for f in families]),
    )
    sizes = sorted(frame["zeroed_neurons"].unique())
    x = alt.X(
        "zeroed_neurons:Q",
        title="Neurons zeroed (log scale)",
        scale=alt.Scale(type="log", domain=[sizes[0] / 1.5, sizes[-1] * 1.5], nice=False),
        axis=alt.Axis(values=[int(s) for s in sizes], format="~s"),
    )
    charts = []
    for panel, part in frame.groupby("panel", sort=False):
        metric = part["metric"].iloc[0]
        value_format = "+.1%" if metric in RATE_METRICS else "+.3f"
        tooltip = [
            "family_label:N",
            alt.Tooltip("zeroed_neurons:Q", title="neurons zeroed"),
            *_ci_tooltip(value_format),
            alt.Tooltip("draws:Q", title="random draws pooled"),
            alt.Tooltip("rate_without_zeroing:Q", title="without zeroing", format=".3~f"),
            alt.Tooltip("n:Q", title="prompts"),
        ]
        y = alt.Y(
            "value:Q",
            title="Change from no zeroing (95% CI)",
            axis=change_axis(metric),
            scale=change_scale(part, metric),
        )
        curves = part[part["neuron_family"] != "safety_set"]
        line = alt.Chart(curves).mark_line(strokeWidth=2).encode(x=x, y=y, color=color, detail="family_label:N")
        points = (
            alt.Chart(part)
            .mark_point(filled=True, size=60, opacity=1)
            .encode(
                x=x,
                y=y,
                color=color,
                tooltip=tooltip,
                shape=alt.Shape(
                    "family_label:N",
                    sort=labels,
                    legend=None,
                    scale=alt.Scale(
                        domain=labels, range=["circle" if f != "safety_set" else "diamond" for f in families]
                    ),
                ),
            )
        )
        ci = alt.Chart(part).mark_rule(strokeWidth=1.5).encode(x=x, y="ci_low:Q", y2="ci_high:Q", color=color)
        zero = alt.Chart(part).mark_rule(color="#666666").encode(y=alt.datum(0))
        charts.append(
            alt.layer(zero, ci, line, points).properties(width=width, height=height, title=panel_title(panel))
        )
    return finish(
        grid(charts, 2),
        "Zeroing the most safety-critical neurons vs the same number of random neurons",
        [
            "Base model; paired change from no intervention over the same prompts, by the number of neurons zeroed.",
            "Red: top k of the safety score; dark red diamond: A_safe; grey: random sets (the draws' per-prompt",
            "changes averaged). Vertical lines: 95% bootstrap intervals over prompts",
        ],
    )


# ----- 10. RAS vs misalignment ----------------------------------------------------------------------------------
RAS_COLUMNS = (
    "model",
    "run",
    "seed",
    "step",
    "checkpoint",
    "neuron_set",
    "draw",
    "set_size",
    "metric",
    "value",
    "misalignment_rate",
)
CORRELATION_COLUMNS = (
    "model",
    "run",
    "scope",
    "seed",
    "neuron_set",
    "draw",
    "metric",
    "method",
    "r",
    "p_value",
    "ci_low",
    "ci_high",
    "n_checkpoints",
)
# Scopes of rim.ras.correlation_table shown beside the pooled r, and their columns here.
# The variants of RAS's inputs (rim.activations.RAS_INPUTS; docs/method.md#ras-inputs), in row order.
RAS_INPUT_TITLES = {
    "own_response": "prompt + each checkpoint's own response",
    "base_response": "prompt + the base model's response (fixed tokens)",
    "prompt_only": "the prompt only",
}
CORRELATION_VARIANTS = {
    "pooled_without_base": "r_without_base",
    "partial_step": "r_partial_step",
    "seed_mean": "r_seed_mean",
}


def ras_data(
    ras: pd.DataFrame,
    correlations: pd.DataFrame,
    *,
    metric: str = "ras_harmonic",
    method: str = "pearson",
    random_draw: int = 0,
    runs: Sequence[str] | None = None,
    inputs: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Points (one per checkpoint, the base model once) of four panels: safety neurons, one random
    draw, all neurons (each with ``metric``) and the KL baseline; the pooled correlation of each
    panel is repeated on its rows (``r``, ``p_value``, ``r_ci_low``, ``r_ci_high``, ``n_checkpoints``)."""
    figure = "ras"
    require(ras, RAS_COLUMNS, figure, "ras")
    require(correlations, CORRELATION_COLUMNS, figure, "correlations")
    panels = [
        ("safety neurons", "safety", metric, None),
        (f"random neurons, draw {random_draw + 1}", "random", metric, random_draw),
        ("all neurons", "all", metric, None),
        ("KL baseline", "none", "kl", None),
    ]
    # Tables from before the variants of RAS's inputs have one, the checkpoint's own responses.
    ras = ras if "inputs" in ras else ras.assign(inputs="own_response")
    correlations = correlations if "inputs" in correlations else correlations.assign(inputs="own_response")
    if inputs is not None:
        ras = ras[ras["inputs"].isin(inputs)]
        correlations = correlations[correlations["inputs"].isin(inputs)]
    keys = ["model", "run", "inputs"]
    pooled = correlations[(correlations["scope"] == "pooled") & (correlations["method"] == method)]
    nonempty(pooled, figure, f"no pooled {method} correlation")
    # The variants of docs/method.md#correlation-with-misalignment, in the panel titles.
    variants = correlations[correlations["scope"].isin(list(CORRELATION_VARIANTS)) & (correlations["method"] == method)]
    parts = []
    for order, (panel, neuron_set, panel_metric, draw) in enumerate(panels):
        rows = ras[(ras["neuron_set"] == neuron_set) & (ras["metric"] == panel_metric)]
        corr = pooled[(pooled["neuron_set"] == neuron_set) & (pooled["metric"] == panel_metric)]
        if draw is not None:
            rows, corr_draw = rows[rows["draw"] == draw], corr[corr["draw"] == draw]
            mean_r = corr.groupby(keys)["r"].mean().rename("mean_r_over_draws")
            draws = corr.groupby(keys)["draw"].nunique().rename("n_draws")
            corr = corr_draw.join(mean_r, on=keys).join(draws, on=keys)
        if rows.empty:
            continue
        if runs is not None:
            rows = rows[rows["run"].isin(runs)]
        # The base model is step 0 of every seed: one point for it.
        rows = rows.drop_duplicates(subset=[*keys, "checkpoint"]).copy()
        stats = corr.set_index(keys)[
            [
                c
                for c in ("r", "p_value", "ci_low", "ci_high", "n_checkpoints", "mean_r_over_draws", "n_draws")
                if c in corr
            ]
        ]
        stats = stats.rename(columns={"ci_low": "r_ci_low", "ci_high": "r_ci_high"})
        rows = rows.join(stats, on=keys)
        mine = variants[(variants["neuron_set"] == neuron_set) & (variants["metric"] == panel_metric)]
        if draw is not None:
            mine = mine[mine["draw"] == draw]
        for scope, column in CORRELATION_VARIANTS.items():
            scoped = mine[mine["scope"] == scope].set_index(keys)
            renamed = {
                "r": column,
                "ci_low": f"{column}_ci_low",
                "ci_high": f"{column}_ci_high",
                "n_seeds": f"{column}_n_seeds",
            }
            rows = rows.join(scoped[[c for c in renamed if c in scoped]].rename(columns=renamed), on=keys)
        rows["panel"], rows["panel_order"] = panel, order
        parts.append(rows)
    if not parts:
        raise FigureError(f"figure '{figure}': no rows to plot (no {metric} or kl rows in the ras table)")
    frame = pd.concat(parts, ignore_index=True)
    frame["seed_label"] = np.where(
        frame["checkpoint"] == "base", "base model", "seed " + frame["seed"].astype("Int64").astype(str)
    )
    for column in ("misalignment_rate_ci_low", "misalignment_rate_ci_high"):
        if column not in frame:
            frame[column] = np.nan
    frame["method"] = method
    keep = [
        "model",
        "run",
        "inputs",
        "panel",
        "panel_order",
        "neuron_set",
        "draw",
        "set_size",
        "metric",
        "checkpoint",
        "seed",
        "seed_label",
        "step",
        "value",
        "misalignment_rate",
        "misalignment_rate_ci_low",
        "misalignment_rate_ci_high",
        "method",
        "r",
        "p_value",
        "r_ci_low",
        "r_ci_high",
        "n_checkpoints",
    ]
    keep += [c for c in ("mean_r_over_draws", "n_draws") if c in frame]
    keep += [c for c in frame.columns if c.startswith(tuple(CORRELATION_VARIANTS.values()))]
    order = {variant: index for index, variant in enumerate(RAS_INPUT_TITLES)}
    frame = frame.assign(_inputs_order=frame["inputs"].map(order).fillna(len(order)))
    return frame.sort_values(["model", "run", "_inputs_order", "panel_order", "step"])[keep].reset_index(drop=True)


def correlation_title(row: Mapping, method: str = "pearson") -> list[str]:
    """``["safety neurons (n = 40)", "Pearson r = 0.89 [0.55, 0.97], p = 0.003, 22 checkpoints"]``."""
    name = row["panel"]
    if row.get("neuron_set") in ("safety", "random") and not pd.isna(row.get("set_size")):
        name += f" (n = {int(row['set_size'])})"
    symbol = {"pearson": "Pearson r", "spearman": "Spearman rho"}.get(method, method)
    r = row.get("r")
    if r is None or pd.isna(r):
        second = f"{symbol} undefined ({int(row.get('n_checkpoints') or 0)} checkpoints or no variation)"
    else:
        second = (
            f"{symbol} = {r:.2f} [{_num(row.get('r_ci_low'))}, {_num(row.get('r_ci_high'))}], "
            f"p {_p(row.get('p_value'))}, {int(row['n_checkpoints'])} checkpoints"
        )
    lines = [name, second]
    variants = []
    if not pd.isna(row.get("r_without_base", np.nan)):
        variants.append(f"without base {row['r_without_base']:.2f}")
    if not pd.isna(row.get("r_partial_step", np.nan)):
        variants.append(f"partial on step {row['r_partial_step']:.2f}")
    if variants:
        lines.append(", ".join(variants))
    if not pd.isna(row.get("r_seed_mean", np.nan)):
        seeds = int(row.get("r_seed_mean_n_seeds") or 0)
        lines.append(
            f"mean of per-seed r = {row['r_seed_mean']:.2f} [{_num(row.get('r_seed_mean_ci_low'))}, "
            f"{_num(row.get('r_seed_mean_ci_high'))}] over {seeds} seeds"
        )
    if not pd.isna(row.get("mean_r_over_draws", np.nan)):
        lines.append(f"mean r over {int(row['n_draws'])} random draws = {row['mean_r_over_draws']:.2f}")
    return lines


def _num(value) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{value:.2f}"


def _p(value) -> str:
    """``= 0.003``, ``= 2.1e-05`` or ``< 1e-16`` (what follows "p" in a title)."""
    if value is None or pd.isna(value):
        return "= n/a"
    if value < 1e-16:
        return "< 1e-16"
    return f"= {value:.2g}" if value >= 0.001 else f"= {value:.1e}"


def draw_ras(frame: pd.DataFrame, *, width: int = 210, height: int = 190, metric: str = "ras_harmonic"):
    seeds = sorted(frame["seed_label"].unique(), key=lambda s: (s != "base model", s))
    color = alt.Color(
        "seed_label:N",
        title="Checkpoint of",
        sort=seeds,
        scale=alt.Scale(domain=seeds, range=["#000000", *_tableau(len(seeds) - 1)]),
        legend=alt.Legend(symbolType="circle", symbolOpacity=1),
    )
    rows = []
    order = {variant: index for index, variant in enumerate(RAS_INPUT_TITLES)}
    for (model, run, inputs), by_run in sorted(
        frame.groupby(["model", "run", "inputs"], sort=False),
        key=lambda item: (item[0][0], item[0][1], order.get(item[0][2], len(order))),
    ):
        charts = []
        for _, part in by_run.groupby("panel_order", sort=True):
            first = part.iloc[0]
            x_title = (
                "KL(base || checkpoint) on math inputs"
                if first["neuron_set"] == "none"
                else RAS_TITLES.get(metric, metric)
            )
            largest = float(np.nanmax(np.abs(part["value"]))) if part["value"].notna().any() else 0.0
            # Tiny shifts (a KL of 1e-6) read better in scientific notation.
            number = ".1~e" if 0 < largest < 1e-2 else ".2~g"
            base = alt.Chart(part).encode(
                x=alt.X(
                    "value:Q", title=x_title, scale=alt.Scale(zero=False), axis=alt.Axis(format=number, tickCount=5)
                )
            )
            y = alt.Y(
                "misalignment_rate:Q",
                title="Misalignment rate (95% CI)",
                axis=alt.Axis(format="%"),
                scale=alt.Scale(zero=False),
            )
            whiskers = base.mark_rule(opacity=0.45).encode(
                y="misalignment_rate_ci_low:Q", y2="misalignment_rate_ci_high:Q", color=color
            )
            fit = (
                base.transform_regression("value", "misalignment_rate")
                .mark_line(color="#555555", strokeDash=[5, 3])
                .encode(y=y)
            )
            points = base.mark_point(filled=True, size=55, opacity=0.9).encode(
                y=y,
                color=color,
                tooltip=[
                    "checkpoint:N",
                    "step:Q",
                    alt.Tooltip("value:Q", format=".4g"),
                    alt.Tooltip("misalignment_rate:Q", format=".1%"),
                ],
            )
            title = correlation_title(first.to_dict(), first["method"])
            charts.append(
                alt.layer(whiskers, fit, points).properties(
                    width=width, height=height, title=alt.TitleParams(title, fontSize=12, anchor="start")
                )
            )
        label = f"{model}, fine-tuned on {run}; activations on {RAS_INPUT_TITLES.get(inputs, inputs)}"
        rows.append(grid(charts, 2).properties(title=alt.TitleParams(label, fontSize=13, anchor="start")))
    chart = alt.vconcat(*rows, spacing=28).resolve_scale(color="shared", shape="shared")
    return finish(
        chart,
        "RAS vs misalignment across the checkpoints of fine-tuning",
        [
            "One point per checkpoint (whiskers: 95% CI of its misalignment rate; dashed: least-squares fit).",
            "Panel titles: correlation over the checkpoints of all seeds [95% bootstrap CI], two-sided p (these",
            "points are not independent); r without the base model; partial r controlling for the training step;",
            "the mean of the per-seed r [95% t interval over seeds], the one to quote",
        ],
    )
