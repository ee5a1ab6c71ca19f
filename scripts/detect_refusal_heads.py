#!/usr/bin/env python
"""Refusal-head detection on one checkpoint (docs/method.md#5-refusal-heads).

Every harmful prompt runs with thinking ON and OFF; for each head, the key position that the last
prompt token (the one predicting the first generated token) attends to most is named by its
region (rim.positions). A head's score is the share of prompts whose argmax shows the configured
move (heads.detection.move: header -> empty think span for native think modes, header -> reasoning
opener for prefilled ones).

Outputs: results/heads/{model}/{ckpt}/refusal_heads.parquet (one row per layer and head: share
with its bootstrap interval, counts, rank; ready for the bubble map) and attention_argmax.parquet
(one row per prompt, mode, layer and head: the argmax position and its region).

Standalone:
    python scripts/detect_refusal_heads.py --reference results/models/smollm2/source.json \\
        --output /tmp/refusal_heads.parquet --argmax /tmp/attention_argmax.parquet
"""

import pandas as pd

from rim import cli
from rim.heads import (
    argmax_table,
    attention_argmax,
    heads_label,
    refusal_head_scores,
    region_move,
    select_head_prompts,
    top_refusal_heads,
)
from rim.models import load_model
from rim.positions import label_prompt
from rim.prompts import prompt_mode
from rim.heads_settings import detection_params
from rim.provenance import collect, write_table


def run(job: cli.Job) -> None:
    params, wildcards = job.params, job.wildcards
    detection = params["detection"]
    loaded = load_model(
        str(job.input["reference"]), step=params.get("checkpoint_step"), device=params.get("device", "auto")
    )
    move = region_move(loaded.adapter, detection["move"])
    prompts = select_head_prompts(str(job.input["table"]), params["prompt_set"])
    ids = prompts["prompt_id"].astype(str).tolist()
    cli.log.info("%d prompts of %s; refusal-head move: %s", len(prompts), params["prompt_set"]["name"], move.describe())
    tables = []
    for key in ("on_mode", "off_mode"):
        mode = prompt_mode(detection[key], params["modes"][detection[key]])
        labelled = [label_prompt(loaded.adapter, loaded.tokenizer, user, mode) for user in prompts["prompt"]]
        progress = cli.Progress(len(labelled), f"attention argmax ({mode.name})", unit="prompts")
        keys = attention_argmax(loaded, labelled, batch_size=int(detection["batch_size"]), progress=progress)
        tables.append(argmax_table(ids, mode.name, labelled, keys))
    argmax = pd.concat(tables, ignore_index=True)
    scores = refusal_head_scores(
        argmax,
        detection["on_mode"],
        detection["off_mode"],
        move,
        count_query_token=bool(detection["count_query_token"]),
        n_boot=int(detection["n_boot"]),
        seed=int(detection["seed"]),
    )
    identity = {"model": wildcards["model"], "checkpoint": wildcards["ckpt"]}
    provenance = collect(
        {"detection": detection, "prompt_set": params["prompt_set"]},
        seed=detection["seed"],
        **identity,
        reference=loaded.reference,
        move=move.describe(),
    )
    write_table(scores.assign(**identity), job.output["scores"], provenance)
    write_table(argmax.assign(**identity), job.output["argmax"], provenance)
    top = top_refusal_heads(scores, 9)
    shares = scores.set_index(["layer", "head"])["share"]
    cli.log.info(
        "top refusal heads: %s", ", ".join(f"{heads_label([h])} ({shares[h]:.2f})" for h in top) or "none moved"
    )
    local = scores[scores["previous_token_head"] & (scores["share"] > 0)].sort_values("rank").head(9)
    if len(local):
        cli.log.info(
            "previous-token heads that move (left out of the top heads by default): %s",
            ", ".join(
                f"{heads_label([(int(layer), int(head))])} ({share:.2f})"
                for layer, head, share in zip(local["layer"], local["head"], local["share"])
            ),
        )


def build_job(argv=None) -> cli.Job:
    from rim.config import load_config

    parser = cli.standalone_parser(__doc__)
    parser.add_argument("--reference", required=True, help="model reference JSON (source, aligned, or a run manifest)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step of a run manifest")
    parser.add_argument("--checkpoint", default="base", help="checkpoint id written into the tables")
    parser.add_argument("--model", default="smollm2", help="model name written into the tables")
    parser.add_argument("--results", default="results", help="folder holding data/")
    parser.add_argument("--output", required=True, help="refusal-head scores (parquet)")
    parser.add_argument("--argmax", required=True, help="per-prompt argmax table (parquet)")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    params = detection_params(config)
    return cli.Job(
        input={"reference": args.reference, "table": f"{args.results}/data/{params['prompt_set']['dataset']}.parquet"},
        output={"scores": args.output, "argmax": args.argmax},
        params={**params, "checkpoint_step": args.step, "device": config["device"]},
        wildcards={"model": args.model, "ckpt": args.checkpoint},
        threads=args.threads,
        log_path=args.log,
    )


if __name__ == "__main__":
    cli.main(run, build_job, globals())
