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

# The figures' modules by stage; everything public is importable from rim.figures.
from rim.figures.common import (  # noqa: F401
    BLACK,
    FONT,
    FigureError,
    METRIC_JUDGES,
    METRIC_TITLES,
    OUTCOME_METRICS,
    POSITION_TITLES,
    RAS_TITLES,
    RATE_METRICS,
    SEED_PALETTE,
    THINKING_COLORS,
    THINKING_LABELS,
    VARIANT_COLORS,
    change_axis,
    change_scale,
    checkpoint_label,
    checkpoint_order,
    choose_checkpoints,
    finish,
    grid,
    nonempty,
    panel_title,
    parse_checkpoint,
    require,
    words,
)
from rim.figures.evaluation import (  # noqa: F401
    CONTRAST_COLUMNS,
    EVALUATION_COLUMNS,
    LOSS_COLUMNS,
    SUMMARY_COLUMNS,
    draw_patterns,
    draw_thinking,
    draw_training_dynamics,
    draw_training_sets,
    patterns_data,
    thinking_data,
    training_dynamics_data,
    training_sets_data,
)
from rim.figures.heads import (  # noqa: F401
    EFFECT_COLUMNS,
    HEAD_COLUMNS,
    PATCHING_COLUMNS,
    PROBE_COLUMNS,
    draw_head_ablation,
    draw_head_patching,
    draw_probes,
    draw_refusal_heads,
    head_ablation_data,
    head_patching_data,
    probes_data,
    refusal_heads_data,
)
from rim.figures.neurons import (  # noqa: F401
    CORRELATION_COLUMNS,
    CORRELATION_VARIANTS,
    NEURON_FAMILIES,
    NEURON_FAMILY_COLORS,
    RAS_COLUMNS,
    RAS_INPUT_TITLES,
    correlation_title,
    draw_neuron_zeroing,
    draw_ras,
    neuron_zeroing_data,
    ras_data,
)
from rim.figures.registry import (  # noqa: F401
    COMMON_SETTINGS,
    FIGURES,
    FigureSpec,
    OUTPUT_SETTINGS,
    build,
    figure_settings,
    head_ablation,
    head_patching,
    html_page,
    neuron_zeroing,
    patterns,
    probes,
    ras,
    read_tables,
    refusal_heads,
    save,
    thinking,
    training_dynamics,
    training_sets,
    vega_bundle,
)
