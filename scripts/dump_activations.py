#!/usr/bin/env python
"""Dump the activations of one checkpoint to HDF5 (results/activations/{model}/{ckpt}.h5).

The workflow writes dumps in the job that generates the checkpoint's responses
(scripts/generate_and_dump.py); this script dumps a checkpoint whose responses exist already.
For each input set (an evaluation prompt set in one prompt mode) the model reads its prompts
followed by its own responses, taken from the responses table of the same checkpoint (no
generation here), and for the RAS inputs also followed by the base model's responses, from the
base model's responses table (the fixed-token variant); pooled MLP neuron activations, residual
states at named positions (for the sets named in activations.residual_inputs) and, on math
inputs, the KL to the base model are written batch by batch to a temporary file that is renamed
when complete (docs/method.md#6-safety-neurons-and-ras).

Standalone (settings from the config file):
    python scripts/dump_activations.py --model smollm2 --checkpoint base \\
        --reference results/models/smollm2/aligned.json --output /tmp/base.h5
    python scripts/dump_activations.py --model smollm2 --checkpoint gsm8k_style/seed0/step40 \\
        --reference results/finetune/smollm2/gsm8k_style/seed0/run.json \\
        --kl-reference /tmp/base.h5 --output /tmp/step40.h5
Responses tables are looked up under --results (default results/responses/).
"""

from rim import cli
from rim.activations.job import dump_checkpoint
from rim.checkpoints import parse_checkpoint
from rim.models import load_model


def run(job: cli.Job) -> None:
    params, wildcards = job.params, job.wildcards
    loaded = load_model(
        str(job.input["reference"]), step=params.get("checkpoint_step"), device=params.get("device", "auto")
    )
    kl_reference = job.input.get("kl_reference")
    dump_checkpoint(
        loaded,
        model=wildcards["model"],
        ckpt=wildcards["ckpt"],
        activations=params["activations"],
        inputs=params["inputs"],
        output=job.output["dump"],
        kl_reference=str(kl_reference) if kl_reference else None,
    )


def build_job(argv=None) -> cli.Job:
    from rim.config import load_config
    from rim.activations import dump_plan

    parser = cli.standalone_parser(__doc__)
    parser.add_argument("--model", required=True, help="model name under 'models' in the config")
    parser.add_argument("--checkpoint", default="base", help="base or <run>/seed<seed>/step<step>")
    parser.add_argument("--reference", required=True, help="model reference or training-run manifest (JSON)")
    parser.add_argument(
        "--kl-reference", default=None, help="the base model's dump (for the KL baseline of a checkpoint)"
    )
    parser.add_argument("--results", default="results", help="folder holding responses/ and data/")
    parser.add_argument("--output", required=True, help="HDF5 file to write")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    cli.config_entry(config, "models", args.model)
    run_name, _, number = parse_checkpoint(args.checkpoint)
    return cli.Job(
        input={"reference": args.reference, **({"kl_reference": args.kl_reference} if args.kl_reference else {})},
        output={"dump": args.output},
        params={
            "activations": config["activations"],
            "inputs": dump_plan(config, args.model, args.checkpoint, results=args.results),
            "checkpoint_step": None if run_name is None else number,
            "device": config.get("device", "auto"),
        },
        wildcards={"model": args.model, "ckpt": args.checkpoint},
        threads=args.threads,
        log_path=args.log,
    )


if __name__ == "__main__":
    cli.main(run, build_job, globals())
