#!/usr/bin/env python
"""Causal test of the refusal heads on one checkpoint (docs/method.md#5-refusal-heads).

The top-k refusal heads (highest shares in refusal_heads.parquet) are zeroed -- or mean-ablated --
during generation: their slices of the input of the attention output projection
(rim.hooks.ablate). Controls: the same number of random heads in the same layers, in several seeded
draws, and no intervention. Every condition runs the same prompts through rim.evaluation (same
generation and judges as the evaluation stage), in each configured prompt mode.

Outputs: results/heads/{model}/{ckpt}/head_ablation.parquet (one row per prompt, mode and
condition, responses kept) and head_ablation_summary.parquet (rates per condition with bootstrap
intervals; each condition's paired change from no intervention; the refusal heads' change minus
the random heads' average change).

Standalone:
    python scripts/ablate_refusal_heads.py --reference results/models/smollm2/source.json \\
        --heads results/heads/smollm2/base/refusal_heads.parquet --output /tmp/ablation.parquet \\
        --summary /tmp/ablation_summary.parquet
"""

import pandas as pd

from rim import cli
from rim.evaluation import EvaluationSettings, evaluate_prompts, summarize
from rim.heads import (
    ablation_conditions,
    ablation_effects,
    heads_label,
    mean_head_inputs,
    select_head_prompts,
    top_refusal_heads,
)
from rim.heads_settings import ablation_params
from rim.hooks import units_by_layer
from rim.models import load_model
from rim.positions import label_prompt
from rim.prompts import prompt_mode
from rim.provenance import collect, read_table, write_table


def ablation_kwargs(heads, method: str, means) -> dict | None:
    """Keyword arguments of rim.hooks.ablate for a set of (layer, head); None for no intervention."""
    if not heads:
        return None
    grouped = units_by_layer(heads)
    if method == "mean":
        return {"mean_heads": grouped, "head_means": means}
    return {"zero_heads": grouped}


def run(job: cli.Job) -> None:
    params, wildcards = job.params, job.wildcards
    block = params["ablation"]
    identity = {"model": wildcards["model"], "checkpoint": wildcards["ckpt"]}
    scores = read_table(job.input["heads"])
    heads = top_refusal_heads(
        scores,
        int(block["top_k"]),
        float(block["min_share"]),
        keep_previous_token_heads=bool(block.get("keep_previous_token_heads", False)),
    )
    provenance = collect(
        {
            "ablation": block,
            "prompt_set": params["prompt_set"],
            "generation": params["generation"],
            "judges": params["judges"],
        },
        seed=block["seed"],
        **identity,
        refusal_heads=heads_label(heads),
    )
    if not heads:
        cli.log.warning("no head shows the refusal-head move on %s: nothing to ablate", wildcards["ckpt"])
        write_table(
            pd.DataFrame(columns=["model", "checkpoint", "condition", "mode", "prompt_id"]),
            job.output["table"],
            provenance,
        )
        write_table(
            pd.DataFrame(columns=["model", "checkpoint", "statistic", "condition", "mode", "metric", "value"]),
            job.output["summary"],
            provenance,
        )
        return
    device = params.get("device", "auto")
    loaded = load_model(str(job.input["reference"]), step=params.get("checkpoint_step"), device=device)
    conditions = ablation_conditions(
        heads, loaded.adapter.num_heads(loaded.model), int(block["random_draws"]), int(block["seed"])
    )
    for name, chosen in conditions.items():
        cli.log.info("condition %s: %s", name, heads_label(chosen) or "no intervention")
    prompt_set = params["prompt_set"]
    settings = EvaluationSettings.from_params(
        prompt_set, name=prompt_set["name"], generation=params["generation"], judges=params["judges"], device=device
    )
    prompts = select_head_prompts(str(job.input["table"]), prompt_set)
    frames = []
    for name in block["modes"]:
        mode = prompt_mode(name, params["modes"][name])
        means = None
        if block["method"] == "mean":
            labelled = [label_prompt(loaded.adapter, loaded.tokenizer, user, mode) for user in prompts["prompt"]]
            means = mean_head_inputs(loaded, labelled)
        for condition, chosen in conditions.items():
            frame = evaluate_prompts(
                loaded, prompts, mode, settings, ablation=ablation_kwargs(chosen, block["method"], means)
            )
            frames.append(
                frame.assign(
                    condition=condition,
                    ablated_heads=heads_label(chosen),
                    n_ablated=len(chosen),
                    method=block["method"],
                )
            )
    frame = pd.concat(frames, ignore_index=True)
    for position, (column, value) in enumerate(identity.items()):
        frame.insert(position, column, value)
    write_table(frame, job.output["table"], provenance)
    n_boot, seed = int(block["n_boot"]), int(block["seed"])
    rates = summarize(
        frame,
        by=["model", "checkpoint", "condition", "mode"],
        n_boot=n_boot,
        seed=seed,
        outcomes=params.get("outcomes"),
    ).assign(statistic="rate")
    effects = ablation_effects(frame, n_boot=n_boot, seed=seed, outcomes=params.get("outcomes")).assign(**identity)
    summary = pd.concat([rates, effects], ignore_index=True)
    write_table(summary, job.output["summary"], provenance)
    shown = effects[effects["condition"].isin(["refusal_heads", "random_heads", "refusal_minus_random"])]
    for row in shown.itertuples():
        cli.log.info(
            "%s %s %s (%s): %+.3f [%.3f, %.3f]",
            row.mode,
            row.condition,
            row.metric,
            row.judge,
            row.value,
            row.ci_low,
            row.ci_high,
        )


def build_job(argv=None) -> cli.Job:
    from rim.config import load_config

    parser = cli.standalone_parser(__doc__)
    parser.add_argument("--reference", required=True, help="model reference JSON (source, aligned, or a run manifest)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step of a run manifest")
    parser.add_argument("--checkpoint", default="base", help="checkpoint id written into the tables")
    parser.add_argument("--model", default="smollm2", help="model name written into the tables")
    parser.add_argument("--heads", required=True, help="refusal_heads.parquet of the same checkpoint")
    parser.add_argument("--results", default="results", help="folder holding data/")
    parser.add_argument("--output", required=True, help="per-prompt parquet file to write")
    parser.add_argument("--summary", required=True, help="summary parquet file to write")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    params = ablation_params(config)
    return cli.Job(
        input={
            "reference": args.reference,
            "heads": args.heads,
            "table": f"{args.results}/data/{params['prompt_set']['dataset']}.parquet",
        },
        output={"table": args.output, "summary": args.summary},
        params={**params, "checkpoint_step": args.step, "device": config["device"]},
        wildcards={"model": args.model, "ckpt": args.checkpoint},
        threads=args.threads,
        log_path=args.log,
    )


if __name__ == "__main__":
    cli.main(run, build_job, globals())
