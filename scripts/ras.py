#!/usr/bin/env python
"""RAS of every checkpoint of one model against its base model (results/ras/{model}.parquet).

For the safety neurons, each random control set and all neurons: delta_safe (activations on
harmful inputs that fell), delta_math (activations on math inputs that rose), their harmonic
mean RAS, the arithmetic and geometric means, and the KL baseline on math inputs
(docs/method.md#6-safety-neurons-and-ras), for each variant of the inputs under ras.inputs (column
``inputs``: own_response, base_response, prompt_only; docs/method.md#ras-inputs). Beside each
checkpoint: its misalignment rate, refusal rates and math accuracy from the evaluation tables.
The normalization and the near-zero/negative handling used are columns.

Standalone:
    python scripts/ras.py --model smollm2 --sets results/neurons/smollm2/neuron_sets.parquet \\
        --dumps results/activations/smollm2/base.h5 results/activations/smollm2/gsm8k_style/seed0/step10.h5 ... \\
        --output /tmp/ras_smollm2.parquet
Evaluation tables are looked up under --results (default results/).
"""

import numpy as np
import pandas as pd

from rim import cli
from rim.checkpoints import parse_checkpoint
from rim.activations import RAS_INPUTS, read_input_set
from rim.errors import DataError, RimError
from rim.neurons import flat_index
from rim.provenance import collect, read_table, write_table
from rim.ras import NeuronGroup, ShiftSettings, checkpoint_rows, mean_activation

CHECKPOINT_METRICS = {
    # column: (input set key in params, summary metric, judge or None for the configured judge)
    "misalignment_rate": ("safety_inputs", "misalignment_rate", None),
    "refusal_rate": ("safety_inputs", "refusal_rate", "phrases"),
    "mean_refusal_score": ("safety_inputs", "mean_refusal_score", "refusal_score"),
    "over_refusal_rate": ("over_refusal_inputs", "over_refusal_rate", "phrases"),
    "math_accuracy": ("math_inputs", "math_accuracy", "exact_match"),
}


def neuron_groups(sets: pd.DataFrame, n_neurons: int) -> list[NeuronGroup]:
    groups = []
    for (name, draw), part in sets.groupby(["neuron_set", "draw"], dropna=False, sort=False):
        groups.append(
            NeuronGroup(
                name, None if pd.isna(draw) else int(draw), flat_index(part["layer"], part["neuron"], n_neurons)
            )
        )
    return groups + [NeuronGroup("all", None, None)]


def set_activations(path: str, entry: dict, inputs: str) -> tuple[list[str], np.ndarray]:
    """Prompt ids and flat mean activation per neuron of one input set, read as the ``inputs``
    variant says (rim.activations.RAS_INPUTS; docs/method.md#ras-inputs)."""
    prompt_only = inputs == "prompt_only"
    data = read_input_set(
        path,
        entry["prompt_set"],
        entry["mode"],
        responses="base" if inputs == "base_response" else "own",
        neurons=not prompt_only,
        prompt_neurons=prompt_only,
    )
    return data.prompt_ids, mean_activation(data.prompt_neurons if prompt_only else data.neurons).ravel()


def mean_kl(path: str, entry: dict, kl_positions: str) -> float:
    """Mean KL to the base model over the math inputs: on the base model's responses
    (teacher-forced) for kl_positions answer, else on the prompts of the own-response set."""
    data = read_input_set(
        path, entry["prompt_set"], entry["mode"], neurons=False, responses="base" if kl_positions == "answer" else "own"
    )
    if data.kl_to_base is None:
        raise DataError(
            f"no kl_to_base in the input set {entry['prompt_set']}/{entry['mode']} "
            f"(activations.kl_positions: {kl_positions})",
            source=path,
        )
    return float(np.nanmean(data.kl_to_base))


def checkpoint_metrics(paths: list[str], ckpts: list[str], params: dict) -> pd.DataFrame:
    """Misalignment, refusal and accuracy per checkpoint (rim.evaluation.summarize)."""
    from rim.evaluation import summarize_tables

    block = params["ras"]
    summary = summarize_tables(
        paths, by=["checkpoint", "prompt_set", "mode"], n_boot=1000, seed=0, outcomes=params.get("outcomes")
    )
    out = pd.DataFrame({"checkpoint": ckpts})
    for column, (inputs_key, metric, judge) in CHECKPOINT_METRICS.items():
        entry = block.get(inputs_key)
        if not entry:
            continue
        rows = summary[
            (summary["prompt_set"] == entry["prompt_set"])
            & (summary["mode"] == entry["mode"])
            & (summary["metric"] == metric)
            & (summary["judge"] == (judge or block["judge"]))
        ].set_index("checkpoint")
        if rows.empty:
            raise DataError(
                f"no {metric} ({judge or block['judge']} judge) in the evaluation of "
                f"{entry['prompt_set']}/{entry['mode']}: "
                "is that judge enabled for this prompt set?"
            )
        out[column] = out["checkpoint"].map(rows["value"])
        if column in ("misalignment_rate", "math_accuracy"):
            out[f"{column}_ci_low"] = out["checkpoint"].map(rows["ci_low"])
            out[f"{column}_ci_high"] = out["checkpoint"].map(rows["ci_high"])
    return out


def run(job: cli.Job) -> None:
    params, model = job.params, job.wildcards["model"]
    block = params["ras"]
    settings = ShiftSettings.from_config(block)
    ckpts, dumps = list(params["checkpoints"]), [str(path) for path in job.input["dumps"]]
    if ckpts[0] != "base" or len(ckpts) != len(dumps):
        raise DataError("the dumps must be the base model's followed by one per checkpoint")
    if len(ckpts) == 1:
        raise RimError(
            f"no fine-tuned checkpoint of {model} to compute RAS for: 'ras.runs' (or the runs marked for RAS "
            "under 'training.runs') selects no run with seeds and checkpoint steps"
        )
    sets = read_table(job.input["sets"])
    variants = list(block.get("inputs") or RAS_INPUTS)
    kl_positions = params["activations"].get("kl_positions", "answer")
    base = {
        variant: (
            set_activations(dumps[0], block["safety_inputs"], variant),
            set_activations(dumps[0], block["math_inputs"], variant),
        )
        for variant in variants
    }
    n_neurons = read_input_set(
        dumps[0], block["safety_inputs"]["prompt_set"], block["safety_inputs"]["mode"], neurons=False
    ).attrs["n_neurons"]
    groups = neuron_groups(sets, int(n_neurons))
    cli.log.info(
        "%d checkpoints; neuron sets: %s; inputs: %s; KL on %s positions",
        len(ckpts),
        ", ".join(sorted({g.name for g in groups})),
        ", ".join(variants),
        kl_positions,
    )
    rows = []
    progress = cli.Progress(len(ckpts), "ras", unit="checkpoints")
    for ckpt, path in zip(ckpts, dumps):
        kl = mean_kl(path, block["math_inputs"], kl_positions)
        for variant in variants:
            (safe_ids, safe_base), (math_ids, math_base) = base[variant]
            ids, safe = set_activations(path, block["safety_inputs"], variant)
            ids_math, math = set_activations(path, block["math_inputs"], variant)
            for name, base_ids, these in (("safety", safe_ids, ids), ("math", math_ids, ids_math)):
                if sorted(base_ids) != sorted(these):  # the mean over prompts needs the same prompts, any order
                    raise DataError(
                        f"the {name} inputs of {ckpt} ({variant}) are not the base model's prompts", source=path
                    )
            # The KL does not depend on the variant: its rows repeat, so that each variant's rows
            # are a whole RAS table.
            for row in checkpoint_rows(groups, safe_base, safe, math_base, math, kl, settings):
                rows.append({"checkpoint": ckpt, "inputs": variant, **row})
        progress.update()
    table = pd.DataFrame(rows)
    table = table.merge(
        checkpoint_metrics([str(p) for p in job.input["evals"]], ckpts, params), on="checkpoint", how="left"
    )
    table = _with_runs(table, model, ckpts)
    # The choices the paper leaves open, recorded beside every value (docs/method.md#6-safety-neurons-and-ras).
    chosen = {
        "normalization": settings.normalization,
        "activation_handling": settings.handling,
        "epsilon": settings.epsilon,
        "misalignment_judge": block["judge"],
    }
    for key, value in chosen.items():
        table[key] = value
    table["site"], table["pooling"] = params["activations"]["site"], params["activations"]["pooling"]
    table["tokens"], table["kl_positions"] = params["activations"].get("tokens", "user_and_response"), kl_positions
    write_table(
        table,
        job.output["table"],
        collect({"ras": block, "activations": params["activations"]}, model=model, checkpoints=ckpts),
    )
    _log_summary(table)


def _with_runs(table: pd.DataFrame, model: str, ckpts: list[str]) -> pd.DataFrame:
    """Identity columns; the base model is step 0 of every (run, seed), so its rows repeat per run."""
    fields = []
    for ckpt in ckpts:
        if ckpt != "base":
            fields.append((ckpt, *parse_checkpoint(ckpt)))
    base = table[table["checkpoint"] == "base"]
    parts = []
    for run, seed in sorted({(run, seed) for _, run, seed, _ in fields}):
        parts.append(base.assign(run=run, seed=seed, step=0))
    for ckpt, run, seed, step in fields:
        parts.append(table[table["checkpoint"] == ckpt].assign(run=run, seed=seed, step=step))
    out = pd.concat(parts, ignore_index=True)
    out.insert(0, "model", model)
    front = [
        "model",
        "run",
        "seed",
        "step",
        "checkpoint",
        "inputs",
        "neuron_set",
        "draw",
        "set_size",
        "metric",
        "value",
    ]
    out = out[front + [c for c in out.columns if c not in front]]
    out["seed"] = out["seed"].astype("Int64")
    out["draw"] = out["draw"].astype("Int64")
    return out.sort_values(
        ["run", "seed", "step", "inputs", "neuron_set", "draw", "metric"], kind="stable"
    ).reset_index(drop=True)


def _log_summary(table: pd.DataFrame) -> None:
    last = table[table["step"] == table["step"].max()]
    for (run, seed, inputs), part in last.groupby(["run", "seed", "inputs"]):
        value = part.set_index(["neuron_set", "metric"])["value"]
        random = part[(part["neuron_set"] == "random") & (part["metric"] == "ras_harmonic")]["value"].mean()
        cli.log.info(
            "%s seed %s step %d, %s: RAS safety %.4g, random (mean) %.4g, all %.4g, KL %.4g, misalignment %.3f",
            run,
            seed,
            int(part["step"].iloc[0]),
            inputs,
            value.get(("safety", "ras_harmonic"), np.nan),
            random,
            value.get(("all", "ras_harmonic"), np.nan),
            value.get(("none", "kl"), np.nan),
            part["misalignment_rate"].iloc[0],
        )


def build_job(argv=None) -> cli.Job:
    from rim.config import load_config

    parser = cli.standalone_parser(__doc__)
    parser.add_argument("--model", required=True, help="model name under 'models' in the config")
    parser.add_argument("--sets", required=True, help="neuron_sets.parquet of the model")
    parser.add_argument(
        "--dumps",
        nargs="+",
        required=True,
        help="the base dump, then one per checkpoint (.../<run>/seed<s>/step<k>.h5)",
    )
    parser.add_argument("--results", default="results", help="folder holding eval/")
    parser.add_argument("--output", required=True, help="parquet file to write")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    prefix = f"{args.results}/activations/{args.model}/"
    ckpts = ["base"] + [path.removeprefix(prefix).removesuffix(".h5") for path in args.dumps[1:]]
    return cli.Job(
        input={
            "sets": args.sets,
            "dumps": args.dumps,
            "evals": ras_evaluation_tables(config, args.model, ckpts, args.results),
        },
        output={"table": args.output},
        params={"ras": config["ras"], "activations": config["activations"], "checkpoints": ckpts},
        wildcards={"model": args.model},
        threads=args.threads,
        log_path=args.log,
    )


def ras_evaluation_tables(config: dict, model: str, ckpts: list[str], results: str = "results") -> list[str]:
    block = config["ras"]
    entries = [block[key] for key in ("safety_inputs", "math_inputs", "over_refusal_inputs") if block.get(key)]
    return [f"{results}/eval/{model}/{ckpt}/{e['prompt_set']}/{e['mode']}.parquet" for ckpt in ckpts for e in entries]


if __name__ == "__main__":
    cli.main(run, build_job, globals())
