"""What the workflow builds for a config: its checkpoints, the files each stage writes, and which.

The Snakefile's input and params functions (workflow/rules/common.smk) are thin wrappers around
these functions, which take the validated config and plain names, so the planning logic is
unit-tested directly (tests/test_planning.py) rather than through `snakemake -n`.

Imports stay light on purpose (no torch, h5py, altair or pandas): Snakemake imports this module
when it parses the Snakefile, for every dry run, lint and report.

Paths: one function per kind of file, and every stage and figure asks them.
Checkpoint ids: rim.checkpoints (``base`` or ``<run>/seed<seed>/step<step>``; step 0 is base).
"""

from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from rim.checkpoints import BASE, checkpoint_id, choose_checkpoints, parse_checkpoint
from rim.errors import ConfigError

RESULTS = "results"
# Which responses an activation input set reads (docs/method.md#6-safety-neurons-and-ras): the
# checkpoint's own, or the base model's fed to every checkpoint (the fixed-token variant).
RESPONSES = ("own", "base")
# The RAS input variants a dump can serve (ras.inputs).
RAS_INPUTS = ("own_response", "base_response", "prompt_only")


# The figures, in the order of rim.figures.FIGURES (which checks it): the Snakefile generates one
# rule per figure without importing the plotting code.
FIGURE_NAMES = (
    "thinking",
    "patterns",
    "training_dynamics",
    "training_sets",
    "probes",
    "refusal_heads",
    "head_patching",
    "head_ablation",
    "neuron_zeroing",
    "ras",
)


# ----- paths -------------------------------------------------------------------------------------
def source_reference(model: str) -> str:
    return f"{RESULTS}/models/{model}/source.json"


def aligned_reference(model: str) -> str:
    return f"{RESULTS}/models/{model}/aligned.json"


def dataset_table(name: str, results: str = RESULTS) -> str:
    return f"{results}/data/{name}.parquet"


def run_manifest(model: str, run: str, seed: int) -> str:
    return f"{RESULTS}/finetune/{model}/{run}/seed{seed}/run.json"


def loss_table(model: str, run: str, seed: int) -> str:
    return f"{RESULTS}/finetune/{model}/{run}/seed{seed}/loss.parquet"


def evaluation_table(model: str, ckpt: str, prompt_set: str, mode: str, results: str = RESULTS) -> str:
    """One prompt set in one mode on one checkpoint: the responses with their verdicts."""
    return f"{results}/eval/{model}/{ckpt}/{prompt_set}/{mode}.parquet"


def responses_table(model: str, ckpt: str, prompt_set: str, mode: str, results: str = RESULTS) -> str:
    """The same responses before judging (what the model job writes; the judge job reads it)."""
    return f"{results}/responses/{model}/{ckpt}/{prompt_set}/{mode}.parquet"


def activation_dump(model: str, ckpt: str, results: str = RESULTS) -> str:
    return f"{results}/activations/{model}/{ckpt}.h5"


def neurons_table(model: str, name: str) -> str:
    """neuron_sets, neuron_scores or zeroing_summary of ``model``."""
    return f"{RESULTS}/neurons/{model}/{name}.parquet"


def heads_dir(model: str, ckpt: str) -> str:
    return f"{RESULTS}/heads/{model}/{ckpt}"


# ----- models, runs and checkpoints ----------------------------------------------------------------
def alignment_enabled(config: Mapping, model: str) -> bool:
    return bool(config["models"][model].get("alignment", {}).get("enabled", False))


def base_reference(config: Mapping, model: str) -> str:
    """The base model every later stage studies: the aligned model, or the source when the
    workflow does not align it."""
    return aligned_reference(model) if alignment_enabled(config, model) else source_reference(model)


def training_runs(config: Mapping) -> Mapping:
    return config.get("training", {}).get("runs", {})


def checkpoint_steps(config: Mapping, model: str) -> list[int]:
    return list(config["models"][model].get("finetuning", {}).get("checkpoint_steps", []))


def checkpoint_ids(config: Mapping, model: str, runs: Iterable[str] | None = None) -> list[str]:
    """Every checkpoint of the given runs (default: all), base first; step 0 is base."""
    chosen = None if runs is None else set(runs)
    ids = [BASE]
    for run, settings in training_runs(config).items():
        if chosen is not None and run not in chosen:
            continue
        for seed in settings.get("seeds", []):
            ids += [checkpoint_id(run, seed, step) for step in checkpoint_steps(config, model) if step]
    return ids


def checkpoint_reference(config: Mapping, model: str, ckpt: str) -> str:
    """The reference file that loads checkpoint ``ckpt`` of ``model`` (a run manifest names its steps)."""
    run, seed, _ = parse_checkpoint(ckpt)
    return base_reference(config, model) if run is None else run_manifest(model, run, seed)


def checkpoint_step(ckpt: str) -> int | None:
    """The step to pick from a run manifest (None for the base model)."""
    run, _, step = parse_checkpoint(ckpt)
    return None if run is None else step


def last_checkpoints(config: Mapping, model: str, runs: Iterable[str]) -> list[str]:
    """The last checkpoint of every seed of the given runs."""
    steps = [step for step in checkpoint_steps(config, model) if step]
    if not steps:
        return []
    return [checkpoint_id(run, seed, max(steps)) for run in runs for seed in training_runs(config)[run]["seeds"]]


def finetune_manifests(config: Mapping, runs: Iterable[str] | None = None) -> list[str]:
    """Run manifests of every model, run (default: all) and seed."""
    chosen = None if runs is None else set(runs)
    return [
        run_manifest(model, run, seed)
        for model in config["models"]
        for run, settings in training_runs(config).items()
        if chosen is None or run in chosen
        for seed in settings["seeds"]
    ]


def loss_tables(config: Mapping, runs: Iterable[str]) -> list[str]:
    return [
        loss_table(model, run, seed)
        for model in config["models"]
        for run in runs
        for seed in training_runs(config)[run]["seeds"]
    ]


def chosen_in_order(ckpts: Sequence[str], which: str | Sequence[str]) -> list[str]:
    """``rim.checkpoints.choose_checkpoints`` kept in the order of ``ckpts`` (the config's order
    of runs and seeds): the order of a rule's inputs, and so of the rows of the tables built
    from them, does not depend on how checkpoint ids sort."""
    chosen = set(choose_checkpoints(ckpts, which))
    return [ckpt for ckpt in dict.fromkeys(ckpts) if ckpt in chosen]


# ----- evaluation ----------------------------------------------------------------------------------
def evaluation_groups(config: Mapping) -> Mapping:
    return config.get("evaluation", {}).get("groups", {})


def evaluation_targets(config: Mapping, model: str, ckpts: Sequence[str], purpose: str = "all") -> list[str]:
    """Per-prompt tables of ``model`` at checkpoints ``ckpts``: of every group under
    evaluation.groups (``all``) or of one group (``ras``: what results/ras.parquet needs)."""
    groups = evaluation_groups(config)
    if purpose == "all":
        chosen = list(groups.values())
    elif purpose in groups:
        chosen = [groups[purpose]]
    else:
        raise ConfigError(f"no group '{purpose}' under 'evaluation.groups' in the config; defined: {', '.join(groups)}")
    targets: dict[str, None] = {}
    for group in chosen:
        for ckpt in chosen_in_order(ckpts, group.get("checkpoints", "all")):
            for prompt_set in group["prompt_sets"]:
                for mode in group["modes"]:
                    targets[evaluation_table(model, ckpt, prompt_set, mode)] = None
    return list(targets)


def all_evaluation_tables(config: Mapping) -> list[str]:
    return [
        path for model in config["models"] for path in evaluation_targets(config, model, checkpoint_ids(config, model))
    ]


def evaluated_modes(config: Mapping) -> set[tuple[str, str]]:
    """Every (prompt set, mode) pair some evaluation group runs."""
    return {
        (prompt_set, mode)
        for group in evaluation_groups(config).values()
        for prompt_set in group["prompt_sets"]
        for mode in group["modes"]
    }


# ----- activations, safety neurons, RAS ------------------------------------------------------------
def ras_runs(config: Mapping) -> list[str]:
    """Training runs whose checkpoints get RAS: ras.runs, else the runs marked ``ras: true``."""
    chosen = config.get("ras", {}).get("runs")
    if chosen is not None:
        return list(chosen)
    return [name for name, run in training_runs(config).items() if run.get("ras", False)]


def ras_checkpoints(config: Mapping, model: str) -> list[str]:
    """base, then every checkpoint of every seed of the RAS runs: each gets an activation dump."""
    return checkpoint_ids(config, model, runs=ras_runs(config))


def ras_evaluation_tables(config: Mapping, model: str, ckpts: Iterable[str]) -> list[str]:
    """The evaluation tables RAS correlates with: safety, math and over-refusal inputs per checkpoint."""
    block = config["ras"]
    entries = [block[key] for key in ("safety_inputs", "math_inputs", "over_refusal_inputs") if block.get(key)]
    return [evaluation_table(model, ckpt, entry["prompt_set"], entry["mode"]) for ckpt in ckpts for entry in entries]


def uses_base_responses(config: Mapping) -> bool:
    """Whether dumps read the RAS inputs with the base model's responses too: for the
    base_response variant of RAS, or for the KL baseline on answer positions."""
    ras, block = config.get("ras", {}), config.get("activations", {})
    return "base_response" in ras.get("inputs", list(RAS_INPUTS)) or block.get("kl_positions", "answer") == "answer"


def _input_key(entry: Mapping) -> tuple[str, str]:
    return str(entry["prompt_set"]), str(entry["mode"])


def dump_input_keys(config: Mapping, ckpt: str) -> list[tuple[str, str, bool, str]]:
    """(prompt set, mode, kl, responses) of every input set in the dump of ``ckpt``.

    The base model's dump holds the (harmful, -MI) pairs of the safety neurons; every dump holds
    the safety and math inputs of RAS with the checkpoint's own responses and, where
    ``uses_base_responses``, with the base model's (math with the KL baseline on the answer
    positions there, or on the prompt positions of the own-response set), plus
    activations.extra_inputs.
    """
    neurons, ras, block = config.get("neurons", {}), config.get("ras", {}), config.get("activations", {})
    kl_on_answers = block.get("kl_positions", "answer") == "answer"
    wanted: list[tuple[tuple[str, str, str], bool]] = []
    if ckpt == BASE:
        wanted += [(_input_key(neurons["plain"]) + ("own",), False), (_input_key(neurons["intent"]) + ("own",), False)]
    wanted += [
        (_input_key(ras["safety_inputs"]) + ("own",), False),
        (_input_key(ras["math_inputs"]) + ("own",), not kl_on_answers),
    ]
    if uses_base_responses(config):
        wanted += [
            (_input_key(ras["safety_inputs"]) + ("base",), False),
            (_input_key(ras["math_inputs"]) + ("base",), kl_on_answers),
        ]
    for extra in block.get("extra_inputs", []):
        if ckpt == BASE or extra.get("checkpoints", "base") == "all":
            wanted.append((_input_key(extra) + ("own",), False))
    keys: dict[tuple[str, str, str], bool] = {}
    for key, kl in wanted:
        keys[key] = keys.get(key, False) or kl
    return [(prompt_set, mode, kl, responses) for (prompt_set, mode, responses), kl in keys.items()]


def dump_plan(config: Mapping, model: str, ckpt: str, results: str = RESULTS) -> list[dict]:
    """The input sets of one dump with everything the dump job needs to read them."""
    block = config.get("activations", {})
    residual = set(block.get("residual_inputs", []))
    prompt_sets = config.get("evaluation", {}).get("prompt_sets", {})
    plan = []
    for prompt_set, mode, kl, responses in dump_input_keys(config, ckpt):
        dataset = prompt_sets[prompt_set]["dataset"]
        source = ckpt if responses == "own" else BASE
        plan.append(
            {
                "prompt_set": prompt_set,
                "mode": mode,
                "mode_entry": dict(config["prompt_modes"][mode]),
                "dataset": dataset,
                "dataset_table": dataset_table(dataset, results),
                "responses": responses_table(model, source, prompt_set, mode, results),
                "responses_from": responses,
                "residual": responses == "own" and f"{prompt_set}/{mode}" in residual,
                "kl": kl,
            }
        )
    return plan


def checkpoint_pairs(config: Mapping, ckpt: str) -> list[tuple[str, str]]:
    """(prompt set, mode) of every response table the job of a dumped checkpoint generates.

    That job loads the checkpoint once for the responses its dump reads (the checkpoint's own:
    the RAS inputs, at base also the safety neurons' pairs, and activations.extra_inputs) and
    for the over-refusal input of RAS, so that results/ras.parquet needs no other model job per
    checkpoint. It depends only on whether ``ckpt`` is base, so the rule's outputs are fixed.
    """
    keys = dump_input_keys(config, ckpt)
    pairs = [(prompt_set, mode) for prompt_set, mode, _, responses in keys if responses == "own"]
    over_refusal = config.get("ras", {}).get("over_refusal_inputs")
    if over_refusal:
        pairs.append(_input_key(over_refusal))
    return list(dict.fromkeys(pairs))


def generation_params(config: Mapping, prompt_set: str, mode: str) -> dict:
    """What generating one prompt set in one mode reads from the config (the params of its job):
    the prompt set's entry, the mode's entry, the generation block and what the judges need of
    the responses (their length and the refusal score), not the judges themselves."""
    from rim.evaluation.settings import generation_needs

    block = config.get("evaluation", {})
    entry = block["prompt_sets"][prompt_set]
    return {
        "prompt_set": {"name": prompt_set, **entry},
        "mode": {"name": mode, **config["prompt_modes"][mode]},
        "generation": block.get("generation", {}),
        "needs": generation_needs(block.get("judges", {}), entry["kind"]),
    }


def dump_inputs(config: Mapping, model: str, ckpt: str, results: str = RESULTS) -> dict:
    """What the job of a dumped checkpoint reads: the checkpoint, the dataset tables of the
    prompt sets it generates and of its input sets, the base model's responses for the
    fixed-token input sets and, for a fine-tuned checkpoint, the base model's dump (the KL
    baseline's reference distributions). Its own responses it generates itself."""
    plan = dump_plan(config, model, ckpt, results)
    prompt_sets = config.get("evaluation", {}).get("prompt_sets", {})
    generated = [
        dataset_table(prompt_sets[prompt_set]["dataset"], results) for prompt_set, _ in checkpoint_pairs(config, ckpt)
    ]
    inputs = {
        "reference": checkpoint_reference(config, model, ckpt),
        # At base these are its own responses: outputs of the same job.
        "base_responses": [item["responses"] for item in plan if item["responses_from"] == "base" and ckpt != BASE],
        "datasets": sorted({*generated, *(item["dataset_table"] for item in plan)}),
    }
    if ckpt != BASE:
        inputs["kl_reference"] = activation_dump(model, BASE, results)
    return inputs


def checkpoint_output_key(prompt_set: str, mode: str) -> str:
    """The name of a responses table among the outputs of a checkpoint job."""
    return f"responses_{prompt_set}__{mode}"


def checkpoint_outputs(config: Mapping, model: str, ckpt: str, results: str = RESULTS) -> dict[str, str]:
    """The responses tables of ``checkpoint_pairs`` and the dump of one checkpoint job (with
    ``model="{model}"``, ``ckpt="{ckpt}"``: the rule's output patterns)."""
    outputs = {
        checkpoint_output_key(prompt_set, mode): responses_table(model, ckpt, prompt_set, mode, results)
        for prompt_set, mode in checkpoint_pairs(config, ckpt)
    }
    outputs["dump"] = activation_dump(model, ckpt, results)
    return outputs


def checkpoint_params(config: Mapping, model: str, ckpt: str, results: str = RESULTS) -> dict:
    """What a checkpoint job reads from the config: each generation's settings, the dump's
    settings and plan, the step to load and the device."""
    prompt_sets = config.get("evaluation", {}).get("prompt_sets", {})
    pairs = checkpoint_pairs(config, ckpt)
    return {
        "generations": [generation_params(config, prompt_set, mode) for prompt_set, mode in pairs],
        "dataset_tables": {
            f"{prompt_set}/{mode}": dataset_table(prompt_sets[prompt_set]["dataset"], results)
            for prompt_set, mode in pairs
        },
        "activations": config.get("activations", {}),
        "inputs": dump_plan(config, model, ckpt, results),
        "checkpoint_step": checkpoint_step(ckpt),
        "device": config.get("device", "auto"),
    }


def checkpoint_job(config: Mapping, model: str, ckpt: str, results: str = RESULTS) -> dict:
    """Inputs (without the reference), outputs and params of the job of a dumped checkpoint."""
    inputs = dump_inputs(config, model, ckpt, results)
    inputs.pop("reference")
    return {
        "input": inputs,
        "output": checkpoint_outputs(config, model, ckpt, results),
        "params": checkpoint_params(config, model, ckpt, results),
    }


def ras_inputs(config: Mapping, model: str) -> dict:
    """What RAS reads: the neuron sets, every dump (base first) and the evaluation tables."""
    ckpts = ras_checkpoints(config, model)
    return {
        "sets": neurons_table(model, "neuron_sets"),
        "dumps": [activation_dump(model, ckpt) for ckpt in ckpts],
        "evals": ras_evaluation_tables(config, model, ckpts),
    }


def ras_targets(config: Mapping) -> list[str]:
    """results/ras.parquet and its correlations; nothing while no run feeds RAS."""
    if not any(len(ras_checkpoints(config, model)) > 1 for model in config["models"]):
        return []
    return [f"{RESULTS}/ras.parquet", f"{RESULTS}/ras_correlations.parquet"]


def zeroing_targets(config: Mapping) -> list[str]:
    if not config["neurons"]["zeroing"]["enabled"]:
        return []
    return [neurons_table(model, "zeroing_summary") for model in config["models"]]


# ----- attention heads, patching, probes ------------------------------------------------------------
def block_checkpoints(config: Mapping, model: str, block: str) -> list[str]:
    """Checkpoints of ``model`` that the heads, patching or probes block runs on."""
    chosen = config[block]["checkpoints"]
    runs = chosen["runs"] if chosen["runs"] is not None else ras_runs(config)
    return chosen_in_order(checkpoint_ids(config, model, runs=runs), chosen["which"])
