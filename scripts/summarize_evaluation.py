#!/usr/bin/env python
"""Summarize per-prompt evaluation tables (results/eval/summary.parquet, results/eval/contrasts.parquet).

summary: one row per (model, checkpoint, run, seed, step, prompt set, mode, metric, judge) with
the rate or mean, its percentile bootstrap interval over prompts and the counts (misalignment,
refusal and over-refusal rates, math accuracy, mean first-token refusal score, unparseable judge
answers). contrasts: paired differences between modes on the same prompts (thinking ON - OFF,
each reasoning pattern's target - control). See rim.evaluation.summary.

Standalone:
    python scripts/summarize_evaluation.py --output /tmp/summary.parquet \\
        --contrasts /tmp/contrasts.parquet results/eval/smollm2/base/*/*.parquet
"""

from rim import cli
from rim.config import load_config
from rim.evaluation.summary import contrasts, read_tables, summarize
from rim.provenance import collect, write_table


def run(job: cli.Job) -> None:
    bootstrap = dict(job.params["bootstrap"])
    tables = job.input["tables"]
    paths = [str(tables)] if isinstance(tables, str) else [str(path) for path in tables]
    frame = read_tables(paths)
    cli.log.info("%d tables, %d per-prompt rows", len(paths), len(frame))
    outcomes = dict(job.params.get("outcomes") or {})
    provenance = collect({"bootstrap": bootstrap, "outcomes": outcomes}, seed=bootstrap.get("seed"), tables=len(paths))
    summary = summarize(frame, **bootstrap, outcomes=outcomes)
    write_table(summary, job.output["summary"], provenance)
    paired = contrasts(frame, **bootstrap, outcomes=outcomes)
    write_table(paired, job.output["contrasts"], provenance)
    cli.log.info("summary: %d rows; contrasts: %d rows", len(summary), len(paired))


def build_job(argv=None) -> cli.Job:
    parser = cli.standalone_parser(__doc__)
    parser.add_argument("tables", nargs="+", help="per-prompt evaluation tables")
    parser.add_argument("--output", required=True, help="summary parquet to write")
    parser.add_argument("--contrasts", required=True, help="contrasts parquet to write")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    return cli.Job(
        input={"tables": args.tables},
        output={"summary": args.output, "contrasts": args.contrasts},
        params={"bootstrap": config["evaluation"]["bootstrap"]},
        threads=args.threads,
        log_path=args.log,
    )


if __name__ == "__main__":
    cli.main(run, build_job, globals())
