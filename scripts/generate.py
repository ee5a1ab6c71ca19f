#!/usr/bin/env python
"""Generate the responses of one prompt set in one prompt mode on one checkpoint.

Writes results/responses/{model}/{ckpt}/{promptset}/{mode}.parquet: one row per prompt with the
greedy response, where its answer starts and the refusal scores, before judging
(scripts/judge.py adds the verdicts). The workflow runs this for the tables that no
checkpoint job (scripts/generate_and_dump.py) writes: thinking ON, reasoning patterns, other
training sets (docs/method.md#1-the-phenomenon, #3-judging).

Standalone (settings from the config file):
    python scripts/generate.py --reference results/models/smollm2/aligned.json \\
        --prompt-set harmful --mode think --output /tmp/harmful_think.parquet
"""

from rim import cli
from rim.evaluation.jobs import generate_table
from rim.models import load_model


def run(job: cli.Job) -> None:
    params, wildcards = job.params, job.wildcards
    device = params.get("device", "auto")
    loaded = load_model(str(job.input["reference"]), step=params.get("checkpoint_step"), device=device)
    generate_table(
        loaded,
        params["generation"],
        model=wildcards["model"],
        ckpt=wildcards["ckpt"],
        dataset_table=str(job.input["table"]),
        output=job.output["table"],
        device=device,
    )


def build_job(argv=None) -> cli.Job:
    from rim.config import load_config
    from rim.models import read_reference
    from rim.planning import dataset_table, generation_params

    parser = cli.standalone_parser(__doc__)
    parser.add_argument("--reference", required=True, help="model reference JSON (source, aligned, or a run manifest)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step of a run manifest")
    parser.add_argument("--checkpoint", default="base", help="checkpoint id: base or <run>/seed<s>/step<n>")
    parser.add_argument("--model", default=None, help="model name for the table (default: the reference's name)")
    parser.add_argument("--prompt-set", required=True, help="name under evaluation.prompt_sets in the config")
    parser.add_argument("--mode", required=True, help="name under prompt_modes in the config")
    parser.add_argument("--table", default=None, help="dataset table (default: results/data/<dataset>.parquet)")
    parser.add_argument("--output", required=True, help="parquet file to write")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    prompt_set = cli.config_entry(config["evaluation"], "prompt_sets", args.prompt_set)
    cli.config_entry(config, "prompt_modes", args.mode)
    model = args.model or read_reference(args.reference, args.step)["name"]
    return cli.Job(
        input={"reference": args.reference, "table": args.table or dataset_table(prompt_set["dataset"])},
        output={"table": args.output},
        params={
            "checkpoint_step": args.step,
            "generation": generation_params(config, args.prompt_set, args.mode),
            "device": config["device"],
        },
        wildcards={"model": model, "ckpt": args.checkpoint, "promptset": args.prompt_set, "mode": args.mode},
        threads=args.threads,
        log_path=args.log,
    )


if __name__ == "__main__":
    cli.main(run, build_job, globals())
