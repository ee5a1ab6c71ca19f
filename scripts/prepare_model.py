#!/usr/bin/env python
"""Make a configured model loadable and write its model reference (results/models/<model>/source.json).

The embedded SmolLM2 GGUF is de-quantized once into a float32 safetensors directory beside the
reference; local directories and hub ids are checked (a hub that cannot be reached is reported,
naming the model) and referenced where they are.

Standalone:
    python scripts/prepare_model.py --model smollm2 --output results/models/smollm2/source.json
"""

from rim import cli
from rim.config import load_config
from rim.models.loading import prepare_model


def run(job: cli.Job) -> None:
    reference = prepare_model(job.wildcards["model"], job.params["model"], job.output["reference"])
    cli.log.info(
        "model %s: family %s, %s at %s", reference["name"], reference["family"], reference["kind"], reference["path"]
    )


def build_job(argv=None) -> cli.Job:
    parser = cli.standalone_parser(__doc__)
    parser.add_argument("--model", required=True, help="model name under 'models' in the config")
    parser.add_argument("--output", required=True, help="path of the reference JSON to write")
    args = parser.parse_args(argv)
    entry = cli.config_entry(load_config(args.config), "models", args.model)
    return cli.Job(
        input={},
        output={"reference": args.output},
        params={"model": entry},
        wildcards={"model": args.model},
        threads=args.threads,
        log_path=args.log,
    )


if __name__ == "__main__":
    cli.main(run, build_job, globals())
