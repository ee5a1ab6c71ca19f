#!/usr/bin/env python
"""Collect RAS of every model into results/ras.parquet and correlate each metric with misalignment.

results/ras.parquet: one row per (model, run, seed, step, neuron set, draw, metric) with the
value and the checkpoint's misalignment rate, refusal rates and math accuracy.
results/ras_correlations.parquet: Pearson and Spearman r (two-sided p, bootstrap interval over
checkpoints) between each metric and the misalignment rate across the checkpoints of each run,
per seed and pooled over seeds, pooled without the base model, partial on the training step, and
the mean of the per-seed r over seeds (docs/method.md#correlation-with-misalignment; the paper
reports Pearson r per model).

Standalone:
    python scripts/ras_table.py --tables results/ras/smollm2.parquet --output results/ras.parquet \\
        --correlations results/ras_correlations.parquet
"""

import pandas as pd

from rim import cli
from rim.provenance import collect, read_provenance, read_table, write_table
from rim.ras import correlation_table


def run(job: cli.Job) -> None:
    block = job.params["correlation"]
    paths = [str(path) for path in job.input["tables"]]
    table = pd.concat([read_table(path) for path in paths], ignore_index=True)
    sources = {path: read_provenance(path) for path in paths}
    provenance = collect({"correlation": block}, sources=sources)
    write_table(table, job.output["table"], provenance)
    correlations = correlation_table(
        table,
        methods=tuple(block["methods"]),
        n_boot=int(block["n_boot"]),
        level=float(block["level"]),
        seed=int(block["seed"]),
    )
    write_table(correlations, job.output["correlations"], provenance)
    _log_headline(correlations)


def _log_headline(correlations: pd.DataFrame) -> None:
    """r(RAS safety) vs r(RAS random, mean over draws) vs r(KL), Pearson, per seed and pooled."""
    pearson = correlations[correlations["method"] == "pearson"]
    if "inputs" not in pearson:
        pearson = pearson.assign(inputs="own_response")
    for (model, run, inputs, scope, seed), part in pearson.groupby(
        ["model", "run", "inputs", "scope", "seed"], dropna=False, sort=True
    ):

        def r_of(neuron_set, metric="ras_harmonic"):
            rows = part[(part["neuron_set"] == neuron_set) & (part["metric"] == metric)]
            return rows["r"].mean() if len(rows) else float("nan")

        safety = part[(part["neuron_set"] == "safety") & (part["metric"] == "ras_harmonic")]
        p = safety["p_value"].iloc[0] if len(safety) else float("nan")
        cli.log.info(
            "%s %s (%s) %s%s: Pearson r(RAS safety) %.3f (p %.3g), r(RAS random, mean of draws) %.3f, r(RAS all) %.3f, "
            "r(KL) %.3f",
            model,
            run,
            inputs,
            scope,
            "" if pd.isna(seed) else f" {seed}",
            r_of("safety"),
            p,
            r_of("random"),
            r_of("all"),
            r_of("none", "kl"),
        )


def build_job(argv=None) -> cli.Job:
    from rim.config import load_config

    parser = cli.standalone_parser(__doc__)
    parser.add_argument("--tables", nargs="+", required=True, help="per-model RAS tables (results/ras/<model>.parquet)")
    parser.add_argument("--output", required=True, help="results/ras.parquet")
    parser.add_argument("--correlations", required=True, help="results/ras_correlations.parquet")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    return cli.Job(
        input={"tables": args.tables},
        output={"table": args.output, "correlations": args.correlations},
        params={"correlation": config["ras"]["correlation"]},
        threads=args.threads,
        log_path=args.log,
    )


if __name__ == "__main__":
    cli.main(run, build_job, globals())
