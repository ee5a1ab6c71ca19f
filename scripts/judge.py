#!/usr/bin/env python
"""Judge one responses table: results/responses/... -> results/eval/{model}/{ckpt}/{promptset}/{mode}.parquet.

Adds the verdicts of the enabled judges that apply to the prompt set's kind (refusal phrases,
rubric LLM judge, local classifier) and, on math sets, the extracted answer and whether it is
correct; one row per prompt, with the full response, so every verdict can be checked by reading
it (docs/method.md#3-judging). No model is loaded unless a model judge is enabled.

Standalone (settings from the config file):
    python scripts/judge.py --prompt-set harmful \\
        --responses results/responses/smollm2/base/harmful/no_think.parquet --output /tmp/judged.parquet
"""

from rim import cli
from rim.evaluation.jobs import judge_table


def run(job: cli.Job) -> None:
    judge_table(str(job.input["responses"]), job.params, job.output["table"], device=job.params.get("device", "auto"))


def build_job(argv=None) -> cli.Job:
    from rim.config import load_config
    from rim.evaluation.settings import applicable_judges

    parser = cli.standalone_parser(__doc__)
    parser.add_argument("--responses", required=True, help="responses table (scripts/generate.py)")
    parser.add_argument("--prompt-set", required=True, help="name under evaluation.prompt_sets in the config")
    parser.add_argument("--output", required=True, help="parquet file to write")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    entry = cli.config_entry(config["evaluation"], "prompt_sets", args.prompt_set)
    return cli.Job(
        input={"responses": args.responses},
        output={"table": args.output},
        params={
            "prompt_set": {"name": args.prompt_set, **entry},
            "judges": applicable_judges(config["evaluation"].get("judges", {}), entry["kind"]),
            "device": config["device"],
        },
        wildcards={"promptset": args.prompt_set},
        threads=args.threads,
        log_path=args.log,
    )


if __name__ == "__main__":
    cli.main(run, build_job, globals())
