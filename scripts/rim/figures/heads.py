"""Figures of the attention-head analyses: probes, refusal heads, head patching, head ablation
(docs/method.md#7-figures)."""

from __future__ import annotations

from typing import Sequence

import altair as alt
import numpy as np
import pandas as pd

from rim.figures.common import (
    _ckpt_sort_key,
    _metric_sort_key,
    _model_panel,
    BLACK,
    METRIC_TITLES,
    POSITION_TITLES,
    RATE_METRICS,
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
    parse_checkpoint,
    require,
    words,
)


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
