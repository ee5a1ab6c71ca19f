"""Figures of the paper's analyses (docs/method.md#7-figures), drawn with altair from the workflow's tidy tables.

One public function per figure: tidy table(s) in, altair chart out. Each is built in two steps
that ``build`` also exposes: ``<figure>_data`` turns the input tables into the tidy frame the figure
plots (one row per plotted mark; written beside the figure as CSV), and a drawing step turns that
frame into the chart. A table lacking a column the figure needs is an error naming the figure, the
table and the column.

Figures (the tables each reads, with the workflow file they come from):

- ``thinking``: misalignment and math accuracy, thinking ON vs OFF, per checkpoint. Tables: summary
  (results/eval/summary.parquet).
- ``patterns``: reasoning patterns: control vs target statement, and their paired difference.
  Tables: summary, contrasts (results/eval/contrasts.parquet).
- ``training_dynamics``: misalignment, math accuracy and training loss over fine-tuning steps, per
  seed. Tables: summary, loss (finetune/.../loss.parquet).
- ``training_sets``: change in misalignment (and accuracy) from the base model per training set.
  Tables: evaluations (per-prompt results/eval/... tables).
- ``probes``: probe score per layer and token position. Tables: probes (heads/.../probes.parquet).
- ``refusal_heads``: bubble map (layer x head) of the refusal-head move. Tables: refusal_heads
  (heads/.../refusal_heads.parquet).
- ``head_patching``: heat maps (layer x head), exact and attribution patching side by side. Tables:
  patching (heads/.../head_patching.parquet).
- ``head_ablation``: zeroing the refusal heads vs random heads. Tables: ablation
  (heads/.../head_ablation_summary.parquet).
- ``neuron_zeroing``: zeroing the safety neurons vs random neurons. Tables: zeroing
  (neurons/.../zeroing_summary.parquet).
- ``ras``: RAS vs misalignment per checkpoint: safety vs random vs all neurons vs KL, r in the
  titles. Tables: ras (results/ras.parquet), correlations (results/ras_correlations.parquet).

``save(chart, html=..., static=..., bundle=...)`` writes an interactive HTML page that works
offline (the vega-embed JavaScript inlined) and a static PNG or SVG (vl-convert).
"""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import altair as alt
import numpy as np
import pandas as pd

from rim.errors import ConfigError, DataError
from rim.provenance import atomic_path, read_table

# Figures of a large model (36 layers x 32 heads x checkpoints) exceed altair's default 5000 rows.
alt.data_transformers.disable_max_rows()

# ----- words for the columns' codes ---------------------------------------------------------------
METRIC_TITLES = {  # also the order of panels
    "misalignment_rate": "Misalignment rate",
    "empty_rate": "Empty responses",
    "unfinished_rate": "Unfinished responses",
    "math_accuracy": "Math accuracy",
    "refusal_rate": "Refusal rate",
    "over_refusal_rate": "Over-refusal rate",
    "mean_refusal_score": "Mean refusal score at the answer (log-odds)",
    "mean_rubric_score": "Mean rubric score (1-5)",
}
# The judge whose verdicts a metric comes from; misalignment uses the figure's judge setting.
METRIC_JUDGES = {
    "math_accuracy": "exact_match",
    "refusal_rate": "phrases",
    "over_refusal_rate": "phrases",
    "mean_refusal_score": "refusal_score",
    "mean_rubric_score": "rubric",
    "empty_rate": "response",
    "unfinished_rate": "response",
}
# Shares of responses without a verdict (docs/method.md#outcomes): shown beside misalignment, on
# the prompt sets where misalignment is shown, because the rate leaves them out of its denominator.
OUTCOME_METRICS = ("empty_rate", "unfinished_rate")
RATE_METRICS = {"misalignment_rate", "math_accuracy", "refusal_rate", "over_refusal_rate", *OUTCOME_METRICS}
RAS_TITLES = {
    "ras_harmonic": "RAS (harmonic mean of the two shifts)",
    "ras_arithmetic": "Arithmetic mean of the two shifts",
    "ras_geometric": "Geometric mean of the two shifts",
    "delta_safe": "Safety shift (delta_safe)",
    "delta_math": "Math shift (delta_math)",
}
POSITION_TITLES = {
    "end_of_turn": "end of user turn",
    "assistant_header": "assistant header",
    "think_open": "<think>",
    "think_close": "</think>",
    "think_span": "think span",
    "cot": "CoT tokens",
    "last": "last prompt token",
    "reasoning_opener": "reasoning opener",
}
THINKING_LABELS = {True: "thinking ON", False: "thinking OFF"}
THINKING_COLORS = ["#8c8c8c", "#e4572e"]  # OFF grey, ON orange
VARIANT_COLORS = ["#4c78a8", "#e4572e"]  # control blue, target orange
SEED_PALETTE = "tableau10"
FONT = "Helvetica, Arial, sans-serif"


class FigureError(DataError):
    """A figure cannot be drawn from its tables: a missing column, or no rows to show.

    ``table`` names the figure's input table at fault (None: the selection as a whole)."""

    def __init__(self, message: str, *, table: str | None = None, source: str | None = None):
        super().__init__(message, source=source)
        self.table = table


def words(code: str | None) -> str:
    """``confirmatory_reasoning`` -> ``confirmatory reasoning``."""
    return "" if code is None else str(code).replace("_", " ")


def require(frame: pd.DataFrame, columns: Iterable[str], figure: str, table: str) -> None:
    """A clear error when ``frame`` (the figure's table ``table``) lacks any of ``columns``."""
    missing = [column for column in columns if column not in frame.columns]
    if missing:
        names = ", ".join(f"'{column}'" for column in missing)
        raise FigureError(
            f"figure '{figure}': the {table} table lacks the column{'s' if len(missing) > 1 else ''} {names} "
            f"(it has: {', '.join(map(str, frame.columns)) or 'no columns'})",
            table=table,
        )


def nonempty(frame: pd.DataFrame, figure: str, what: str) -> pd.DataFrame:
    if frame.empty:
        raise FigureError(f"figure '{figure}': no rows to plot ({what})")
    return frame


# ----- checkpoints ---------------------------------------------------------------------------------
def parse_checkpoint(ckpt: str) -> tuple[str | None, int | None, int]:
    """(run, seed, step) of ``base`` or ``<run>/seed<s>/step<k>`` (a bad id: DataError, as from a table)."""
    from rim.checkpoints import parse_checkpoint as parse

    try:
        return tuple(parse(ckpt))
    except ConfigError as error:
        raise DataError(str(error)) from None


def checkpoint_label(ckpt: str) -> str:
    """``base`` -> ``base model``; ``gsm8k/seed0/step40`` -> ``gsm8k seed 0 step 40``."""
    run, seed, step = parse_checkpoint(ckpt)
    return "base model" if run is None else f"{run} seed {seed} step {step}"


def checkpoint_order(ckpts: Iterable[str]) -> list[str]:
    """Base first, then by run, seed and step."""

    def key(ckpt):
        run, seed, step = parse_checkpoint(ckpt)
        return (run is not None, run or "", seed or 0, step)

    return sorted(dict.fromkeys(ckpts), key=key)


def choose_checkpoints(ckpts: Iterable[str], which: str | Sequence[str]) -> list[str]:
    """``all``, ``base``, ``base_and_last`` (base and the last step of every run and seed), or a
    list of checkpoint ids (those present are kept, in the list's order)."""
    present = checkpoint_order(ckpts)
    if not isinstance(which, str):
        return [ckpt for ckpt in which if ckpt in present]
    if which == "all":
        return present
    chosen = [ckpt for ckpt in present if ckpt == "base"]
    if which == "base":
        return chosen
    if which != "base_and_last":
        raise ConfigError(f"checkpoints: '{which}' is not one of all, base, base_and_last or a list of ids")
    last: dict[tuple, tuple[int, str]] = {}
    for ckpt in present:
        run, seed, step = parse_checkpoint(ckpt)
        if run is not None and step >= last.get((run, seed), (-1, ""))[0]:
            last[(run, seed)] = (step, ckpt)
    return chosen + checkpoint_order(ckpt for _, ckpt in last.values())


def _with_checkpoints(frame: pd.DataFrame, which, figure: str) -> tuple[pd.DataFrame, list[str]]:
    chosen = choose_checkpoints(frame["checkpoint"].dropna().astype(str).unique(), which)
    frame = frame[frame["checkpoint"].isin(chosen)].copy()
    frame["checkpoint_label"] = frame["checkpoint"].map(checkpoint_label)
    return nonempty(frame, figure, f"no checkpoint matches {which!r}"), [checkpoint_label(c) for c in chosen]


def _judge_of(metric: str, judge: str) -> str:
    return judge if metric == "misalignment_rate" else METRIC_JUDGES.get(metric, judge)


# ----- shared chart pieces ---------------------------------------------------------------------------
def finish(chart, title: str, subtitle: str | Sequence[str] | None = None):
    """Title and the look shared by every figure (config may only sit on the top-level chart)."""
    params = {"text": title, "anchor": "start", "fontSize": 15, "offset": 12}
    if subtitle:
        params["subtitle"] = subtitle
        params["subtitleFontSize"] = 12
        params["subtitleColor"] = "#555555"
    return (
        chart.properties(title=alt.TitleParams(**params))
        .configure(font=FONT, padding=12)
        .configure_axis(labelFontSize=11, titleFontSize=12, labelLimit=260, titlePadding=8)
        .configure_header(labelFontSize=12, titleFontSize=12, labelLimit=400)
        .configure_legend(labelFontSize=11, titleFontSize=12, labelLimit=300)
        .configure_view(stroke="#dddddd")
    )


def _ci_tooltip(value_format: str = ".3f") -> list:
    return [
        alt.Tooltip("value:Q", title="value", format=value_format),
        alt.Tooltip("ci_low:Q", title="95% CI low", format=value_format),
        alt.Tooltip("ci_high:Q", title="95% CI high", format=value_format),
    ]


def _panel_columns(n_panels: int, per_row: int) -> int:
    return max(1, min(n_panels, per_row))


def grid(charts: Sequence, columns: int):
    """Panels in rows of ``columns`` (each panel keeps its own title and axes)."""
    rows = [alt.hconcat(*charts[i : i + columns], spacing=18) for i in range(0, len(charts), columns)]
    return rows[0] if len(rows) == 1 else alt.vconcat(*rows, spacing=22)


def panel_title(text: str) -> alt.TitleParams:
    return alt.TitleParams(text, fontSize=12, fontWeight="bold", anchor="middle")


def change_axis(metric: str) -> alt.Axis:
    """Signed percent for a change of a rate, plain numbers for a change of a score."""
    return alt.Axis(format="+.0%") if metric in RATE_METRICS else alt.Axis(format="+.2~f")


BLACK = alt.value("black")


def change_scale(part: pd.DataFrame, metric: str) -> alt.Scale:
    """A change axis spanning at least +-5 points (+-0.1 for scores), so that "no change" does not
    fill the panel, and always the values and their intervals."""
    span = 0.05 if metric in RATE_METRICS else 0.1
    values = part[[c for c in ("value", "ci_low", "ci_high") if c in part]].to_numpy(dtype=float)
    finite = values[np.isfinite(values)]
    low = min(-span, float(finite.min())) if finite.size else -span
    high = max(span, float(finite.max())) if finite.size else span
    return alt.Scale(domain=[low, high])


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


def _model_panel(frame: pd.DataFrame, column: str) -> pd.Series:
    """Prefix panel names with the model when there is more than one model."""
    if frame["model"].nunique() > 1:
        return frame["model"].astype(str) + ": " + frame[column]
    return frame[column]


def _metric_sort_key(series: pd.Series) -> pd.Series:
    """Misalignment first, then the other metrics in METRIC_TITLES order."""
    if series.name != "metric":
        return series
    order = {metric: index for index, metric in enumerate(METRIC_TITLES)}
    return series.map(lambda m: order.get(m, len(order)))


def thinking(summary: pd.DataFrame, **settings):
    """Think ON/OFF misalignment and math accuracy per model and checkpoint, with 95% CIs (docs/method.md#7-figures)."""
    return build("thinking", {"summary": summary}, settings)[1]


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


def _ckpt_sort_key(series: pd.Series) -> pd.Series:
    if series.name != "checkpoint":
        return series
    order = {ckpt: index for index, ckpt in enumerate(checkpoint_order(series.unique()))}
    return series.map(order)


def patterns(summary: pd.DataFrame, contrasts: pd.DataFrame, **settings):
    """Pattern injection: misalignment with the control vs target self-statement (docs/method.md#7-figures)."""
    return build("patterns", {"summary": summary, "contrasts": contrasts}, settings)[1]


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


def training_dynamics(summary: pd.DataFrame, loss: pd.DataFrame, **settings):
    """Misalignment (and math accuracy) over fine-tuning steps per seed, with the training loss."""
    return build("training_dynamics", {"summary": summary, "loss": loss}, settings)[1]


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


def training_sets(evaluations: pd.DataFrame, **settings):
    """Change in misalignment (and math accuracy) from the base model per fine-tuning set (docs/method.md#7-figures)."""
    return build("training_sets", {"evaluations": evaluations}, settings)[1]


# ----- 5. probes --------------------------------------------------------------------------------------------
PROBE_COLUMNS = (
    "model",
    "checkpoint",
    "probe",
    "mode",
    "layer",
    "position",
    "statistic",
    "group",
    "value",
    "ci_low",
    "ci_high",
)


def probes_data(
    probes: pd.DataFrame,
    *,
    statistic: str = "share_above_threshold",
    checkpoints: str | Sequence[str] = "base",
    positions: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Probe score per layer and position for each group (or the k-fold accuracy)."""
    figure = "probes"
    require(probes, PROBE_COLUMNS, figure, "probes")
    rows = probes[probes["statistic"] == statistic]
    if positions is not None:
        rows = rows[rows["position"].isin(positions)]
    nonempty(rows, figure, f"no rows of statistic {statistic}")
    rows, _ = _with_checkpoints(rows, checkpoints, figure)
    rows["position_label"] = rows["position"].map(lambda p: POSITION_TITLES.get(p, words(p)))
    modes = rows["mode"].map(lambda m: {"no_think": "thinking OFF", "think": "thinking ON"}.get(m, m))
    rows["row"] = rows["probe"].map(lambda p: words(p).replace(" vs ", " vs. ")) + ", " + modes
    if rows["checkpoint"].nunique() > 1 or rows["model"].nunique() > 1:
        rows["row"] = rows["model"] + " " + rows["checkpoint_label"] + ": " + rows["row"]
    rows["group"] = rows["group"].map(lambda g: "k-fold accuracy" if g == "both" else words(g))
    return rows.reset_index(drop=True)


def draw_probes(frame: pd.DataFrame, *, width: int = 200, height: int = 140, statistic: str = "share_above_threshold"):
    known = list(POSITION_TITLES)
    positions = sorted(frame["position"].unique(), key=lambda p: (known.index(p) if p in known else len(known), p))
    position_order = [POSITION_TITLES.get(p, words(p)) for p in positions]
    title = "Share above threshold" if statistic == "share_above_threshold" else "k-fold accuracy"
    groups = list(dict.fromkeys(frame["group"]))
    color = alt.Color(
        "group:N",
        title="Group",
        sort=groups,
        scale=alt.Scale(domain=groups, range=_tableau(len(groups))),
        legend=alt.Legend(symbolType="stroke", symbolStrokeWidth=3, symbolOpacity=1),
    )
    n_layers = int(frame["layer"].max()) + 1
    x = alt.X(
        "layer:Q",
        title="Layer",
        scale=alt.Scale(domain=[0, n_layers - 1], nice=False),
        axis=alt.Axis(format="d", values=list(range(0, n_layers, max(1, n_layers // 8)))),
    )
    band = alt.Chart().mark_area(opacity=0.18).encode(x=x, y="ci_low:Q", y2="ci_high:Q", color=color)
    line = (
        alt.Chart()
        .mark_line(point=alt.OverlayMarkDef(size=18, filled=True))
        .encode(
            x=x,
            color=color,
            y=alt.Y("value:Q", title=[title, "(95% CI)"], axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
            tooltip=["row:N", "position_label:N", "layer:Q", "group:N", *_ci_tooltip(".2f")],
        )
    )
    chance = alt.Chart().mark_rule(color="#999999", strokeDash=[4, 3]).encode(y=alt.datum(0.5))
    chart = (
        alt.layer(band, chance, line, data=frame)
        .properties(width=width, height=height)
        .facet(
            row=alt.Row(
                "row:N", title=None, header=alt.Header(labelAngle=0, labelAlign="left", labelFontWeight="bold")
            ),
            column=alt.Column("position_label:N", title="Token position", sort=position_order),
        )
    )
    return finish(
        chart,
        "Difference-of-means probes per layer and token position",
        [
            f"{title} of each group's held-out items (k-fold), per layer of the residual stream;",
            "bands: 95% bootstrap intervals over items; dashed: 50%. An empty panel: the position is absent in "
            "that mode, "
            "or a group has too few items.",
        ],
    )


def probes(probes: pd.DataFrame, **settings):
    """Probe score per layer and position, thinking ON and OFF (docs/method.md#7-figures)."""
    return build("probes", {"probes": probes}, settings)[1]


# ----- 6. refusal-head bubble map ----------------------------------------------------------------------------
HEAD_COLUMNS = ("model", "checkpoint", "layer", "head", "share", "ci_low", "ci_high", "n_moved", "n_prompts", "rank")


def refusal_heads_data(
    refusal_heads: pd.DataFrame,
    *,
    checkpoints: str | Sequence[str] = "base_and_last",
    label_top: int = 9,
) -> pd.DataFrame:
    """One row per (model, checkpoint, layer, head) with the share of prompts showing the move."""
    figure = "refusal_heads"
    require(refusal_heads, HEAD_COLUMNS, figure, "refusal_heads")
    rows, _ = _with_checkpoints(refusal_heads, checkpoints, figure)
    rows["head_label"] = "L" + rows["layer"].astype(str) + "-H" + rows["head"].astype(str)
    # Tables written before the flag existed have no previous_token_head column: derive it.
    if "previous_token_head" not in rows and {"median_distance_on", "median_distance_off"} <= set(rows):
        rows["previous_token_head"] = (rows["median_distance_on"] == 1) & (rows["median_distance_off"] == 1)
    rows["previous_token_head"] = (
        rows.get("previous_token_head", pd.Series(False, index=rows.index)).fillna(False).astype(bool)
    )
    rows.loc[rows["previous_token_head"], "head_label"] += " \u2020"
    rows["top"] = (rows["rank"] <= label_top) & (rows["share"] > 0)
    rows["label_side"] = ""
    for _, panel in rows.groupby(["model", "checkpoint"], sort=False):
        rows.loc[panel.index, "label_side"] = _label_sides(panel)
    rows["panel"] = _model_panel(rows.assign(panel=rows["checkpoint_label"]), "panel")
    keep = [
        "model",
        "checkpoint",
        "checkpoint_label",
        "panel",
        "layer",
        "head",
        "head_label",
        "share",
        "ci_low",
        "ci_high",
        "n_moved",
        "n_prompts",
        "rank",
        "top",
        "label_side",
        "previous_token_head",
    ]
    keep += [c for c in ("on_mode", "off_mode", "on_regions", "off_regions") if c in rows]
    return rows[keep].reset_index(drop=True)


def _label_sides(panel: pd.DataFrame) -> pd.Series:
    """Where each top head's label goes in its panel: "right" of the bubble, "left" when the
    right is taken, or "" (no label; the tooltip still names it). A label spans about two head
    columns of its layer, so it needs those two free of bubbles and of other labels; left labels
    stay off the first two columns (they would run into the layer axis)."""
    shown = panel[panel["share"] > 0]
    taken = {(int(layer), int(head)) for layer, head in zip(shown["layer"], shown["head"])}
    sides = pd.Series("", index=panel.index, dtype=object)
    for index, row in panel[panel["top"]].sort_values("rank").iterrows():
        layer, head = int(row["layer"]), int(row["head"])
        for side, span in (("right", (head + 1, head + 2)), ("left", (head - 1, head - 2))):
            if side == "left" and head < 2:
                continue
            if not any((layer, h) in taken for h in span):
                sides[index] = side
                taken.update((layer, h) for h in span)
                break
    return sides


def draw_refusal_heads(frame: pd.DataFrame, *, width: int | None = None, height: int | None = None):
    n_heads, n_layers = int(frame["head"].max()) + 1, int(frame["layer"].max()) + 1
    width = width or max(160, 22 * n_heads)
    height = height or max(160, 15 * n_layers)
    panels = list(dict.fromkeys(frame.sort_values(["model", "checkpoint"], key=_ckpt_sort_key)["panel"]))
    x = alt.X(
        "head:Q",
        title="Head",
        scale=alt.Scale(domain=[-0.5, n_heads - 0.5], nice=False),
        axis=alt.Axis(values=list(range(n_heads)), grid=False, format="d"),
    )
    y = alt.Y(
        "layer:Q",
        title="Layer",
        scale=alt.Scale(domain=[-0.5, n_layers - 0.5], nice=False),
        axis=alt.Axis(values=list(range(0, n_layers, max(1, n_layers // 12))), format="d"),
    )
    tooltip = [
        alt.Tooltip("head_label:N", title="head"),
        alt.Tooltip("share:Q", format=".0%"),
        alt.Tooltip("ci_low:Q", title="95% CI low", format=".0%"),
        alt.Tooltip("ci_high:Q", title="95% CI high", format=".0%"),
        alt.Tooltip("n_moved:Q", title="prompts that moved"),
        alt.Tooltip("n_prompts:Q", title="prompts"),
        alt.Tooltip("rank:Q"),
        alt.Tooltip("previous_token_head:N", title="previous-token head"),
    ]
    bubbles = (
        alt.Chart()
        .mark_circle(stroke="#333333", strokeWidth=0.3)
        .encode(
            opacity=alt.condition(alt.datum.previous_token_head, alt.value(0.35), alt.value(1.0)),
            x=x,
            y=y,
            size=alt.Size(
                "share:Q",
                title="Share of prompts",
                scale=alt.Scale(domain=[0, 1], range=[0, 260]),
                legend=alt.Legend(format="%", values=[0.25, 0.5, 0.75, 1.0]),
            ),
            color=alt.Color(
                "share:Q",
                title="Share of prompts",
                scale=alt.Scale(scheme="reds", domain=[0, 1]),
                legend=alt.Legend(format="%"),
            ),
            tooltip=tooltip,
        )
        .transform_filter(alt.datum.share > 0)
    )
    # Labels sit right of their bubble, or left where a neighbouring head's bubble is (_label_sides).
    labels = [
        alt.Chart()
        .transform_filter(alt.datum.label_side == side)
        .mark_text(align=align, dx=dx, fontSize=10, color="#222222")
        .encode(x=x, y=y, text="head_label:N")
        for side, align, dx in (("right", "left", 9), ("left", "right", -9))
    ]
    # A panel where no head ever moved says so instead of staying blank.
    still = frame.groupby("panel")["share"].max().fillna(0) <= 0
    notes = pd.DataFrame(
        {
            "panel": still[still].index,
            "head": (n_heads - 1) / 2,
            "layer": (n_layers - 1) / 2,
            "share": 0.0,
            "top": False,
            "label_side": "",
            "note": "no head showed the move",
        }
    )
    frame = pd.concat([frame.assign(note=""), notes], ignore_index=True)
    note = (
        alt.Chart()
        .transform_filter(alt.datum.note != "")
        .mark_text(fontSize=12, color="#555555")
        .encode(x=x, y=y, text="note:N")
    )
    chart = (
        alt.layer(bubbles, *labels, note, data=frame)
        .properties(width=width, height=height)
        .facet(
            facet=alt.Facet("panel:N", title=None, sort=panels, header=alt.Header(labelFontWeight="bold")),
            columns=_panel_columns(len(panels), 4),
        )
    )
    on, off = _first(frame, "on_regions"), _first(frame, "off_regions")
    move = (
        f"lies on the {words(on)} with thinking ON and on the {words(off)} with thinking OFF"
        if on and off
        else "moves between thinking ON and OFF"
    )
    return finish(
        chart,
        "Refusal heads: where the position that predicts the first answer token looks",
        [
            f"Bubble size and colour: share of harmful prompts whose attention argmax {move}",
            "Labels: the top heads by share (L<layer>-H<head>), left out where neighbouring bubbles leave no room;",
            "\u2020 and pale: previous-token head (argmax 1 token back in both modes: it moves by construction),",
            "left out of the ablated heads by default",
        ],
    )


def _first(frame: pd.DataFrame, column: str):
    return frame[column].iloc[0] if column in frame and len(frame) else None


def refusal_heads(refusal_heads: pd.DataFrame, **settings):
    """Refusal-head bubble map, layer x head, per checkpoint (docs/method.md#7-figures)."""
    return build("refusal_heads", {"refusal_heads": refusal_heads}, settings)[1]


# ----- 7. head-patching heat maps -------------------------------------------------------------------------------
PATCHING_COLUMNS = (
    "model",
    "checkpoint",
    "pair",
    "method",
    "source_mode",
    "target_mode",
    "source_checkpoint",
    "target_checkpoint",
    "layer",
    "head",
    "effect",
    "ci_low",
    "ci_high",
)


def head_patching_data(
    patching: pd.DataFrame,
    *,
    checkpoints: str | Sequence[str] = "base_and_last",
    pairs: Sequence[str] | None = None,
    methods: Sequence[str] = ("exact", "attribution"),
) -> pd.DataFrame:
    """One row per (checkpoint, pair, method, layer, head) with the change of the refusal score."""
    figure = "head_patching"
    require(patching, PATCHING_COLUMNS, figure, "patching")
    rows = patching[patching["method"].isin(methods)]
    if pairs is not None:
        rows = rows[rows["pair"].isin(pairs)]
    nonempty(rows, figure, f"no scan with methods {', '.join(methods)}")
    rows, _ = _with_checkpoints(rows, checkpoints, figure)
    rows["head_label"] = "L" + rows["layer"].astype(str) + "-H" + rows["head"].astype(str)
    rows["pair_label"] = [
        _pair_label(*values)
        for values in zip(
            rows["source_checkpoint"], rows["target_checkpoint"], rows["source_mode"], rows["target_mode"]
        )
    ]
    rows["row"] = _model_panel(rows.assign(row=rows["pair_label"]), "row")
    rows["column"] = rows["method"] + ", " + rows["checkpoint"].map(_two_line_checkpoint)
    return rows.reset_index(drop=True)


def _two_line_checkpoint(ckpt: str) -> str:
    """``gsm8k_style, seed 0 step 40`` (split into lines in narrow headers)."""
    run, seed, step = parse_checkpoint(ckpt)
    return "base model" if run is None else f"{run}, seed {seed} step {step}"


def _pair_label(source_ckpt: str, target_ckpt: str, source_mode: str, target_mode: str) -> str:
    """The same words for a pair on every checkpoint: ``thinking OFF into thinking ON``,
    ``base model into checkpoint, thinking OFF``."""
    modes = f"{_mode_words(source_mode)} into {_mode_words(target_mode)}"
    if source_ckpt == target_ckpt:
        return modes
    source_side = "base model" if source_ckpt == "base" else "checkpoint"
    target_side = "base model" if target_ckpt == "base" else "checkpoint"
    sides = f"{source_side} into {target_side}"
    return f"{sides}, {_mode_words(source_mode)}" if source_mode == target_mode else f"{sides} ({modes})"


def _mode_words(mode: str) -> str:
    return {"no_think": "thinking OFF", "think": "thinking ON"}.get(mode, words(mode))


def draw_head_patching(
    frame: pd.DataFrame,
    *,
    width: int | None = None,
    height: int | None = None,
    methods: Sequence[str] = ("exact", "attribution"),
):
    n_heads, n_layers = int(frame["head"].max()) + 1, int(frame["layer"].max()) + 1
    width = width or max(100, 14 * n_heads)
    height = height or max(150, 9 * n_layers)
    ckpts = checkpoint_order(frame["checkpoint"].unique())
    columns = [
        f"{method}, {_two_line_checkpoint(c)}"
        for c in ckpts
        for method in methods
        if ((frame["method"] == method) & (frame["checkpoint"] == c)).any()
    ]
    rows = list(dict.fromkeys(frame["row"]))
    limit = float(np.nanmax(np.abs(frame["effect"]))) if frame["effect"].notna().any() else 1.0
    limit = limit or 1.0
    # Vega mislabels the rows of a facet grid with empty cells (a pair that does not run on the
    # base model): give every (row, column) cell one empty placeholder.
    present = set(zip(frame["row"], frame["column"]))
    holes = [{"row": r, "column": c, "layer": 0, "head": 0} for r in rows for c in columns if (r, c) not in present]
    frame = pd.concat([frame, pd.DataFrame(holes)], ignore_index=True) if holes else frame
    chart = (
        alt.Chart(frame)
        .mark_rect()
        .encode(
            x=alt.X("head:O", title="Head", axis=alt.Axis(labelAngle=0)),
            y=alt.Y(
                "layer:O",
                title="Layer",
                sort="descending",
                axis=alt.Axis(values=list(range(0, n_layers, max(1, n_layers // 12)))),
            ),
            color=alt.Color(
                "effect:Q",
                title=["Change in refusal", "score (log-odds)"],
                scale=alt.Scale(scheme="redblue", domain=[-limit, limit], domainMid=0),
            ),
            tooltip=[
                alt.Tooltip("head_label:N", title="head"),
                "method:N",
                "pair_label:N",
                alt.Tooltip("effect:Q", format="+.3~g"),
                alt.Tooltip("ci_low:Q", title="95% CI low", format="+.3~g"),
                alt.Tooltip("ci_high:Q", title="95% CI high", format="+.3~g"),
            ],
        )
        .properties(width=width, height=height)
        .facet(
            row=alt.Row(
                "row:N",
                title=None,
                sort=rows,
                header=alt.Header(
                    labelFontWeight="bold", labelAngle=0, labelAlign="left", labelExpr="split(datum.label, ', ')"
                ),
            ),
            column=alt.Column(
                "column:N",
                title=None,
                sort=columns,
                header=alt.Header(labelFontWeight="bold", labelExpr="split(datum.label, ', ')"),
            ),
        )
    )
    return finish(
        chart,
        "Head patching: change in the refusal score when one head's output comes from the source run",
        [
            "Each cell: change of the first-token refusal score when one head's output is patched from the source "
            "into the target run (rows); blue raises refusal, red lowers it.",
            "exact: one patched forward pass per head; attribution: gradient x activation difference (a first-order "
            "estimate). An empty panel: the pair does not run there (the base model into itself).",
        ],
    )


def head_patching(patching: pd.DataFrame, **settings):
    """Head-patching heat maps, layer x head, exact and attribution side by side."""
    return build("head_patching", {"patching": patching}, settings)[1]


# ----- 8. zeroing refusal heads vs random heads -------------------------------------------------------------------
EFFECT_COLUMNS = ("model", "condition", "metric", "judge", "statistic", "value", "ci_low", "ci_high")


def head_ablation_data(
    ablation: pd.DataFrame,
    *,
    judge: str = "phrases",
    metrics: Sequence[str] = ("misalignment_rate", "mean_refusal_score"),
    checkpoints: str | Sequence[str] = "base_and_last",
) -> pd.DataFrame:
    """Paired change from no intervention: refusal heads, the random heads' average and each draw
    (``is_draw``; plotted as ticks over the average)."""
    figure = "head_ablation"
    if ablation.empty:
        # The ablation step writes empty tables when no head ever shows the refusal-head move.
        return pd.DataFrame(
            columns=[
                "model",
                "checkpoint",
                "checkpoint_label",
                "condition",
                "metric",
                "mode",
                "value",
                "ci_low",
                "ci_high",
                "panel",
                "is_draw",
                "draw_label",
                "condition_label",
            ]
        )
    require(ablation, (*EFFECT_COLUMNS, "checkpoint", "mode"), figure, "ablation")
    rows = ablation[(ablation["statistic"] == "change_from_none") & ablation["metric"].isin(metrics)]
    rows = rows[rows["judge"] == rows["metric"].map(lambda m: _judge_of(m, judge))]
    nonempty(rows, figure, "no paired changes (no head showed the refusal-head move?)")
    rows, _ = _with_checkpoints(rows, checkpoints, figure)
    rows["is_draw"] = rows["condition"].str.startswith("random_") & (rows["condition"] != "random_heads")
    rows["draw_label"] = rows["condition"].map(_head_condition)
    rows["condition_label"] = np.where(rows["is_draw"], _head_condition("random_heads"), rows["draw_label"])
    rows["panel"] = rows["metric"].map(METRIC_TITLES) + ", " + rows["mode"].map(_mode_words)
    rows["panel"] = _model_panel(rows, "panel")
    return rows.sort_values(["model", "metric", "mode"], key=_metric_sort_key, kind="stable").reset_index(drop=True)


def _head_condition(condition: str) -> str:
    if condition == "refusal_heads":
        return "refusal heads"
    if condition == "random_heads":
        return "random heads (mean of draws)"
    if condition.startswith("random_"):
        return f"random heads, draw {int(condition.removeprefix('random_')) + 1}"
    return words(condition)


def draw_head_ablation(frame: pd.DataFrame, *, width: int | None = None, height: int = 200):
    if frame.empty:
        note = alt.Chart(
            pd.DataFrame(
                {
                    "text": [
                        "No head showed the refusal-head move on these checkpoints,",
                        "so no head was ablated (see refusal_heads).",
                    ],
                    "line": [0, 1],
                }
            )
        )
        chart = (
            note.mark_text(align="left", fontSize=13)
            .encode(x=alt.value(8), y=alt.Y("line:O", axis=None), text="text:N")
            .properties(width=520, height=60)
        )
        return finish(chart, "Zeroing the refusal heads vs the same number of random heads in the same layers")
    ckpt_order = [checkpoint_label(c) for c in checkpoint_order(frame["checkpoint"].unique())]
    width = width or max(160, 70 * len(ckpt_order))
    conditions = [_head_condition("refusal_heads"), _head_condition("random_heads")]
    x = alt.X("checkpoint_label:N", sort=ckpt_order, title=None, axis=alt.Axis(labelAngle=-30))
    base = alt.Chart().encode(x=x, xOffset=alt.XOffset("condition_label:N", sort=conditions))
    color = alt.Color(
        "condition_label:N",
        title="Heads zeroed",
        sort=conditions,
        scale=alt.Scale(domain=conditions, range=["#d62728", "#8c8c8c"]),
        legend=alt.Legend(symbolType="square", symbolOpacity=1),
    )
    charts = []
    for panel, part in frame.groupby("panel", sort=False):
        metric = part["metric"].iloc[0]
        value_format = "+.1%" if metric in RATE_METRICS else "+.3f"
        tooltip = [
            "checkpoint_label:N",
            alt.Tooltip("draw_label:N", title="heads zeroed"),
            *_ci_tooltip(value_format),
            alt.Tooltip("n:Q", title="prompts"),
        ]
        bars = (
            base.transform_filter(~alt.datum.is_draw)
            .mark_bar()
            .encode(
                y=alt.Y(
                    "value:Q",
                    title="Change from no intervention (95% CI)",
                    axis=change_axis(metric),
                    scale=change_scale(part, metric),
                ),
                color=color,
                tooltip=tooltip,
            )
        )
        values = (
            base.transform_filter(~alt.datum.is_draw)
            .mark_tick(thickness=2, size=14, opacity=1)
            .encode(y="value:Q", color=color, tooltip=tooltip)
        )
        ci = (
            base.transform_filter(~alt.datum.is_draw)
            .mark_rule(strokeWidth=1.5)
            .encode(y="ci_low:Q", y2="ci_high:Q", color=BLACK)
        )
        draws = (
            base.transform_filter(alt.datum.is_draw)
            .mark_tick(color="#333333", thickness=1.5, size=12)
            .encode(y="value:Q", tooltip=tooltip)
        )
        zero = alt.Chart().mark_rule(color="#666666").encode(y=alt.datum(0))
        charts.append(
            alt.layer(bars, values, ci, draws, zero, data=part).properties(
                width=width, height=height, title=panel_title(panel)
            )
        )
    return finish(
        grid(charts, 2),
        "Zeroing the refusal heads vs the same number of random heads in the same layers",
        [
            "Paired change from no intervention over the same prompts. Black lines: 95% bootstrap intervals;",
            "ticks: the individual random draws",
        ],
    )


def head_ablation(ablation: pd.DataFrame, **settings):
    """Effect of zeroing the top refusal heads vs random heads in the same layers (docs/method.md#5-refusal-heads)."""
    return build("head_ablation", {"ablation": ablation}, settings)[1]


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


def neuron_zeroing(zeroing: pd.DataFrame, **settings):
    """Effect of zeroing A_safe vs random neurons on misalignment and math accuracy
    (docs/method.md#6-safety-neurons-and-ras)."""
    return build("neuron_zeroing", {"zeroing": zeroing}, settings)[1]


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


def _tableau(n: int) -> list[str]:
    colors = [
        "#4c78a8",
        "#f58518",
        "#54a24b",
        "#e45756",
        "#72b7b2",
        "#eeca3b",
        "#b279a2",
        "#ff9da6",
        "#9d755d",
        "#bab0ac",
    ]
    return [colors[i % len(colors)] for i in range(n)]


def ras(ras: pd.DataFrame, correlations: pd.DataFrame, **settings):
    """RAS vs misalignment scatter per checkpoint, safety vs random vs all neurons vs KL (docs/method.md#7-figures)."""
    return build("ras", {"ras": ras, "correlations": correlations}, settings)[1]


# ----- the registry, building and saving -----------------------------------------------------------------------
@dataclass(frozen=True)
class FigureSpec:
    name: str
    tables: tuple[str, ...]
    data: Callable[..., pd.DataFrame]
    draw: Callable[..., Any]


FIGURES: dict[str, FigureSpec] = {
    spec.name: spec
    for spec in (
        FigureSpec("thinking", ("summary",), thinking_data, draw_thinking),
        FigureSpec("patterns", ("summary", "contrasts"), patterns_data, draw_patterns),
        FigureSpec("training_dynamics", ("summary", "loss"), training_dynamics_data, draw_training_dynamics),
        FigureSpec("training_sets", ("evaluations",), training_sets_data, draw_training_sets),
        FigureSpec("probes", ("probes",), probes_data, draw_probes),
        FigureSpec("refusal_heads", ("refusal_heads",), refusal_heads_data, draw_refusal_heads),
        FigureSpec("head_patching", ("patching",), head_patching_data, draw_head_patching),
        FigureSpec("head_ablation", ("ablation",), head_ablation_data, draw_head_ablation),
        FigureSpec("neuron_zeroing", ("zeroing",), neuron_zeroing_data, draw_neuron_zeroing),
        FigureSpec("ras", ("ras", "correlations"), ras_data, draw_ras),
    )
}
# Settings of a figure's config block that are not arguments of its functions.
OUTPUT_SETTINGS = {"enabled", "format", "scale"}
# Keys of the figures block shared by every figure that takes them (e.g. the judge).
COMMON_SETTINGS = ("judge", "format", "scale")


def _keywords(func: Callable) -> set[str]:
    return {name for name, p in inspect.signature(func).parameters.items() if p.kind is p.KEYWORD_ONLY}


def build(name: str, tables: Mapping[str, pd.DataFrame], settings: Mapping[str, Any] | None = None):
    """(plotted frame, chart) of figure ``name`` from its tables and its config block."""
    if name not in FIGURES:
        raise ConfigError(f"no figure '{name}'; figures: {', '.join(FIGURES)}")
    spec = FIGURES[name]
    missing = [table for table in spec.tables if table not in tables]
    if missing:
        raise FigureError(f"figure '{name}' needs the table(s) {', '.join(missing)}")
    settings = {k: v for k, v in dict(settings or {}).items() if k not in OUTPUT_SETTINGS}
    data_keys, draw_keys = _keywords(spec.data), _keywords(spec.draw)
    unknown = sorted(set(settings) - data_keys - draw_keys)
    if unknown:
        raise ConfigError(f"figure '{name}': unknown setting(s) {', '.join(unknown)} (config block figures.{name})")
    frame = spec.data(
        *(tables[table] for table in spec.tables), **{k: v for k, v in settings.items() if k in data_keys}
    )
    chart = spec.draw(frame, **{k: v for k, v in settings.items() if k in draw_keys})
    return frame, chart


def figure_settings(config: Mapping, name: str) -> dict:
    """What the job of figure ``name`` gets from the config: its own block, plus the shared keys of
    the figures block that it uses, so editing one figure's block reruns that figure only."""
    if name not in FIGURES:
        raise ConfigError(f"no figure '{name}'; figures: {', '.join(FIGURES)}")
    block = config.get("figures", {})
    spec = FIGURES[name]
    accepted = _keywords(spec.data) | _keywords(spec.draw) | OUTPUT_SETTINGS
    common = {key: block[key] for key in COMMON_SETTINGS if key in block and key in accepted}
    if "outcomes" in accepted:  # rates from per-prompt rows count outcomes as the evaluation does
        common["outcomes"] = dict(config.get("evaluation", {}).get("outcomes") or {})
    return {**common, **dict(block.get(name, {}))}


def vega_bundle() -> str:
    """The vega-embed JavaScript bundle (vega, vega-lite, vega-embed) matching altair's Vega-Lite."""
    import vl_convert as vlc
    from altair.utils._importers import vl_version_for_vl_convert

    return vlc.javascript_bundle(vl_version=vl_version_for_vl_convert())


def html_page(chart, bundle: str | None = None) -> str:
    """A self-contained page: the chart's spec with the vega-embed bundle inlined (works offline)."""
    from altair.utils.html import INLINE_HTML_TEMPLATE

    return INLINE_HTML_TEMPLATE.render(
        spec=json.dumps(chart.to_dict()),
        embed_options=json.dumps(
            {"mode": "vega-lite", "actions": {"export": True, "source": False, "compiled": False, "editor": False}}
        ),
        output_div="vis",
        vegalite_version=alt.SCHEMA_VERSION.lstrip("v"),
        vegaembed_script=bundle if bundle is not None else vega_bundle(),
    )


def save(
    chart,
    *,
    html: str | Path | None = None,
    static: str | Path | None = None,
    bundle: str | None = None,
    scale: float = 2.0,
) -> None:
    """Write the interactive page and the static image (PNG or SVG, from the suffix), each atomically."""
    if html is not None:
        with atomic_path(html) as tmp:
            Path(tmp).write_text(html_page(chart, bundle), encoding="utf-8")
    if static is not None:
        import vl_convert as vlc

        spec = chart.to_dict()
        suffix = Path(static).suffix.lower()
        with atomic_path(static) as tmp:
            if suffix == ".png":
                Path(tmp).write_bytes(vlc.vegalite_to_png(spec, scale=scale))
            elif suffix == ".svg":
                Path(tmp).write_text(vlc.vegalite_to_svg(spec), encoding="utf-8")
            else:
                raise ConfigError(f"static figure format '{suffix}' is not png or svg")


def read_tables(paths: Iterable[str | Path]) -> pd.DataFrame:
    """Concatenate parquet tables (a figure over several checkpoints or models)."""
    frames = [read_table(path) for path in paths]
    if not frames:
        raise FigureError("no input tables")
    frames = [frame for frame in frames if len(frame.columns)]
    return pd.concat(frames, ignore_index=True, sort=False) if frames else pd.DataFrame()
