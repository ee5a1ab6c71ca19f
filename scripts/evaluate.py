#!/usr/bin/env python
"""Evaluate one prompt set in one prompt mode on one checkpoint, generation and judging in one go.

The workflow splits the two (scripts/generate.py or generate_and_dump.py, then judge.py) and
writes the same table, results/eval/{model}/{ckpt}/{promptset}/{mode}.parquet; this script is for
a one-off evaluation outside it.

Batched greedy generation with the enabled judges (refusal phrases, first-token refusal score,
rubric LLM judge, local classifier) and, for math sets, exact-match accuracy. One row per prompt,
with the full response, so every verdict can be checked by reading it (docs/method.md#1-the-phenomenon, #3-judging).

Standalone (settings from the config file):
    python scripts/evaluate.py --reference results/models/smollm2/source.json \\
        --prompt-set harmful --mode no_think --output /tmp/harmful_no_think.parquet
    python scripts/evaluate.py --reference results/finetune/smollm2/gsm8k/seed0/run.json --step 40 \\
        --checkpoint gsm8k/seed0/step40 --prompt-set multiarith --mode think --output /tmp/math.parquet
"""

from pathlib import Path

from rim import cli
from rim.config import load_config
from rim.evaluation import EvaluationSettings, evaluate_prompts, select_prompts
from rim.evaluation.jobs import log_rates
from rim.evaluation.settings import ckpt_fields
from rim.models import load_model
from rim.prompts import prompt_mode
from rim.provenance import collect, read_table, write_table


def run(job: cli.Job) -> None:
    params, wildcards = job.params, job.wildcards
    settings = EvaluationSettings.from_params(
        params["prompt_set"],
        name=wildcards["promptset"],
        generation=params["generation"],
        judges=params["judges"],
        device=params.get("device", "auto"),
    )
    mode = prompt_mode(wildcards["mode"], params["mode"])
    table_path = str(job.input["table"])
    prompts = select_prompts(read_table(table_path), settings, source=table_path)
    loaded = load_model(str(job.input["reference"]), step=params.get("checkpoint_step"), device=settings.device)
    cli.log.info(
        "%s at %s: %d prompts of %s in mode %s, judges %s",
        wildcards["model"],
        wildcards["ckpt"],
        len(prompts),
        settings.prompt_set,
        mode.name,
        ", ".join(settings.judges) or "none",
    )
    frame = evaluate_prompts(loaded, prompts, mode, settings)
    identity = {"model": wildcards["model"], **ckpt_fields(wildcards["ckpt"])}
    frame.insert(0, "dataset", params["prompt_set"]["dataset"])
    for position, (column, value) in enumerate(identity.items()):
        frame.insert(position, column, value)
    frame["seed"] = frame["seed"].astype("Int64")
    provenance = collect(
        {key: params[key] for key in ("prompt_set", "mode", "generation", "judges")},
        seed=identity["seed"],
        model=wildcards["model"],
        checkpoint=wildcards["ckpt"],
        reference=loaded.reference,
    )
    write_table(frame, job.output["table"], provenance)
    log_rates(frame)


def _checkpoint_id(reference: str, step: int | None) -> str:
    """base, or <run>/seed<seed>/step<step> read from a manifest path .../<run>/seed<seed>/run.json."""
    if step is None:
        return "base"
    parts = Path(reference).parts
    if len(parts) >= 3 and parts[-2].startswith("seed") and parts[-2][4:].isdigit():
        return f"{parts[-3]}/{parts[-2]}/step{step}"
    raise SystemExit(
        f"error: name the checkpoint with --checkpoint <run>/seed<seed>/step{step} (not found in {reference})"
    )


def build_job(argv=None) -> cli.Job:
    parser = cli.standalone_parser(__doc__)
    parser.add_argument("--reference", required=True, help="model reference JSON (source, aligned, or a run manifest)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step of a run manifest")
    parser.add_argument(
        "--checkpoint", default=None, help="checkpoint id for the table (default: base, or step<step>/...)"
    )
    parser.add_argument("--model", default=None, help="model name for the table (default: the reference's name)")
    parser.add_argument("--prompt-set", required=True, help="name under evaluation.prompt_sets in the config")
    parser.add_argument("--mode", required=True, help="name under prompt_modes in the config")
    parser.add_argument(
        "--table", default=None, help="prepared dataset table (default: results/data/<dataset>.parquet)"
    )
    parser.add_argument("--output", required=True, help="parquet file to write")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    prompt_set = cli.config_entry(config["evaluation"], "prompt_sets", args.prompt_set)
    mode = cli.config_entry(config, "prompt_modes", args.mode)
    settings = EvaluationSettings.from_config(config, args.prompt_set)
    checkpoint = args.checkpoint or _checkpoint_id(args.reference, args.step)
    model = args.model
    if model is None:
        from rim.models import read_reference

        model = read_reference(args.reference, args.step)["name"]
    return cli.Job(
        input={"reference": args.reference, "table": args.table or f"results/data/{prompt_set['dataset']}.parquet"},
        output={"table": args.output},
        params={
            "checkpoint_step": args.step,
            "prompt_set": {"name": args.prompt_set, **prompt_set},
            "mode": mode,
            "generation": config["evaluation"]["generation"],
            "judges": settings.judges,
            "device": config["device"],
        },
        wildcards={"model": model, "ckpt": checkpoint, "promptset": args.prompt_set, "mode": args.mode},
        threads=args.threads,
        log_path=args.log,
    )


if __name__ == "__main__":
    cli.main(run, build_job, globals())
