"""Shared pieces of the figures: words for the tables' codes, checkpoint labels, chart parts."""

from __future__ import annotations

from typing import Iterable, Sequence

import altair as alt
import numpy as np
import pandas as pd

from rim.errors import ConfigError, DataError

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
    """Base first, then by run, seed and step (a bad id in a table: DataError)."""
    from rim.checkpoints import checkpoint_order as order

    try:
        return order(ckpts)
    except ConfigError as error:
        raise DataError(str(error)) from None


def choose_checkpoints(ckpts: Iterable[str], which: str | Sequence[str]) -> list[str]:
    """rim.checkpoints.choose_checkpoints over the ids of a table (a bad id: DataError)."""
    from rim.checkpoints import choose_checkpoints as choose

    ckpts = checkpoint_order(ckpts)  # a malformed id in the table: a data error naming it
    return choose(ckpts, which)


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


def _ckpt_sort_key(series: pd.Series) -> pd.Series:
    if series.name != "checkpoint":
        return series
    order = {ckpt: index for index, ckpt in enumerate(checkpoint_order(series.unique()))}
    return series.map(order)
