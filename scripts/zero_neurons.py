#!/usr/bin/env python
"""Causal test of the safety neurons: generate with them zeroed, with random sets zeroed, and plain.

On the base model, each prompt set in neurons.zeroing is evaluated (rim.evaluation, the same
generation and judges as the evaluation stage) with no intervention, with the safety neurons
zeroed and with each of the first random control sets zeroed (rim.hooks.ablate(zero_neurons=)),
and, for each k in neurons.zeroing.sizes, with the top k neurons of the safety score zeroed and
with random sets of k neurons zeroed (the dose-response, docs/method.md#zeroing-dose-response).
Paper (docs/method.md#6-safety-neurons-and-ras): zeroing A_safe raises misalignment by 13.26 points
and lowers math accuracy by 18.19, against -2.19 and -7.32 for random neurons.

Outputs: results/neurons/{model}/zeroing.parquet (one row per prompt and condition, every
response kept, with the condition's neuron_family and zeroed_neurons) and zeroing_summary.parquet
(rates per condition with bootstrap intervals, each condition's paired change from no
intervention over the same prompts, and the dose-response rows: statistic dose_change per
neuron family and number of neurons zeroed, random draws pooled).

Standalone:
    python scripts/zero_neurons.py --model smollm2 --reference results/models/smollm2/aligned.json \\
        --sets results/neurons/smollm2/neuron_sets.parquet --scores results/neurons/smollm2/neuron_scores.parquet \\
        --output /tmp/zeroing.parquet \\
        --summary /tmp/zeroing_summary.parquet
"""

import pandas as pd

from rim import cli
from rim.evaluation import EvaluationSettings, evaluate_prompts, select_prompts, summarize
from rim.models import load_model
from rim.neurons import dose_conditions, dose_response, paired_changes, zeroing_conditions, zeroing_params
from rim.prompts import prompt_mode
from rim.provenance import collect, read_table, write_table


def run(job: cli.Job) -> None:
    params, model = job.params, job.wildcards["model"]
    block = params["zeroing"]
    sets = read_table(job.input["sets"])
    chosen = zeroing_conditions(sets, int(block["random_draws"]))
    sizes = block.get("sizes") or []
    if sizes:
        chosen.update(
            dose_conditions(
                read_table(job.input["scores"]), sizes, int(block["random_draws"]), int(block.get("random_seed", 0))
            )
        )
    size = int((sets["neuron_set"] == "safety").sum())
    loaded = load_model(str(job.input["reference"]), device=params.get("device", "auto"))
    mode = prompt_mode(block["mode"], params["mode"])
    frames = []
    for prompt_set, entry in params["prompt_sets"].items():
        settings = EvaluationSettings.from_params(
            entry,
            name=prompt_set,
            generation=params["generation"],
            judges=params["judges"][prompt_set],
            device=params.get("device", "auto"),
        )
        table_path = str(job.input[f"table_{prompt_set}"])
        prompts = select_prompts(read_table(table_path), settings, source=table_path)
        for number, (name, condition) in enumerate(chosen.items(), start=1):
            cli.log.info(
                "%s: %d prompts, condition %d of %d: %s (%d neurons zeroed)",
                prompt_set,
                len(prompts),
                number,
                len(chosen),
                name,
                condition.size,
            )
            ablation = {"zero_neurons": condition.zero} if condition.zero else None
            frame = evaluate_prompts(loaded, prompts, mode, settings, ablation=ablation)
            frames.append(frame.assign(condition=name, neuron_family=condition.family, zeroed_neurons=condition.size))
    frame = pd.concat(frames, ignore_index=True)
    frame.insert(0, "model", model)
    provenance = collect(block, model=model, set_size=size, prompt_sets=params["prompt_sets"])
    write_table(frame, job.output["table"], provenance)
    rates = summarize(frame, by=["model", "condition", "prompt_set", "kind", "mode"], outcomes=params.get("outcomes"))
    rates = rates.assign(statistic="rate")
    changes = paired_changes(frame, outcomes=params.get("outcomes")).assign(model=model, mode=mode.name)
    doses = dose_response(frame, chosen, outcomes=params.get("outcomes")).assign(model=model, mode=mode.name)
    summary = pd.concat([rates, changes, doses], ignore_index=True)
    write_table(summary, job.output["summary"], provenance)
    for _, row in doses[doses["metric"].isin(["misalignment_rate", "math_accuracy"])].iterrows():
        cli.log.info(
            "%s %s, %d neurons zeroed (%d draws) %s: change %+.3f [%.3f, %.3f]",
            row["prompt_set"],
            row["neuron_family"],
            row["zeroed_neurons"],
            row["draws"],
            row["metric"],
            row["value"],
            row["ci_low"],
            row["ci_high"],
        )


def build_job(argv=None) -> cli.Job:
    from rim.config import load_config

    parser = cli.standalone_parser(__doc__)
    parser.add_argument("--model", required=True, help="model name under 'models' in the config")
    parser.add_argument("--reference", required=True, help="the base model's reference (JSON)")
    parser.add_argument("--sets", required=True, help="neuron_sets.parquet of the model")
    parser.add_argument(
        "--scores", required=True, help="neuron_scores.parquet of the model (the dose-response's top-k sets)"
    )
    parser.add_argument("--results", default="results", help="folder holding data/")
    parser.add_argument("--output", required=True, help="per-prompt parquet file to write")
    parser.add_argument("--summary", required=True, help="summary parquet file to write")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    params = {**zeroing_params(config), "device": config.get("device", "auto")}
    tables = {
        f"table_{name}": f"{args.results}/data/{entry['dataset']}.parquet"
        for name, entry in params["prompt_sets"].items()
    }
    return cli.Job(
        input={"reference": args.reference, "sets": args.sets, "scores": args.scores, **tables},
        output={"table": args.output, "summary": args.summary},
        params=params,
        wildcards={"model": args.model},
        threads=args.threads,
        log_path=args.log,
    )


if __name__ == "__main__":
    cli.main(run, build_job, globals())
