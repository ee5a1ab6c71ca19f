#!/usr/bin/env python
"""Head-patching scan on one checkpoint (docs/method.md#5-refusal-heads, decision: our scan beyond the paper).

For each source/target pair in the config (e.g. thinking OFF patched into thinking ON, or the base
model patched into this checkpoint) and every (layer, head): the change of the target's refusal
score where its answer starts (after the model's own reasoning with thinking ON) when that head's
output is taken from the source run, averaged over the prompts with a bootstrap interval.
Methods: ``exact`` (equal to one forward pass per head, but only recomputing what a head can
change), ``attribution`` (gradient x activation difference, one forward and one backward pass per
batch), ``naive`` (the loop itself, for checking).

Output: results/heads/{model}/{ckpt}/head_patching.parquet, one row per (pair, method, layer, head).

Standalone:
    python scripts/patch_heads.py --reference results/models/smollm2/source.json --output /tmp/patching.parquet
"""

import time

import numpy as np
import pandas as pd

from rim import cli, patching
from rim.heads import heads_label, select_head_prompts
from rim.models import load_model
from rim.evaluation.core import answer_contexts
from rim.prompts import prompt_mode, render
from rim.errors import RimError
from rim.heads_settings import patching_params
from rim.provenance import collect, write_table

SCANS = {"exact": patching.exact_scan, "attribution": patching.attribution_scan, "naive": patching.naive_scan}


def resolve(side: dict, ckpt: str) -> str:
    """The checkpoint id a pair's side runs on."""
    return ckpt if side.get("checkpoint", "scanned") == "scanned" else "base"


def answer_positions(source, target, users: list[str], thinking_tokens: int, batch: int):
    """Token ids of each side, ending where its answer starts (docs/method.md#answers): the
    prompt, plus for a thinking-ON side the model's own reasoning; the indices of the prompts
    kept (those whose every side reaches an answer)."""
    sides = []
    for lm, mode in (source, target):
        texts = [render(lm.adapter, lm.tokenizer, user, mode) for user in users]
        sides.append((lm, answer_contexts(lm, texts, mode, thinking_tokens=thinking_tokens, batch_size=batch)))
    kept = [i for i in range(len(users)) if all(contexts[i] is not None for _, contexts in sides)]
    ids = [[lm.tokenizer(contexts[i], add_special_tokens=False)["input_ids"] for i in kept] for lm, contexts in sides]
    return ids[0], ids[1], kept


def run(job: cli.Job) -> None:
    params, wildcards = job.params, job.wildcards
    block, ckpt = params["patching"], wildcards["ckpt"]
    device = params.get("device", "auto")
    models = {}
    if "base" in job.input and ckpt != "base":
        # A pair runs on the base model: read it once; the scanned checkpoint is merged into a copy.
        models["base"] = load_model(str(job.input["base"]), device=device)
    models[ckpt] = load_model(
        str(job.input["reference"]), step=params.get("checkpoint_step"), device=device, base=models.get("base")
    )
    prompts = select_head_prompts(str(job.input["table"]), params["prompt_set"])
    users = prompts["prompt"].tolist()
    cli.log.info(
        "%d prompts of %s; pairs: %s; methods: %s",
        len(users),
        params["prompt_set"]["name"],
        ", ".join(block["pairs"]),
        ", ".join(block["methods"]),
    )
    frames = []
    for pair, spec in block["pairs"].items():
        source_ckpt, target_ckpt = resolve(spec["source"], ckpt), resolve(spec["target"], ckpt)
        if source_ckpt == target_ckpt and spec["source"]["mode"] == spec["target"]["mode"]:
            cli.log.info("pair %s: source and target coincide on %s, skipped", pair, ckpt)
            continue
        for side_ckpt in (source_ckpt, target_ckpt):
            if side_ckpt not in models:
                if "base" not in job.input:
                    raise RimError(f"patching pair '{pair}' runs on the base model: give its reference (--base)")
                models[side_ckpt] = load_model(str(job.input["base"]), device=device)
        source_lm, target_lm = models[source_ckpt], models[target_ckpt]
        source_mode = prompt_mode(spec["source"]["mode"], params["modes"][spec["source"]["mode"]])
        target_mode = prompt_mode(spec["target"]["mode"], params["modes"][spec["target"]["mode"]])
        positions, batch = spec["positions"], int(block["batch_size"])
        sources, targets, kept = answer_positions(
            (source_lm, source_mode), (target_lm, target_mode), users, int(block["thinking_tokens"]), batch
        )
        if not kept:
            cli.log.warning(
                "pair %s: no prompt reached an answer within %d tokens of reasoning, skipped",
                pair,
                block["thinking_tokens"],
            )
            continue
        if len(kept) < len(users):
            cli.log.info(
                "pair %s: %d of %d prompts reached an answer within %d tokens of reasoning",
                pair,
                len(kept),
                len(users),
                block["thinking_tokens"],
            )
        refusal = target_lm.adapter.refusal_token_ids(target_lm.tokenizer)
        source_inputs = patching.head_inputs(source_lm, sources, positions, batch_size=batch)
        source_score = patching.refusal_scores(source_lm, sources, refusal, batch_size=batch)
        target_score = patching.refusal_scores(target_lm, targets, refusal, batch_size=batch)
        for method in block["methods"]:
            progress = cli.Progress(len(targets), f"{pair} {method}", unit="prompts")
            options = (
                {"head_batch": int(block["head_batch"])}
                if method == "exact"
                else ({"batch_size": batch} if method == "attribution" else {})
            )
            started = time.perf_counter()
            effects = SCANS[method](target_lm, targets, source_inputs, refusal, positions, progress=progress, **options)
            seconds = time.perf_counter() - started
            summary = patching.scan_summary(effects, n_boot=int(block["n_boot"]), seed=int(block["seed"]))
            frames.append(
                summary.assign(
                    pair=pair,
                    method=method,
                    source_mode=source_mode.name,
                    target_mode=target_mode.name,
                    source_checkpoint=source_ckpt,
                    target_checkpoint=target_ckpt,
                    positions=positions,
                    mean_source_score=float(np.mean(source_score)),
                    mean_target_score=float(np.mean(target_score)),
                    seconds=seconds,
                )
            )
            top = summary.reindex(summary["effect"].abs().sort_values(ascending=False).index).head(5)
            cli.log.info(
                "%s %s (%.1f s): largest effects %s",
                pair,
                method,
                seconds,
                ", ".join(f"{heads_label([(r.layer, r.head)])} {r.effect:+.3f}" for r in top.itertuples()),
            )
    columns = [
        "pair",
        "method",
        "source_mode",
        "target_mode",
        "source_checkpoint",
        "target_checkpoint",
        "positions",
        "layer",
        "head",
        "effect",
        "ci_low",
        "ci_high",
        "n_prompts",
        "mean_source_score",
        "mean_target_score",
        "seconds",
    ]
    frame = pd.concat(frames, ignore_index=True)[columns] if frames else pd.DataFrame(columns=columns)
    frame.insert(0, "checkpoint", ckpt)
    frame.insert(0, "model", wildcards["model"])
    provenance = collect(
        {"patching": block, "prompt_set": params["prompt_set"]},
        seed=block["seed"],
        model=wildcards["model"],
        checkpoint=ckpt,
        reference=models[ckpt].reference,
    )
    write_table(frame, job.output["table"], provenance)


def build_job(argv=None) -> cli.Job:
    from rim.config import load_config

    parser = cli.standalone_parser(__doc__)
    parser.add_argument("--reference", required=True, help="model reference JSON of the scanned checkpoint")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step of a run manifest")
    parser.add_argument("--checkpoint", default="base", help="checkpoint id of the scanned model")
    parser.add_argument("--base", default=None, help="the base model's reference (pairs with checkpoint: base)")
    parser.add_argument("--model", default="smollm2", help="model name written into the table")
    parser.add_argument("--results", default="results", help="folder holding data/")
    parser.add_argument("--output", required=True, help="parquet file to write")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    params = patching_params(config)
    inputs = {"reference": args.reference, "table": f"{args.results}/data/{params['prompt_set']['dataset']}.parquet"}
    if args.base:
        inputs["base"] = args.base
    return cli.Job(
        input=inputs,
        output={"table": args.output},
        params={**params, "checkpoint_step": args.step, "device": config["device"]},
        wildcards={"model": args.model, "ckpt": args.checkpoint},
        threads=args.threads,
        log_path=args.log,
    )


if __name__ == "__main__":
    cli.main(run, build_job, globals())
