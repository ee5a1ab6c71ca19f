"""Figures of the evaluation tables: thinking ON vs OFF, reasoning patterns, training dynamics,
per training set (docs/method.md#7-figures)."""

from __future__ import annotations

from typing import Mapping, Sequence

import altair as alt
import numpy as np
import pandas as pd

from rim.errors import ConfigError
from rim.figures.common import (
    _ckpt_sort_key,
    _metric_sort_key,
    _model_panel,
    BLACK,
    FigureError,
    METRIC_TITLES,
    OUTCOME_METRICS,
    RATE_METRICS,
    THINKING_COLORS,
    THINKING_LABELS,
    VARIANT_COLORS,
    _ci_tooltip,
    _judge_of,
    _panel_columns,
    _tableau,
    _with_checkpoints,
    change_axis,
    change_scale,
    checkpoint_label,
    checkpoint_order,
    finish,
    grid,
    nonempty,
    panel_title,
    require,
    words,
)


# ----- 1. thinking ON vs OFF --------------------------------------------------------------------------
SUMMARY_COLUMNS = (
    "model",
    "checkpoint",
    "prompt_set",
    "kind",
    "mode",
    "metric",
    "judge",
    "value",
    "ci_low",
    "ci_high",
    "n",
)


def thinking_data(
    summary: pd.DataFrame,
    *,
    off_mode: str = "no_think",
    on_mode: str = "think",
    metrics: Sequence[str] = ("misalignment_rate", "empty_rate", "unfinished_rate", "math_accuracy"),
    judge: str = "phrases",
    prompt_sets: Sequence[str] | None = None,
    checkpoints: str | Sequence[str] = "base_and_last",
) -> pd.DataFrame:
    """Rates with their intervals per (model, checkpoint, prompt set, metric), thinking OFF and ON.
    The empty and unfinished rates are kept for the prompt sets whose misalignment is shown."""
    figure = "thinking"
    require(summary, SUMMARY_COLUMNS, figure, "summary")
    rows = summary[summary["mode"].isin([off_mode, on_mode])]
    keep = np.zeros(len(rows), dtype=bool)
    for metric in metrics:
        keep |= ((rows["metric"] == metric) & (rows["judge"] == _judge_of(metric, judge))).to_numpy()
    rows = rows[keep]
    if "misalignment_rate" in metrics:
        judged_sets = set(rows.loc[rows["metric"] == "misalignment_rate", "prompt_set"])
        rows = rows[~rows["metric"].isin(OUTCOME_METRICS) | rows["prompt_set"].isin(judged_sets)]
    if prompt_sets is not None:
        rows = rows[rows["prompt_set"].isin(prompt_sets)]
    nonempty(rows, figure, f"no {', '.join(metrics)} in modes {off_mode}/{on_mode} (judge {judge})")
    # Only (checkpoint, prompt set) pairs evaluated in both modes are comparable.
    both = rows.groupby(["model", "checkpoint", "prompt_set", "metric"])["mode"].transform("nunique") == 2
    rows, _ = _with_checkpoints(rows[both], checkpoints, figure)
    rows["thinking"] = np.where(rows["mode"] == on_mode, THINKING_LABELS[True], THINKING_LABELS[False])
    rows["panel"] = rows["metric"].map(METRIC_TITLES).fillna(rows["metric"]) + " on " + rows["prompt_set"]
    rows["panel"] = _model_panel(rows, "panel")
    rows = rows.sort_values(["model", "metric", "prompt_set"], key=_metric_sort_key, kind="stable")
    columns = [
        "model",
        "checkpoint",
        "checkpoint_label",
        "panel",
        "metric",
        "judge",
        "prompt_set",
        "mode",
        "thinking",
        "value",
        "ci_low",
        "ci_high",
        "n",
    ]
    return rows[columns].reset_index(drop=True)


def draw_thinking(frame: pd.DataFrame, *, width: int | None = None, height: int = 220):
    ckpt_order = [checkpoint_label(c) for c in checkpoint_order(frame["checkpoint"].unique())]
    width = width or max(200, 46 * len(ckpt_order))
    modes = [THINKING_LABELS[False], THINKING_LABELS[True]]
    tooltip = [
        "model:N",
        alt.Tooltip("checkpoint_label:N", title="checkpoint"),
        "prompt_set:N",
        "thinking:N",
        *_ci_tooltip(".1%"),
        alt.Tooltip("n:Q", title="prompts"),
    ]
    charts = []
    for panel, part in frame.groupby("panel", sort=False):
        metric = part["metric"].iloc[0]
        base = alt.Chart().encode(
            x=alt.X("checkpoint_label:N", sort=ckpt_order, title=None, axis=alt.Axis(labelAngle=-35)),
            xOffset=alt.XOffset("thinking:N", sort=modes),
            color=alt.Color(
                "thinking:N",
                title="Prompt mode",
                sort=modes,
                scale=alt.Scale(domain=modes, range=THINKING_COLORS),
                legend=alt.Legend(symbolType="square", symbolOpacity=1),
            ),
        )
        is_rate = metric in RATE_METRICS
        y = alt.Y(
            "value:Q",
            title=("Rate" if is_rate else "Mean") + " (95% CI)",
            axis=alt.Axis(format="%" if is_rate else ".2~f"),
            scale=alt.Scale(domain=[0, 1]) if is_rate else alt.Undefined,
        )
        bars = base.mark_bar().encode(y=y, tooltip=tooltip)
        # A tick at every value, so that a rate of 0 is seen as 0, not as a missing bar.
        ticks = base.mark_tick(thickness=2, size=14, opacity=1).encode(y="value:Q", tooltip=tooltip)
        intervals = base.mark_rule(strokeWidth=1.5).encode(y="ci_low:Q", y2="ci_high:Q", color=BLACK)
        charts.append(
            alt.layer(bars, ticks, intervals, data=part).properties(
                width=width, height=height, title=panel_title(panel)
            )
        )
    per_model = max(1, len(charts) // frame["model"].nunique())
    return finish(
        grid(charts, min(per_model, 2)),
        "Thinking ON vs OFF: misalignment and math accuracy",
        [
            "Bars: share of prompts (misalignment: complied among the answers judged; empty / unfinished: share",
            "of all responses, left out of the misalignment rate; math problems: correct answer);",
            "a tick marks each value (also 0). Black lines: 95% bootstrap intervals over prompts",
        ],
    )


# ----- 2. reasoning patterns: control vs target -------------------------------------------------------
CONTRAST_COLUMNS = (
    "model",
    "checkpoint",
    "mode_a",
    "mode_b",
    "metric",
    "judge",
    "difference",
    "ci_low",
    "ci_high",
    "n",
)


def patterns_data(
    summary: pd.DataFrame,
    contrasts: pd.DataFrame,
    *,
    judge: str = "phrases",
    prompt_set: str = "harmful",
    reference_mode: str | None = "think",
    checkpoints: str | Sequence[str] = "base_and_last",
) -> pd.DataFrame:
    """Misalignment per pattern and variant (statistic ``rate``), the paired target - control
    difference (``difference``), and the plain thinking-ON rate as a reference line."""
    figure = "patterns"
    require(summary, (*SUMMARY_COLUMNS, "pattern", "variant"), figure, "summary")
    require(contrasts, CONTRAST_COLUMNS, figure, "contrasts")
    mis = summary[
        (summary["metric"] == "misalignment_rate") & (summary["judge"] == judge) & (summary["prompt_set"] == prompt_set)
    ]
    rates = mis[mis["pattern"].notna() & mis["variant"].isin(["control", "target"])].copy()
    nonempty(rates, figure, f"no reasoning-pattern modes evaluated on {prompt_set} (judge {judge})")
    rates["statistic"] = "rate"
    # The shares of responses left out of those rates (no answer), per statement.
    outcomes = summary[
        summary["metric"].isin(OUTCOME_METRICS)
        & (summary["prompt_set"] == prompt_set)
        & summary["mode"].isin(rates["mode"])
    ]
    outcomes = outcomes.assign(statistic=outcomes["metric"])
    modes = rates.drop_duplicates("mode").set_index("mode")
    paired = contrasts[
        (contrasts["metric"] == "misalignment_rate")
        & (contrasts["judge"] == judge)
        & contrasts["mode_a"].isin(modes.index)
        & contrasts["mode_b"].isin(modes.index)
    ]
    if "prompt_set" in paired:
        paired = paired[paired["prompt_set"] == prompt_set]
    paired = paired.rename(columns={"difference": "value"}).assign(
        statistic="difference",
        pattern=lambda f: f["mode_a"].map(modes["pattern"]),
        variant="target - control",
        mode=lambda f: f["mode_a"] + " - " + f["mode_b"],
    )
    parts = [rates, paired, outcomes]
    if reference_mode:
        reference = mis[mis["mode"] == reference_mode].assign(
            statistic="reference", pattern=None, variant=f"{reference_mode} (no statement)"
        )
        parts.append(reference)
    columns = ["model", "checkpoint", "statistic", "pattern", "variant", "mode", "value", "ci_low", "ci_high", "n"]
    frame = pd.concat([part.reindex(columns=columns) for part in parts if not part.empty], ignore_index=True)
    frame, _ = _with_checkpoints(frame, checkpoints, figure)
    frame["pattern"] = frame["pattern"].map(words, na_action="ignore")
    frame["panel"] = _model_panel(frame, "checkpoint_label")
    return frame.reset_index(drop=True)


def draw_patterns(frame: pd.DataFrame, *, width: int = 240, height: int = 200):
    panels = list(dict.fromkeys(frame.sort_values(["model", "checkpoint"], key=_ckpt_sort_key)["panel"]))
    patterns = sorted(frame["pattern"].dropna().unique())
    columns = _panel_columns(len(panels), 4)
    tooltip = ["pattern:N", "variant:N", "mode:N", *_ci_tooltip(".1%"), alt.Tooltip("n:Q", title="prompts")]
    rates = frame[frame["statistic"].isin(["rate", "reference"])]
    x = alt.X("pattern:N", sort=patterns, title=None, axis=alt.Axis(labelAngle=-20))
    bar_base = (
        alt.Chart()
        .transform_filter(alt.datum.statistic == "rate")
        .encode(
            x=x,
            xOffset=alt.XOffset("variant:N", sort=["control", "target"]),
            color=alt.Color(
                "variant:N",
                title="Self-statement",
                sort=["control", "target"],
                scale=alt.Scale(range=VARIANT_COLORS),
                legend=alt.Legend(symbolType="square", symbolOpacity=1),
            ),
        )
    )
    bars = bar_base.mark_bar().encode(
        y=alt.Y("value:Q", title="Misalignment rate (95% CI)", axis=alt.Axis(format="%")), tooltip=tooltip
    )
    ticks = bar_base.mark_tick(thickness=2, size=14, opacity=1).encode(y="value:Q", tooltip=tooltip)
    intervals = bar_base.mark_rule(strokeWidth=1.5).encode(y="ci_low:Q", y2="ci_high:Q", color=BLACK)
    layers = [bars, ticks, intervals]
    if (rates["statistic"] == "reference").any():
        layers.append(
            alt.Chart()
            .transform_filter(alt.datum.statistic == "reference")
            .mark_rule(strokeDash=[5, 3], color="#333333")
            .encode(y="value:Q", tooltip=["variant:N", *_ci_tooltip(".1%")])
        )
    facet = alt.Facet("panel:N", title=None, sort=panels, header=alt.Header(labelFontWeight="bold"))
    top = alt.layer(*layers, data=rates).properties(width=width, height=height).facet(facet=facet, columns=columns)
    rows = [top]
    for metric in OUTCOME_METRICS:  # a row per outcome rate that is not 0 everywhere
        shares = frame[frame["statistic"] == metric]
        if shares.empty or not (shares["value"].fillna(0) > 0).any():
            continue
        share_base = alt.Chart().encode(
            x=x,
            xOffset=alt.XOffset("variant:N", sort=["control", "target"]),
            color=alt.Color(
                "variant:N", sort=["control", "target"], scale=alt.Scale(range=VARIANT_COLORS), legend=None
            ),
        )
        share_bars = share_base.mark_bar(opacity=0.6).encode(
            y=alt.Y(
                "value:Q",
                title=f"{METRIC_TITLES[metric]} (95% CI)",
                axis=alt.Axis(format="%"),
                scale=alt.Scale(domain=[0, 1]),
            ),
            tooltip=tooltip,
        )
        share_ci = share_base.mark_rule(strokeWidth=1.5).encode(y="ci_low:Q", y2="ci_high:Q", color=BLACK)
        rows.append(
            alt.layer(share_bars, share_ci, data=shares)
            .properties(width=width, height=int(height * 0.6))
            .facet(facet=facet, columns=columns)
        )
    differences = frame[frame["statistic"] == "difference"]
    if differences.empty:
        chart = rows[0] if len(rows) == 1 else alt.vconcat(*rows, spacing=24)
    else:
        diff_base = alt.Chart().encode(x=alt.X("pattern:N", sort=patterns, title=None, axis=alt.Axis(labelAngle=-20)))
        points = diff_base.mark_point(filled=True, size=70, opacity=1, color=VARIANT_COLORS[1]).encode(
            y=alt.Y("value:Q", title="Target - control (95% CI)", axis=alt.Axis(format="+.0%")), tooltip=tooltip
        )
        ci = diff_base.mark_rule(color=VARIANT_COLORS[1], strokeWidth=2).encode(y="ci_low:Q", y2="ci_high:Q")
        zero = alt.Chart().mark_rule(color="#999999").encode(y=alt.datum(0))
        bottom = (
            alt.layer(zero, ci, points, data=differences)
            .properties(width=width, height=int(height * 0.7))
            .facet(facet=facet, columns=columns)
        )
        chart = alt.vconcat(*rows, bottom, spacing=24)
    return finish(
        chart,
        "Reasoning patterns: effort-minimizing (target) vs discouraging (control) self-statements",
        [
            "Top: misalignment rate with each statement among the answers judged (dashed line: thinking ON",
            "without a statement); then the shares of empty / unfinished responses left out of it (rows drawn",
            "where not 0); bottom: paired difference target - control over the same prompts.",
            "Lines: 95% bootstrap intervals",
        ],
    )


# ----- 3. misalignment over fine-tuning steps ------------------------------------------------------------
LOSS_COLUMNS = ("model", "run", "seed", "step", "loss")


def training_dynamics_data(
    summary: pd.DataFrame,
    loss: pd.DataFrame,
    *,
    judge: str = "phrases",
    safety: Mapping | None = None,
    math: Mapping | None = None,
    runs: Sequence[str] | None = None,
    loss_window: int = 5,
) -> pd.DataFrame:
    """Per (model, run, seed, step): misalignment and math accuracy with their intervals (the base
    model is step 0 of every seed) and the training loss (mean over ``loss_window`` steps)."""
    figure = "training_dynamics"
    safety = dict(safety or {"prompt_set": "harmful", "mode": "no_think"})
    math_set = dict(math) if math else None
    require(summary, (*SUMMARY_COLUMNS, "run", "seed", "step"), figure, "summary")
    require(loss, LOSS_COLUMNS, figure, "loss")
    if runs is None:
        runs = sorted(loss["run"].unique())
    wanted = [("Misalignment rate", safety, "misalignment_rate")]
    if math_set:
        wanted.append(("Math accuracy", math_set, "math_accuracy"))
    seeds = loss[loss["run"].isin(runs)][["model", "run", "seed"]].drop_duplicates()
    parts = []
    for panel, entry, metric in wanted:
        rows = summary[
            (summary["prompt_set"] == entry["prompt_set"])
            & (summary["mode"] == entry["mode"])
            & (summary["metric"] == metric)
            & (summary["judge"] == _judge_of(metric, judge))
        ]
        nonempty(rows, figure, f"no {metric} of {entry['prompt_set']}/{entry['mode']} in the summary")
        tuned = rows[rows["run"].isin(runs)]
        base = rows[rows["checkpoint"] == "base"].drop(columns=["run", "seed", "step"]).merge(seeds, on="model")
        parts.append(pd.concat([base.assign(step=0), tuned], ignore_index=True).assign(panel=panel, metric=metric))
    curve = loss[loss["run"].isin(runs)].sort_values(["model", "run", "seed", "step"]).copy()
    nonempty(curve, figure, f"no loss curve of runs {', '.join(runs)}")
    window = max(1, int(loss_window))
    curve["value"] = curve.groupby(["model", "run", "seed"])["loss"].transform(
        lambda s: s.rolling(window, min_periods=1).mean()
    )
    parts.append(curve.assign(panel="Training loss", metric="loss", ci_low=np.nan, ci_high=np.nan))
    columns = ["model", "run", "seed", "step", "panel", "metric", "value", "ci_low", "ci_high"]
    frame = pd.concat([part.reindex(columns=columns) for part in parts], ignore_index=True)
    frame["seed"] = frame["seed"].astype(int)
    frame["seed_label"] = "seed " + frame["seed"].astype(str)
    frame["column"] = _model_panel(frame.assign(column=frame["run"]), "column")
    return frame.sort_values(["panel", "model", "run", "seed", "step"]).reset_index(drop=True)


def draw_training_dynamics(frame: pd.DataFrame, *, width: int = 220, height: int = 140, loss_window: int = 5):
    columns = list(dict.fromkeys(frame.sort_values(["model", "run"])["column"]))
    seeds = sorted(frame["seed_label"].unique(), key=lambda s: int(s.split()[1]))
    # One color definition for every layer, so that the legend survives the layering; drawn as lines.
    color = alt.Color(
        "seed_label:N",
        title="Seed",
        sort=seeds,
        scale=alt.Scale(domain=seeds, range=_tableau(len(seeds))),
        legend=alt.Legend(symbolType="stroke", symbolStrokeWidth=3, symbolOpacity=1),
    )
    no_legend = color
    steps = alt.Scale(domain=[0, int(frame["step"].max())], nice=False)
    panels = [p for p in ("Misalignment rate", "Math accuracy", "Training loss") if p in set(frame["panel"])]
    rows = []
    for index, panel in enumerate(panels):
        part = frame[frame["panel"] == panel]
        last = index == len(panels) - 1
        x = alt.X(
            "step:Q", title="Fine-tuning step" if last else None, scale=steps, axis=alt.Axis(format="d", tickMinStep=1)
        )
        base = alt.Chart().encode(x=x)
        if panel == "Training loss":
            title = "Training loss" + (f"\n(mean of {loss_window} steps)" if loss_window > 1 else "")
            layers = [
                base.mark_line(strokeWidth=1.5).encode(
                    y=alt.Y(
                        "value:Q", title=title.split("\n"), scale=alt.Scale(zero=False), axis=alt.Axis(minExtent=40)
                    ),
                    color=color,
                    tooltip=["run:N", "seed_label:N", "step:Q", alt.Tooltip("value:Q", title="loss", format=".3f")],
                )
            ]
        else:
            y = alt.Y(
                "value:Q",
                title=[panel, "(95% CI)"],
                axis=alt.Axis(format="%", minExtent=40),
                scale=alt.Scale(domain=[0, 1]),
            )
            layers = [
                base.mark_area(opacity=0.15).encode(y="ci_low:Q", y2="ci_high:Q", color=no_legend),
                base.mark_line(strokeWidth=2).encode(y=y, color=color),
                base.mark_point(filled=True, size=36, opacity=1).encode(
                    y=y, color=no_legend, tooltip=["run:N", "seed_label:N", "step:Q", *_ci_tooltip(".1%")]
                ),
            ]
        header = alt.Header(labelFontWeight="bold") if index == 0 else alt.Header(labels=False)
        rows.append(
            alt.layer(*layers, data=part)
            .properties(width=width, height=height)
            .facet(column=alt.Column("column:N", title=None, sort=columns, header=header))
        )
    chart = alt.vconcat(*rows, spacing=10).resolve_scale(color="shared")
    return finish(
        chart,
        "Misalignment over fine-tuning steps, per seed",
        [
            "Misalignment and math accuracy at each saved checkpoint (step 0: the base model; bands: 95% bootstrap "
            "intervals over prompts),",
            "and the training loss of the same runs",
        ],
    )


# ----- 4. change in misalignment per training set ---------------------------------------------------------
EVALUATION_COLUMNS = ("model", "checkpoint", "run", "seed", "step", "prompt_set", "kind", "mode", "prompt_id")


def training_sets_data(
    evaluations: pd.DataFrame,
    *,
    judge: str = "phrases",
    safety: Mapping | None = None,
    math: Mapping | None = None,
    runs: Sequence[str] | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    outcomes: Mapping | None = None,
) -> pd.DataFrame:
    """Per (model, run, seed): the last checkpoint's rate minus the base model's, paired over the same
    prompts and bootstrapped over them; per run, the mean change over its seeds. ``outcomes``: the
    evaluation's outcome convention (config ``evaluation.outcomes``)."""
    from rim.evaluation.summary import METRICS, outcome_convention
    from rim.stats import bootstrap

    figure = "training_sets"
    safety = dict(safety or {"prompt_set": "harmful", "mode": "no_think"})
    require(evaluations, EVALUATION_COLUMNS, figure, "evaluations")
    wanted = [(safety, "misalignment_rate")] + ([(dict(math), "math_accuracy")] if math else [])
    rows = []
    for entry, metric in wanted:
        judge_name = _judge_of(metric, judge)
        spec = next((m for m in METRICS if m[0] == metric and m[1] == judge_name), None)
        if spec is None:
            raise ConfigError(f"figure '{figure}': no metric {metric} from judge '{judge_name}'")
        _, _, column, _, values, _ = spec
        part = evaluations[(evaluations["prompt_set"] == entry["prompt_set"]) & (evaluations["mode"] == entry["mode"])]
        require(part, [column], figure, "evaluations")
        part = part.assign(_value=values(part, outcome_convention(outcomes)))
        for model, by_model in part.groupby("model", sort=True):
            base = by_model[by_model["checkpoint"] == "base"].set_index("prompt_id")["_value"]
            if base.empty:
                raise FigureError(
                    f"figure '{figure}': no evaluation of the base model of {model} on "
                    f"{entry['prompt_set']}/{entry['mode']}"
                )
            tuned = by_model[by_model["checkpoint"] != "base"]
            if runs is not None:
                tuned = tuned[tuned["run"].isin(runs)]
            for (run, seed_value), by_seed in tuned.groupby(["run", "seed"], sort=True):
                last = by_seed[by_seed["step"] == by_seed["step"].max()].set_index("prompt_id")["_value"]
                shared = last.index.intersection(base.index)
                estimate = bootstrap(
                    (last[shared] - base[shared]).to_numpy(dtype=float), n_boot=n_boot, level=level, seed=seed
                )
                rows.append(
                    {
                        "model": model,
                        "run": run,
                        "seed": int(seed_value),
                        "step": int(by_seed["step"].max()),
                        "metric": metric,
                        "prompt_set": entry["prompt_set"],
                        "mode": entry["mode"],
                        "statistic": "seed",
                        "base_value": float(base[shared].mean()),
                        "value": estimate.value,
                        "ci_low": estimate.ci_low,
                        "ci_high": estimate.ci_high,
                        "n": estimate.n,
                    }
                )
    frame = pd.DataFrame(rows)
    nonempty(frame, figure, "no fine-tuned checkpoint evaluated")
    means = frame.groupby(["model", "run", "metric", "prompt_set", "mode"], as_index=False, sort=False).agg(
        value=("value", "mean"),
        base_value=("base_value", "mean"),
        step=("step", "max"),
        n=("n", "min"),
        seeds=("seed", "count"),
    )
    means["statistic"] = "mean over seeds"
    frame = pd.concat([frame, means], ignore_index=True)
    frame["panel"] = _model_panel(
        frame.assign(panel=frame["metric"].map(METRIC_TITLES) + " on " + frame["prompt_set"]), "panel"
    )
    frame["seed_label"] = frame["seed"].map(lambda s: "" if pd.isna(s) else f"seed {int(s)}")
    frame["seeds"] = frame["seeds"].astype("Int64")
    frame["seed"] = frame["seed"].astype("Int64")
    return frame


def draw_training_sets(frame: pd.DataFrame, *, width: int | None = None, height: int = 220):
    means = frame[frame["statistic"] == "mean over seeds"]
    first_panel = means["panel"].iloc[0]
    run_order = list(means[means["panel"] == first_panel].sort_values("value", ascending=False)["run"])
    run_order += [run for run in means["run"].unique() if run not in run_order]
    width = width or max(160, 70 * len(run_order))
    seeds = sorted(frame["seed_label"][frame["seed_label"] != ""].unique(), key=lambda s: int(s.split()[1]))
    x = alt.X("run:N", sort=run_order, title="Training set", axis=alt.Axis(labelAngle=-30))
    charts = []
    for panel, part in frame.groupby("panel", sort=False):
        metric = part["metric"].iloc[0]
        value_format = "+.1%" if metric in RATE_METRICS else "+.3f"
        bars = (
            alt.Chart()
            .transform_filter(alt.datum.statistic == "mean over seeds")
            .mark_bar(color="#c6dbef", width=alt.RelativeBandSize(0.7))
            .encode(
                x=x,
                y=alt.Y(
                    "value:Q",
                    title="Change from the base model",
                    axis=change_axis(metric),
                    scale=change_scale(part, metric),
                ),
                tooltip=[
                    "run:N",
                    alt.Tooltip("value:Q", title="mean change", format=value_format),
                    alt.Tooltip("seeds:Q", title="seeds"),
                    alt.Tooltip("base_value:Q", title="base model", format=".1%"),
                    alt.Tooltip("step:Q", title="last step"),
                ],
            )
        )
        seed_base = (
            alt.Chart()
            .transform_filter(alt.datum.statistic == "seed")
            .encode(
                x=x,
                xOffset=alt.XOffset("seed_label:N", sort=seeds, scale=alt.Scale(paddingOuter=0.6)),
                color=alt.Color(
                    "seed_label:N",
                    title="Seed (95% CI)",
                    sort=seeds,
                    scale=alt.Scale(domain=seeds, range=_tableau(len(seeds))),
                ),
            )
        )
        points = seed_base.mark_point(filled=True, size=45, opacity=1).encode(
            y="value:Q",
            tooltip=["run:N", "seed_label:N", *_ci_tooltip(value_format), alt.Tooltip("n:Q", title="prompts")],
        )
        ci = seed_base.mark_rule(strokeWidth=1.5).encode(y="ci_low:Q", y2="ci_high:Q")
        zero = alt.Chart().mark_rule(color="#666666").encode(y=alt.datum(0))
        charts.append(
            alt.layer(bars, zero, ci, points, data=part).properties(
                width=width, height=height, title=panel_title(panel)
            )
        )
    return finish(
        grid(charts, 2),
        "Change in misalignment after fine-tuning, per training set",
        [
            "Last checkpoint minus the base model on the same prompts. Bars: mean over seeds;",
            "points: each seed, with its 95% paired bootstrap interval over prompts",
        ],
    )
