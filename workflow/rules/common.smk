# Helpers for all stages: config validation, wildcard constraints, input functions.
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

# The science package lives in scripts/rim, beside the step scripts.
sys.path.insert(0, str(Path(workflow.basedir) / "scripts"))

from rim import planning  # noqa: E402
from rim.checkpoints import choose_checkpoints  # noqa: E402
from rim.config import validate_config  # noqa: E402
from rim.errors import ConfigError  # noqa: E402

try:
    validate_config(
        config, Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"
    )
except ConfigError as error:
    raise WorkflowError(str(error)) from None


wildcard_constraints:
    model="|".join(config["models"]),
    dataset="|".join(config["datasets"]),
    ckpt=r"base|[A-Za-z0-9_-]+/seed\d+/step\d+",


# ----- models ----------------------------------------------------------------------------------
# Settings of a model entry that the later stages own (alignment, fine-tuning) are not part of
# the model's preparation, so editing them does not re-prepare the model; nor is where it runs
# (gpus: a job resource, never a reason to recompute).
MODEL_STAGE_KEYS = {"alignment", "finetuning", "gpus"}


def model_gpus(wildcards):
    """GPUs a model job asks for (resource `gpu`; the SLURM executor passes it to sbatch)."""
    return int(config["models"][wildcards.model].get("gpus", 1))


def model_settings(wildcards):
    """The model's own entry (source, family, dtype, prompt settings), for prepare_model."""
    entry = config["models"][wildcards.model]
    return {key: value for key, value in entry.items() if key not in MODEL_STAGE_KEYS}


source_reference = planning.source_reference


# ----- datasets --------------------------------------------------------------------------------
dataset_path = planning.dataset_table


def dataset_inputs(wildcards):
    """A derived set (harmful_mi) reads the prepared table of the set it derives from; a
    held-out set reads the tables it must be disjoint from."""
    entry = config["datasets"][wildcards.dataset]
    inputs = {}
    if entry.get("derive_from"):
        inputs["parent"] = dataset_path(entry["derive_from"])
    if entry.get("disjoint_from"):
        inputs["disjoint"] = [dataset_path(other) for other in entry["disjoint_from"]]
    return inputs


def all_datasets():
    return [dataset_path(name) for name in config["datasets"]]


def all_model_sources():
    return [source_reference(model) for model in config["models"]]


# ----- base models and checkpoints ---------------------------------------------------------------
# A checkpoint id ({ckpt}) is "base" or "<run>/seed<seed>/step<step>"; step 0 of a run is the base
# model itself, so it maps to "base" and is evaluated once for all runs and seeds.
def alignment_enabled(model):
    return planning.alignment_enabled(config, model)


def base_reference(model):
    """The aligned base model every later step studies (the source when alignment is off)."""
    return planning.base_reference(config, model)


def training_runs():
    return planning.training_runs(config)


run_manifest = planning.run_manifest


def checkpoint_ids(model, runs=None):
    """Every checkpoint of the given runs (default: all), base first, step 0 mapped to base."""
    return planning.checkpoint_ids(config, model, runs)


def checkpoint_reference(wildcards):
    """Input function: the reference file that loads checkpoint {ckpt} of {model}."""
    return planning.checkpoint_reference(config, wildcards.model, wildcards.ckpt)


def wildcard_ckpt(wildcards):
    """{ckpt}, or base in the rules written for the base model alone."""
    return getattr(wildcards, "ckpt", "base")


def checkpoint_step(wildcards):
    """Params function: the step to pick from a run manifest (None for the base model)."""
    return planning.checkpoint_step(wildcard_ckpt(wildcards))


# ----- alignment and fine-tuning ------------------------------------------------------------------
# The trainer's resumable state lives outside the declared outputs (Snakemake deletes those before
# a job runs), under results/.training_state/, and is removed when the job completes.
from rim.training.settings import check_training_config  # noqa: E402

try:
    check_training_config(config)
except ConfigError as error:
    raise WorkflowError(str(error)) from None


def run_pattern():
    """Wildcard constraint of {run}: the configured training runs."""
    return "|".join(training_runs()) or "no-training-runs"


def training_state_dir(*parts):
    return str(Path("results", ".training_state", *parts))


def alignment_inputs(wildcards):
    """Input function of align: the source model, the prompt sets and the refusal sentences."""
    from rim.data.sources import refusals_path, workdir_relative

    block = config["models"][wildcards.model]["alignment"]
    if not block["enabled"]:
        raise WorkflowError(
            f"model '{wildcards.model}' is not aligned by the workflow "
            f"(models.{wildcards.model}.alignment.enabled is false)"
        )
    return {
        "source": source_reference(wildcards.model),
        "harmful": dataset_path(block["harmful"]),
        "harmless": dataset_path(block["harmless"]),
        "refusals": workdir_relative(refusals_path(block["refusals"])),
    }


def finetune_dataset(wildcards):
    """Input function of finetune: the prepared training set of run {run}."""
    return dataset_path(training_runs()[wildcards.run]["dataset"])


def all_aligned_models():
    return [
        base_reference(model) for model in config["models"] if alignment_enabled(model)
    ]


def all_finetune_runs(runs=None):
    """Run manifests of every model, run (default: all) and seed."""
    return planning.finetune_manifests(config, runs)


# ----- evaluation --------------------------------------------------------------------------------
# One job per (model, checkpoint, prompt set, prompt mode) (docs/method.md#1-the-phenomenon,
# #3-judging). The groups under evaluation.groups say which (prompt set, mode) pairs run on which
# checkpoints: "ras" is what results/ras.parquet needs, every group together is what the default
# target runs.
import re  # noqa: E402

from rim.evaluation.settings import applicable_judges  # noqa: E402


def evaluation_block():
    return config.get("evaluation", {})


evaluation_table = planning.evaluation_table


def name_pattern(names):
    """A wildcard constraint matching exactly the given config names."""
    return (
        "|".join(re.escape(name) for name in sorted(names, key=len, reverse=True))
        or "(?!)"
    )


def promptset_pattern():
    return name_pattern(evaluation_block().get("prompt_sets", {}))


def mode_pattern():
    return name_pattern(config.get("prompt_modes", {}))


def evaluation_targets(model, ckpts, purpose="all"):
    """Per-prompt tables of ``model`` at checkpoints ``ckpts``: of every group (all) or one."""
    try:
        return planning.evaluation_targets(config, model, ckpts, purpose)
    except ConfigError as error:
        raise WorkflowError(str(error)) from None


def all_evaluation_tables():
    return planning.all_evaluation_tables(config)


def all_evaluation_summaries():
    return ["results/eval/summary.parquet", "results/eval/contrasts.parquet"]


def evaluation_dataset(wildcards):
    """Input function: the prepared table of the prompt set's dataset."""
    entry = evaluation_block()["prompt_sets"][wildcards.promptset]
    return dataset_path(entry["dataset"])


def evaluation_prompt_set(wildcards):
    """Params function: the prompt set's config entry, with its name."""
    return {
        "name": wildcards.promptset,
        **evaluation_block()["prompt_sets"][wildcards.promptset],
    }


def generation_params(wildcards):
    """Params function of generate: the prompt set's and mode's entries, the generation block
    and what the judges need of the responses (their length, the refusal score)."""
    return planning.generation_params(config, wildcards.promptset, wildcards.mode)


def judge_gpus(wildcards):
    """A judge job asks for a GPU only to run the local classifier judge on it."""
    kind = evaluation_block()["prompt_sets"][wildcards.promptset]["kind"]
    judges = applicable_judges(evaluation_block().get("judges", {}), kind)
    return 1 if "classifier" in judges else 0


def judge_memory(wildcards):
    """Host memory of a judge job (MB): room to load the classifier's weights where it runs."""
    return 32000 if judge_gpus(wildcards) else 2000


def judging_loads_models():
    """Whether a judge job may load a model (the local classifier judge): then it is a cluster
    job with a GPU; otherwise judging is string work that runs where Snakemake runs."""
    return bool(
        evaluation_block().get("judges", {}).get("classifier", {}).get("enabled")
    )


def evaluation_judges(wildcards):
    """Params function: the enabled judges that apply to the prompt set's kind only, so that
    editing a judge reruns only the evaluations it judges."""
    kind = evaluation_block()["prompt_sets"][wildcards.promptset]["kind"]
    return applicable_judges(evaluation_block().get("judges", {}), kind)


# ----- activations, safety neurons, RAS ----------------------------------------------------------
# One dump per (model, checkpoint) of the runs that feed RAS
# (docs/method.md#6-safety-neurons-and-ras); which input sets it holds follows from the neurons and
# ras blocks (rim.planning.dump_plan).
from rim.neurons import zeroing_params as neurons_zeroing_params  # noqa: E402


def ras_runs():
    """Training runs whose checkpoints get RAS: ras.runs, else the runs marked for RAS."""
    return planning.ras_runs(config)


def ras_checkpoints(model):
    """base, then every checkpoint of every seed of the RAS runs."""
    return planning.ras_checkpoints(config, model)


activation_dump = planning.activation_dump


def checkpoint_job_inputs(wildcards):
    """Input function of a checkpoint job: the checkpoint's reference, the dataset tables it
    generates from, the base model's responses (fixed-token inputs) and, for a fine-tuned
    checkpoint, the base model's dump (the KL baseline's reference distributions)."""
    return planning.dump_inputs(config, wildcards.model, wildcard_ckpt(wildcards))


def checkpoint_job_outputs(ckpt):
    """Output patterns of a checkpoint job: its responses tables and its dump (which tables
    depends only on whether the checkpoint is base: rim.planning.checkpoint_pairs)."""
    return planning.checkpoint_outputs(config, "{model}", ckpt)


def checkpoint_job_param(key):
    """Params function for one entry of what a checkpoint job reads (generation settings per
    table, their dataset tables, the dump's input sets)."""

    def value(wildcards):
        return planning.checkpoint_params(
            config, wildcards.model, wildcard_ckpt(wildcards)
        )[key]

    return value


def ras_checkpoint_pattern():
    """Wildcard constraint of the fine-tuned checkpoints that get a dump (the RAS runs)."""
    return rf"(?:{name_pattern(ras_runs())})/seed\d+/step\d+"


def neuron_selection_params(wildcards):
    """Params function: the neurons block without the zeroing test (which does not change A_safe)."""
    return {key: value for key, value in config["neurons"].items() if key != "zeroing"}


def ras_params(wildcards):
    """Params function: the ras block without the correlation settings (used by ras_table)."""
    return {key: value for key, value in config["ras"].items() if key != "correlation"}


def ras_activation_labels(wildcards):
    """Params function: the site, pooling, pooled tokens and KL positions, recorded beside every
    RAS value (the KL positions also say which input set holds the KL)."""
    block = config["activations"]
    return {key: block[key] for key in ("site", "pooling", "tokens", "kl_positions")}


def ras_checkpoint_params(wildcards):
    return ras_checkpoints(wildcards.model)


def ras_inputs(wildcards):
    """Input function: neuron sets, the dumps (base first) and the evaluation tables of RAS."""
    return planning.ras_inputs(config, wildcards.model)


def zeroing_param(key):
    """Params function for one entry of what the zeroing test needs."""

    def value(wildcards):
        return neurons_zeroing_params(config)[key]

    return value


def zeroing_inputs(wildcards):
    """Input function: the base model, the neuron sets and the prompt sets' dataset tables."""
    prompt_sets = evaluation_block()["prompt_sets"]
    return {
        "reference": base_reference(wildcards.model),
        "sets": f"results/neurons/{wildcards.model}/neuron_sets.parquet",
        "scores": f"results/neurons/{wildcards.model}/neuron_scores.parquet",
        **{
            f"table_{name}": dataset_path(prompt_sets[name]["dataset"])
            for name in config["neurons"]["zeroing"]["prompt_sets"]
        },
    }


def all_ras_targets():
    """results/ras.parquet and its correlations; nothing while no run feeds RAS."""
    return planning.ras_targets(config)


def all_zeroing_targets():
    return planning.zeroing_targets(config)


# ----- attention heads, head patching, probes ----------------------------------------------------
# Refusal heads, their ablation, the head-patching scan and the probes (docs/method.md#5-refusal-heads) run per
# checkpoint under the default target `all`; heads.checkpoints, patching.checkpoints and
# probes.checkpoints choose which. Probes run where the dump holds the residual states they need.
from rim import heads_settings  # noqa: E402

heads_dir = planning.heads_dir


def block_checkpoints(model, block):
    """Checkpoints of ``model`` that a heads/patching/probes block runs on."""
    return planning.block_checkpoints(config, model, block)


def heads_table(block):
    """Input function: the prepared table of the dataset behind the block's prompt set."""

    def table(wildcards):
        return dataset_path(heads_settings.heads_prompt_set(config, block)["dataset"])

    return table


def heads_param(build, key=None):
    """Params function: what a heads/patching/probes job gets from the config (one entry of it)."""

    def value(wildcards):
        built = build(config)
        return built if key is None else built[key]

    return value


def patching_inputs(wildcards):
    """Input function: the scanned checkpoint, the prompts and, where a pair needs it, the base model."""
    inputs = {
        "reference": checkpoint_reference(wildcards),
        "table": heads_table("patching")(wildcards),
    }
    if heads_settings.patching_needs_base(config, wildcards.ckpt):
        inputs["base"] = base_reference(wildcards.model)
    return inputs


def probe_plan_params(wildcards):
    return heads_settings.probe_plan(config, wildcards.ckpt)


def probe_inputs(wildcards):
    """Input function: the checkpoint's dump and, for refused vs fulfilled, its evaluation tables."""
    plan = heads_settings.probe_plan(config, wildcards.ckpt)
    modes = sorted(
        {item["mode"] for item in plan if item["probe"] == "refused_vs_fulfilled"}
    )
    harmful = config["probes"]["harmful"]
    return {
        "dump": activation_dump(wildcards.model, wildcards.ckpt),
        "evals": [
            evaluation_table(wildcards.model, wildcards.ckpt, harmful, mode)
            for mode in modes
        ],
    }


def all_heads_targets():
    targets = []
    for model in config["models"]:
        for ckpt in block_checkpoints(model, "heads"):
            targets.append(f"{heads_dir(model, ckpt)}/refusal_heads.parquet")
            if config["heads"]["ablation"]["enabled"]:
                targets.append(
                    f"{heads_dir(model, ckpt)}/head_ablation_summary.parquet"
                )
        for ckpt in block_checkpoints(model, "patching"):
            targets.append(f"{heads_dir(model, ckpt)}/head_patching.parquet")
        for ckpt in block_checkpoints(model, "probes"):
            if heads_settings.probe_plan(config, ckpt):
                targets.append(f"{heads_dir(model, ckpt)}/probes.parquet")
    return targets


# ----- partial reruns (cluster execution) ---------------------------------------------------------
# A job's params are what Snakemake compares to decide a rerun, so they hold only the settings
# that change the job's output: keys that pick which jobs exist (a run's seeds, whether it feeds
# RAS) or that only describe stay out, so adding a seed adds that seed's jobs and reruns no other.
RUN_KEYS_NOT_IN_PARAMS = {"seeds", "ras", "description"}


def training_run_settings(wildcards):
    """Params of finetune: the block of training run {run}, less the job-selecting keys."""
    block = training_runs()[wildcards.run]
    return {k: v for k, v in block.items() if k not in RUN_KEYS_NOT_IN_PARAMS}


# ----- figures and report --------------------------------------------------------------------------
# One job per figure (docs/method.md#7-figures), reading only the stages' tidy tables; each gets its own block
# of `figures` (rim.figures.figure_settings), so editing one figure's block redraws that figure only.
# A figure whose tables the config does not produce (no pattern modes, no probes...) is left out.
# rim.figures (altair) is imported by the figure jobs only: parsing the Snakefile stays light.

VEGA_BUNDLE = "results/figures/vega-embed.js"
# The default run's figures that the README shows (docs/figures/, rule readme_figures).
README_FIGURES = [
    "thinking",
    "training_dynamics",
    "training_sets",
    "ras",
    "neuron_zeroing",
    "refusal_heads",
]


def figure_block(name):
    return config["figures"][name]


def figure_params(name):
    """Params function: the figure's settings."""

    def settings(wildcards):
        from rim.figures import figure_settings

        return figure_settings(config, name)

    return settings


def figure_static(name):
    return f"results/figures/{name}.{config['figures']['format']}"


def figure_runs(name):
    """Training runs a figure covers: its `runs` setting, else every run."""
    chosen = figure_block(name).get("runs")
    return [run for run in training_runs() if chosen is None or run in chosen]


def figure_checkpoints(model, block, name):
    """The checkpoints of a heads/patching/probes block that figure `name` shows."""
    return choose_checkpoints(
        block_checkpoints(model, block), figure_block(name)["checkpoints"]
    )


def evaluated_modes():
    """Every (prompt set, mode) pair some evaluation group runs."""
    return planning.evaluated_modes(config)


def loss_tables(runs):
    return planning.loss_tables(config, runs)


def last_checkpoints(model, runs):
    """The last checkpoint id of every seed of the given runs."""
    return planning.last_checkpoints(config, model, runs)


def training_sets_tables(wildcards):
    """Per-prompt tables of the base model and of every run's last checkpoints."""
    block = figure_block("training_sets")
    entries = [block["safety"]] + ([block["math"]] if block.get("math") else [])
    return [
        evaluation_table(model, ckpt, entry["prompt_set"], entry["mode"])
        for model in config["models"]
        for ckpt in ["base", *last_checkpoints(model, figure_runs("training_sets"))]
        for entry in entries
    ]


def heads_figure_tables(block, name, filename):
    def tables(wildcards):
        return [
            f"{heads_dir(model, ckpt)}/{filename}"
            for model in config["models"]
            for ckpt in figure_checkpoints(model, block, name)
            if block != "probes" or heads_settings.probe_plan(config, ckpt)
        ]

    return tables


# The figure registry: figures.smk generates one rule per entry (figure_<name>). For each figure,
# the tables it reads (input name -> path, list or input function; every figure also reads the
# vega-embed bundle), where the report files it, and whether the config produces its tables.
FIGURE_RULES = {
    "thinking": {
        "about": "thinking ON vs OFF: misalignment and math accuracy per checkpoint (docs/method.md#1-the-phenomenon)",
        "tables": {"summary": "results/eval/summary.parquet"},
        "category": "1. Inference-time misalignment",
        "title": "Thinking ON vs OFF",
    },
    "patterns": {
        "about": "reasoning patterns: control vs target self-statements (docs/method.md#1-the-phenomenon)",
        "tables": {
            "summary": "results/eval/summary.parquet",
            "contrasts": "results/eval/contrasts.parquet",
        },
        "category": "1. Inference-time misalignment",
        "title": "Reasoning patterns",
    },
    "training_dynamics": {
        "about": "misalignment, math accuracy and loss over fine-tuning steps, per seed (docs/method.md#4-fine-tuning)",
        "tables": {
            "summary": "results/eval/summary.parquet",
            "loss": loss_tables(figure_runs("training_dynamics")),
        },
        "category": "2. Fine-tuning",
        "title": "Over fine-tuning steps",
    },
    "training_sets": {
        "about": "change in misalignment from the base model per training set (docs/method.md#4-fine-tuning)",
        "tables": {"evaluations": training_sets_tables},
        "category": "2. Fine-tuning",
        "title": "Per training set",
    },
    "neuron_zeroing": {
        "about": "dose-response of zeroing safety vs random neurons (docs/method.md#zeroing-dose-response)",
        "tables": {
            "zeroing": expand(
                "results/neurons/{model}/zeroing_summary.parquet",
                model=config["models"],
            )
        },
        "category": "3. Safety neurons and RAS",
        "title": "Zeroing safety neurons",
    },
    "ras": {
        "about": "RAS vs misalignment: safety vs random vs all neurons vs KL (docs/method.md#6-safety-neurons-and-ras)",
        "tables": {
            "ras": "results/ras.parquet",
            "correlations": "results/ras_correlations.parquet",
        },
        "category": "3. Safety neurons and RAS",
        "title": "RAS vs misalignment",
    },
    "refusal_heads": {
        "about": "refusal-head bubble map, layer x head, per checkpoint (docs/method.md#5-refusal-heads)",
        "tables": {
            "refusal_heads": heads_figure_tables(
                "heads", "refusal_heads", "refusal_heads.parquet"
            )
        },
        "category": "4. Attention heads and probes",
        "title": "Refusal heads",
    },
    "head_ablation": {
        "about": "zeroing the refusal heads vs random heads (docs/method.md#5-refusal-heads)",
        "tables": {
            "ablation": heads_figure_tables(
                "heads", "head_ablation", "head_ablation_summary.parquet"
            )
        },
        "category": "4. Attention heads and probes",
        "title": "Zeroing refusal heads",
    },
    "head_patching": {
        "about": "head-patching heat maps, exact and attribution side by side (docs/method.md#5-refusal-heads)",
        "tables": {
            "patching": heads_figure_tables(
                "patching", "head_patching", "head_patching.parquet"
            )
        },
        "category": "4. Attention heads and probes",
        "title": "Head patching",
    },
    "probes": {
        "about": "probe score per layer and token position (docs/method.md#5-refusal-heads)",
        "tables": {"probes": heads_figure_tables("probes", "probes", "probes.parquet")},
        "category": "4. Attention heads and probes",
        "title": "Probes",
    },
}


def _thinking_available(block):
    modes = evaluated_modes()
    sets = {ps for ps, mode in modes if mode == block["on_mode"]}
    return any((ps, block["off_mode"]) in modes for ps in sets)


def _patterns_available(block):
    patterned = {
        mode for mode, entry in config["prompt_modes"].items() if entry.get("pattern")
    }
    return any(
        ps == block["prompt_set"] and mode in patterned
        for ps, mode in evaluated_modes()
    )


# Whether the config produces the tables a figure reads (called with the figure's block).
FIGURE_AVAILABLE = {
    "thinking": _thinking_available,
    "patterns": _patterns_available,
    "training_dynamics": lambda block: bool(figure_runs("training_dynamics")),
    "training_sets": lambda block: any(
        last_checkpoints(model, figure_runs("training_sets"))
        for model in config["models"]
    ),
    "probes": lambda block: bool(
        heads_figure_tables("probes", "probes", "probes.parquet")(None)
    ),
    "refusal_heads": lambda block: True,
    "head_patching": lambda block: True,
    "head_ablation": lambda block: bool(config["heads"]["ablation"]["enabled"]),
    "neuron_zeroing": lambda block: bool(all_zeroing_targets()),
    "ras": lambda block: bool(all_ras_targets()),
}


if set(FIGURE_RULES) != set(planning.FIGURE_NAMES) or set(FIGURE_AVAILABLE) != set(
    planning.FIGURE_NAMES
):
    raise WorkflowError(
        "the figure registry (FIGURE_RULES, FIGURE_AVAILABLE in common.smk) and rim.planning.FIGURE_NAMES "
        f"list different figures: {sorted(set(FIGURE_RULES) ^ set(planning.FIGURE_NAMES))}"
    )


def figure_available(name):
    """Whether figure `name` is switched on and the config produces the tables it needs."""
    if name not in FIGURE_AVAILABLE:
        raise WorkflowError(f"no figure '{name}'")
    block = figure_block(name)
    return bool(block["enabled"]) and FIGURE_AVAILABLE[name](block)


def figure_report(name, path, what, caption=None):
    """A figure output filed in the report under its category and title."""
    entry = FIGURE_RULES[name]
    return report(
        path,
        caption=caption or f"../report/{name}.rst",
        category=entry["category"],
        subcategory=entry["title"],
        labels={"figure": entry["title"], "file": what},
    )


def all_figure_targets():
    """The interactive page, static image and plotted numbers of every available figure."""
    return [
        path
        for name in planning.FIGURE_NAMES
        if figure_available(name)
        for path in (
            f"results/figures/{name}.html",
            figure_static(name),
            f"results/figures/{name}.csv",
        )
    ]
