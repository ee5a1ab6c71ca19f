#!/usr/bin/env python
"""Align a model before the study (docs/method.md#1-the-phenomenon): teach it to refuse harmful requests.

Supervised fine-tuning on the train split of the harmful set, each request paired with a short
refusal, and of the harmless set (lookalikes included), each paired with its helpful answer;
loss on the answer tokens only. Writes the aligned model directory and its model reference
(results/models/<model>/aligned.json), which every later step studies. The resumable trainer
state lives in --state-dir until the job completes, so a killed job resumes where it stopped.

Standalone:
    python scripts/align.py --model smollm2 --output results/models/smollm2/aligned.json
"""

from pathlib import Path

from rim import cli
from rim.config import load_config
from rim.data.sources import refusals_path
from rim.training.runs import align_model


def run(job: cli.Job) -> None:
    reference = align_model(
        model=job.wildcards["model"],
        block=job.params["alignment"],
        source_reference=job.input["source"],
        harmful=job.input["harmful"],
        harmless=job.input["harmless"],
        refusals=job.input["refusals"],
        output_reference=job.output["reference"],
        output_dir=job.output["weights"],
        state_dir=job.params["state_dir"],
        device=job.params["device"],
    )
    cli.log.info(
        "aligned model %s at %s (step %d)", reference["name"], job.output["reference"], reference["alignment"]["step"]
    )


def build_job(argv=None) -> cli.Job:
    parser = cli.standalone_parser(__doc__)
    parser.add_argument("--model", required=True, help="model name under 'models' in the config")
    parser.add_argument(
        "--output", required=True, help="aligned reference JSON to write (weights go beside it, in aligned/)"
    )
    parser.add_argument("--source", default=None, help="source reference (default: results/models/<model>/source.json)")
    parser.add_argument("--data", default="results/data", help="folder of the prepared dataset tables")
    parser.add_argument(
        "--state-dir", default=None, help="resumable trainer state (default: results/.training_state/align/<model>)"
    )
    args = parser.parse_args(argv)
    config = load_config(args.config)
    block = cli.config_entry(config, "models", args.model)["alignment"]
    output = Path(args.output)
    return cli.Job(
        input={
            "source": args.source or f"results/models/{args.model}/source.json",
            "harmful": f"{args.data}/{block['harmful']}.parquet",
            "harmless": f"{args.data}/{block['harmless']}.parquet",
            "refusals": str(refusals_path(block["refusals"])),
        },
        output={"reference": str(output), "weights": str(output.with_suffix(""))},
        params={
            "alignment": block,
            "device": config["device"],
            "state_dir": args.state_dir or f"results/.training_state/align/{args.model}",
        },
        wildcards={"model": args.model},
        threads=args.threads,
        log_path=args.log,
    )


if __name__ == "__main__":
    cli.main(run, build_job, globals())
