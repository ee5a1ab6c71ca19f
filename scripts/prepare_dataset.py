#!/usr/bin/env python
"""Prepare one dataset into a tidy parquet table (results/data/<dataset>.parquet).

Reads the source named in the dataset's config entry (embedded file, generator, local file or
hub dataset), maps its columns, checks every row (empty or duplicate prompts, non-numeric math
answers: an error naming the file and row) and assigns the deterministic train/eval split. A set
with `disjoint_from` drops the rows whose question appears in the named sets' tables.

Standalone:
    python scripts/prepare_dataset.py --dataset harmful --output results/data/harmful.parquet
    python scripts/prepare_dataset.py --dataset harmful_mi --parent results/data/harmful.parquet \
        --output results/data/harmful_mi.parquet
"""

from rim import cli
from rim.config import load_config
from rim.data.prepare import prepare_dataset, summary
from rim.provenance import collect, write_table


def run(job: cli.Job) -> None:
    name, entry = job.wildcards["dataset"], job.params["dataset"]
    disjoint = job.input.get("disjoint") or []
    disjoint = [disjoint] if isinstance(disjoint, str) else list(disjoint)
    table = prepare_dataset(
        name,
        entry,
        derived_from=job.input.get("parent"),
        disjoint_from=dict(zip(entry.get("disjoint_from") or [], disjoint)),
    )
    write_table(table, job.output["table"], collect(entry, dataset=name))
    cli.log.info("dataset %s: %s", name, summary(table))


def build_job(argv=None) -> cli.Job:
    parser = cli.standalone_parser(__doc__)
    parser.add_argument("--dataset", required=True, help="dataset name under 'datasets' in the config")
    parser.add_argument("--output", required=True, help="parquet file to write")
    parser.add_argument("--parent", default=None, help="prepared table of the set this one derives from")
    parser.add_argument(
        "--data", default="results/data", help="folder of the prepared tables of the sets named in disjoint_from"
    )
    args = parser.parse_args(argv)
    entry = cli.config_entry(load_config(args.config), "datasets", args.dataset)
    inputs = {"parent": args.parent} if args.parent else {}
    if entry.get("disjoint_from"):
        inputs["disjoint"] = [f"{args.data}/{other}.parquet" for other in entry["disjoint_from"]]
    return cli.Job(
        input=inputs,
        output={"table": args.output},
        params={"dataset": entry},
        wildcards={"dataset": args.dataset},
        threads=args.threads,
        log_path=args.log,
    )


if __name__ == "__main__":
    cli.main(run, build_job, globals())
