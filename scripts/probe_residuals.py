#!/usr/bin/env python
"""Difference-of-means probes on the residual stream of one checkpoint (docs/method.md#5-refusal-heads).

Reads the residual states that the activation dump holds (results/activations/{model}/{ckpt}.h5,
one array [prompts, layers, positions, hidden] per input set) and fits, per prompt mode, layer and
named position: harmful vs harmless, and refused vs fulfilled (the harmful prompts split by the
evaluation's verdicts on the model's own answers). Each item is scored by a probe calibrated on
the other folds (stratified k-fold); reported: each group's share above threshold and the k-fold
accuracy, with bootstrap intervals over held-out items.

Output: results/heads/{model}/{ckpt}/probes.parquet.

Standalone:
    python scripts/probe_residuals.py --dump results/activations/smollm2/base.h5 \\
        --evals results/eval/smollm2/base/harmful/no_think.parquet --output /tmp/probes.parquet
"""

import json
from pathlib import Path

import numpy as np
import pandas as pd

from rim import cli
from rim.activations import read_input_set
from rim.errors import DataError
from rim.heads_settings import VERDICTS, probe_params, probe_plan
from rim.probes import probe_rows, split_by_verdict
from rim.provenance import collect, read_table, write_table

GROUPS = {"harmful_vs_harmless": ("harmful", "harmless"), "refused_vs_fulfilled": ("refused", "fulfilled")}


def residuals(dump: str, prompt_set: str, mode: str):
    """(prompt ids, residual array, position names) of one input set; a clear error when absent."""
    data = read_input_set(dump, prompt_set, mode, neurons=False, residual=True)
    positions = json.loads(data.attrs.get("positions", "[]"))
    if data.residual is None or not positions:
        raise DataError(
            f"input set {prompt_set}/{mode} holds no residual states (add it to activations.residual_inputs)",
            source=dump,
        )
    return data.prompt_ids, data.residual.astype(np.float32), positions


def verdicts(table_path: str, judge: str) -> dict[str, bool]:
    """{prompt_id: refused} from an evaluation table, by the configured judge."""
    column, inverted = VERDICTS[judge]
    table = read_table(table_path)
    if column not in table:
        raise DataError(
            f"has no column '{column}' (is the {judge} judge enabled in the evaluation?)", source=table_path
        )
    judged = table[table[column].notna()]
    return {str(pid): bool(value) != inverted for pid, value in zip(judged["prompt_id"], judged[column])}


def run(job: cli.Job) -> None:
    params, wildcards = job.params, job.wildcards
    block, plan = params["probes"], params["plan"]
    dump = str(job.input["dump"])
    evals = {Path(path).stem: str(path) for path in job.input.get("evals", [])}
    frames = []
    for item in plan:
        probe, mode = item["probe"], item["mode"]
        ids, harmful, positions = residuals(dump, block["harmful"], mode)
        if probe == "harmful_vs_harmless":
            _, harmless, other_positions = residuals(dump, block["harmless"], mode)
            if other_positions != positions:
                raise DataError(
                    f"{block['harmful']}/{mode} and {block['harmless']}/{mode} store different positions", source=dump
                )
            a, b = harmful, harmless
        else:
            if mode not in evals:
                raise DataError(f"no evaluation table for mode {mode} among the inputs", source=dump)
            refused, fulfilled = split_by_verdict(ids, verdicts(evals[mode], block["judge"]))
            a, b = harmful[refused], harmful[fulfilled]
        cli.log.info(
            "%s (%s): %d %s vs %d %s, positions %s",
            probe,
            mode,
            len(a),
            GROUPS[probe][0],
            len(b),
            GROUPS[probe][1],
            ", ".join(positions),
        )
        rows = probe_rows(
            a,
            b,
            GROUPS[probe],
            positions,
            k=int(block["folds"]),
            seed=int(block["seed"]),
            n_boot=int(block["n_boot"]),
            min_items=int(block["min_items"]),
        )
        frames.append(rows.assign(probe=probe, mode=mode))
        accuracy = rows[rows["statistic"] == "accuracy"]
        if accuracy["value"].notna().any():
            best = accuracy.loc[accuracy["value"].idxmax()]
            cli.log.info(
                "%s (%s): best k-fold accuracy %.2f at layer %d, %s",
                probe,
                mode,
                best["value"],
                best["layer"],
                best["position"],
            )
        else:
            cli.log.warning(
                "%s (%s): too few items in a group (fewer than %d), rows left empty", probe, mode, block["min_items"]
            )
    frame = pd.concat(frames, ignore_index=True)
    front = ["probe", "mode"]
    frame = frame[front + [c for c in frame.columns if c not in front]]
    frame.insert(0, "checkpoint", wildcards["ckpt"])
    frame.insert(0, "model", wildcards["model"])
    write_table(
        frame,
        job.output["table"],
        collect(
            {"probes": block, "plan": plan}, seed=block["seed"], model=wildcards["model"], checkpoint=wildcards["ckpt"]
        ),
    )


def build_job(argv=None) -> cli.Job:
    from rim.config import load_config

    parser = cli.standalone_parser(__doc__)
    parser.add_argument("--dump", required=True, help="activation dump (HDF5) of the checkpoint")
    parser.add_argument(
        "--evals", nargs="*", default=[], help="evaluation tables <mode>.parquet of the harmful prompt set"
    )
    parser.add_argument("--checkpoint", default="base", help="checkpoint id written into the table")
    parser.add_argument("--model", default="smollm2", help="model name written into the table")
    parser.add_argument("--output", required=True, help="parquet file to write")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    plan = probe_plan(config, args.checkpoint)
    if not plan:
        raise SystemExit("error: the config stores no residual states the probes need (activations.residual_inputs)")
    return cli.Job(
        input={"dump": args.dump, "evals": args.evals},
        output={"table": args.output},
        params={"probes": probe_params(config), "plan": plan},
        wildcards={"model": args.model, "ckpt": args.checkpoint},
        threads=args.threads,
        log_path=args.log,
    )


if __name__ == "__main__":
    cli.main(run, build_job, globals())
