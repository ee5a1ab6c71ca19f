"""The figure registry (name -> tables, data and drawing steps), building and saving (docs/method.md#7-figures)."""

from __future__ import annotations

import inspect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping

import altair as alt
import pandas as pd

from rim.errors import ConfigError
from rim.planning import FIGURE_NAMES
from rim.provenance import atomic_path, read_table
from rim.figures.common import (
    FigureError,
)
from rim.figures.evaluation import (
    draw_patterns,
    draw_thinking,
    draw_training_dynamics,
    draw_training_sets,
    patterns_data,
    thinking_data,
    training_dynamics_data,
    training_sets_data,
)
from rim.figures.heads import (
    draw_head_ablation,
    draw_head_patching,
    draw_probes,
    draw_refusal_heads,
    head_ablation_data,
    head_patching_data,
    probes_data,
    refusal_heads_data,
)
from rim.figures.neurons import (
    draw_neuron_zeroing,
    draw_ras,
    neuron_zeroing_data,
    ras_data,
)


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
if tuple(FIGURES) != FIGURE_NAMES:  # the Snakefile plans figure rules from rim.planning's list
    raise RuntimeError(f"rim.figures.FIGURES {list(FIGURES)} and rim.planning.FIGURE_NAMES {list(FIGURE_NAMES)} differ")
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


# One public function per figure: its tables in, the chart out.
def thinking(summary: pd.DataFrame, **settings):
    """Think ON/OFF misalignment and math accuracy per model and checkpoint, with 95% CIs (docs/method.md#7-figures)."""
    return build("thinking", {"summary": summary}, settings)[1]


def patterns(summary: pd.DataFrame, contrasts: pd.DataFrame, **settings):
    """Pattern injection: misalignment with the control vs target self-statement (docs/method.md#7-figures)."""
    return build("patterns", {"summary": summary, "contrasts": contrasts}, settings)[1]


def training_dynamics(summary: pd.DataFrame, loss: pd.DataFrame, **settings):
    """Misalignment (and math accuracy) over fine-tuning steps per seed, with the training loss."""
    return build("training_dynamics", {"summary": summary, "loss": loss}, settings)[1]


def training_sets(evaluations: pd.DataFrame, **settings):
    """Change in misalignment (and math accuracy) from the base model per fine-tuning set (docs/method.md#7-figures)."""
    return build("training_sets", {"evaluations": evaluations}, settings)[1]


def probes(probes: pd.DataFrame, **settings):
    """Probe score per layer and position, thinking ON and OFF (docs/method.md#7-figures)."""
    return build("probes", {"probes": probes}, settings)[1]


def refusal_heads(refusal_heads: pd.DataFrame, **settings):
    """Refusal-head bubble map, layer x head, per checkpoint (docs/method.md#7-figures)."""
    return build("refusal_heads", {"refusal_heads": refusal_heads}, settings)[1]


def head_patching(patching: pd.DataFrame, **settings):
    """Head-patching heat maps, layer x head, exact and attribution side by side."""
    return build("head_patching", {"patching": patching}, settings)[1]


def head_ablation(ablation: pd.DataFrame, **settings):
    """Effect of zeroing the top refusal heads vs random heads in the same layers (docs/method.md#5-refusal-heads)."""
    return build("head_ablation", {"ablation": ablation}, settings)[1]


def neuron_zeroing(zeroing: pd.DataFrame, **settings):
    """Effect of zeroing A_safe vs random neurons on misalignment and math accuracy
    (docs/method.md#6-safety-neurons-and-ras)."""
    return build("neuron_zeroing", {"zeroing": zeroing}, settings)[1]


def ras(ras: pd.DataFrame, correlations: pd.DataFrame, **settings):
    """RAS vs misalignment scatter per checkpoint, safety vs random vs all neurons vs KL (docs/method.md#7-figures)."""
    return build("ras", {"ras": ras, "correlations": correlations}, settings)[1]
