# Reproduction of "When Thinking Backfires: Mechanistic Insights into Reasoning-induced
# Misalignment" (Yan et al., ICLR 2026). This file only wires the stages together; rules live in
# workflow/rules/, the science code in scripts/rim/, settings in config/config.yaml.
from snakemake.utils import min_version

min_version("9.0")


# The embedded default, unless a config is given with --configfile: a given config replaces it
# whole (merged into it, the default's models, datasets and runs would join every study).
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/data.smk"
include: "workflow/rules/training.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/neurons.smk"
include: "workflow/rules/heads.smk"
include: "workflow/rules/figures.smk"


localrules:
    all,
    prepare_dataset,
    summarize_evaluation,
    safety_neurons,
    ras,
    ras_table,
    vega_bundle,
    figure_thinking,
    figure_patterns,
    figure_training_dynamics,
    figure_training_sets,
    figure_neuron_zeroing,
    figure_ras,
    figure_refusal_heads,
    figure_head_ablation,
    figure_head_patching,
    figure_probes,
    readme_figure,
    readme_figures,


# Judging is string work (phrases, math answers, a rubric endpoint) unless the local classifier
# judge is on: then each judge job loads it on a cluster GPU.
if not judging_loads_models():

    localrules:
        judge,


rule all:
    default_target: True
    input:
        all_model_sources(),
        all_datasets(),
        all_aligned_models(),
        all_finetune_runs(),
        all_evaluation_summaries(),
        all_ras_targets(),
        all_zeroing_targets(),
        all_heads_targets(),
        all_figure_targets(),
