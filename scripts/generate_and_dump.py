#!/usr/bin/env python
"""The model work on one dumped checkpoint, with the checkpoint loaded once: its responses, then its dump.

Writes results/responses/{model}/{ckpt}/{promptset}/{mode}.parquet for every (prompt set, mode)
of rim.planning.checkpoint_pairs (the checkpoint's own responses that its dump reads, and the
over-refusal input of RAS), then results/activations/{model}/{ckpt}.h5 from the tables just
written and, for the fixed-token input sets, from the base model's responses
(docs/method.md#6-safety-neurons-and-ras). Judging is a job of its own (scripts/judge.py): a judge
edit never regenerates or re-dumps.

Standalone (settings from the config file; tables under --results):
    python scripts/generate_and_dump.py --model smollm2 --checkpoint base \\
        --reference results/models/smollm2/aligned.json
    python scripts/generate_and_dump.py --model smollm2 --checkpoint gsm8k_style/seed0/step60 \\
        --reference results/finetune/smollm2/gsm8k_style/seed0/run.json
"""

from rim import cli
from rim.activations.job import dump_checkpoint
from rim.evaluation.jobs import generate_table
from rim.models import load_model


def run(job: cli.Job) -> None:
    params, wildcards = job.params, job.wildcards
    # The base model's rule has no {ckpt} wildcard.
    model, ckpt, device = wildcards["model"], wildcards.get("ckpt", "base"), params.get("device", "auto")
    loaded = load_model(str(job.input["reference"]), step=params.get("checkpoint_step"), device=device)
    for generation in params["generations"]:
        key = f"{generation['prompt_set']['name']}/{generation['mode']['name']}"
        generate_table(
            loaded,
            generation,
            model=model,
            ckpt=ckpt,
            dataset_table=params["dataset_tables"][key],
            output=job.output[f"responses_{key.replace('/', '__')}"],
            device=device,
        )
    kl_reference = job.input.get("kl_reference")
    dump_checkpoint(
        loaded,
        model=model,
        ckpt=ckpt,
        activations=params["activations"],
        inputs=params["inputs"],
        output=job.output["dump"],
        kl_reference=str(kl_reference) if kl_reference else None,
    )


def build_job(argv=None) -> cli.Job:
    from rim import planning
    from rim.config import load_config

    parser = cli.standalone_parser(__doc__)
    parser.add_argument("--model", required=True, help="model name under 'models' in the config")
    parser.add_argument("--checkpoint", default="base", help="base or <run>/seed<seed>/step<step>")
    parser.add_argument("--reference", required=True, help="model reference or training-run manifest (JSON)")
    parser.add_argument("--results", default="results", help="folder holding data/, responses/ and activations/")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    cli.config_entry(config, "models", args.model)
    job = planning.checkpoint_job(config, args.model, args.checkpoint, results=args.results)
    return cli.Job(
        input={"reference": args.reference, **job["input"]},
        output=job["output"],
        params=job["params"],
        wildcards={"model": args.model, "ckpt": args.checkpoint},
        threads=args.threads,
        log_path=args.log,
    )


if __name__ == "__main__":
    cli.main(run, build_job, globals())
