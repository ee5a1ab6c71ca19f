#!/usr/bin/env python
"""Find the safety-critical neurons of the base model and draw random control sets.

Reads the base model's activation dump: for every (harmful prompt, its -MI version) pair, the
top-m neurons by f(-MI) - f(plain); the safety set A_safe is their intersection over pairs (or
the neurons selected in at least a fraction q of pairs), and random sets of the same size are
drawn, seeded, from the other neurons (docs/method.md#6-safety-neurons-and-ras). Writes
results/neurons/{model}/neuron_sets.parquet: one row per (neuron set, draw, neuron), and
neuron_scores.parquet: every neuron's selection frequency, mean shift and rank by the safety score
(the top-k sets of the zeroing dose-response, docs/method.md#zeroing-dose-response).

Standalone:
    python scripts/safety_neurons.py --model smollm2 \\
        --dump results/activations/smollm2/base.h5 --output /tmp/neuron_sets.parquet \\
        --scores /tmp/neuron_scores.parquet
"""

import warnings

import numpy as np
import pandas as pd

from rim import cli
from rim.activations import read_input_set
from rim.neurons import (
    expert_channel,
    layer_neuron,
    pair_shifts,
    random_neuron_sets,
    safety_neurons,
    safety_ranking,
    top_m,
)
from rim.provenance import collect, write_table


def run(job: cli.Job) -> None:
    block, model = job.params["neurons"], job.wildcards["model"]
    dump = str(job.input["dump"])
    plain = read_input_set(dump, block["plain"]["prompt_set"], block["plain"]["mode"])
    intent = read_input_set(dump, block["intent"]["prompt_set"], block["intent"]["mode"])
    intent_ids = intent.base_prompt_ids or intent.prompt_ids
    pairs = pair_shifts(plain.prompt_ids, plain.neurons, intent_ids, intent.neurons, source=dump)
    cli.log.info(
        "%d (harmful, -MI) pairs; %d layers x %d neurons", len(pairs.prompt_ids), pairs.n_layers, pairs.n_neurons
    )
    m, selection, q = int(block["top_m"]), block["selection"], float(block["min_fraction"])
    _log_sizes(pairs.shifts, m)
    chosen, frequency = safety_neurons(pairs.shifts, m, selection, q)
    cli.log.info(
        "|A_safe| = %d (top_m %d, selection %s%s)",
        chosen.size,
        m,
        selection,
        f", q {q}" if selection == "frequency" else "",
    )
    randoms = random_neuron_sets(
        pairs.n_layers,
        pairs.n_neurons,
        chosen,
        int(block["random_draws"]),
        int(block["random_seed"]),
        block["random_matching"],
    )
    # Mixture-of-experts neurons have no shift in a pair whose tokens never reached their expert:
    # their mean is over the pairs that have one (NaN for a neuron no pair reached).
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_shift = np.nanmean(pairs.shifts, axis=0)
    n_experts = int(plain.attrs.get("n_experts", 0))
    frames = [_rows(model, "safety", None, chosen, frequency, mean_shift, pairs.n_neurons, n_experts)]
    frames += [
        _rows(model, "random", draw, flat, frequency, mean_shift, pairs.n_neurons, n_experts)
        for draw, flat in enumerate(randoms)
    ]
    table = pd.concat(frames, ignore_index=True)
    layers = np.bincount(layer_neuron(chosen, pairs.n_neurons)[0], minlength=pairs.n_layers)
    cli.log.info("safety neurons per layer: %s", " ".join(f"L{i}:{c}" for i, c in enumerate(layers) if c))
    provenance = collect(
        block,
        seed=int(block["random_seed"]),
        model=model,
        dump=dump,
        set_size=int(chosen.size),
        n_pairs=len(pairs.prompt_ids),
        pair_ids=pairs.prompt_ids,
        n_layers=pairs.n_layers,
        n_neurons=pairs.n_neurons,
        site=plain.attrs.get("site"),
        pooling=plain.attrs.get("pooling"),
        n_experts=int(plain.attrs.get("n_experts", 0)),
    )
    write_table(table, job.output["sets"], provenance)
    layers, neurons = layer_neuron(np.arange(frequency.size), pairs.n_neurons)
    in_set = np.zeros(frequency.size, dtype=bool)
    in_set[chosen] = True
    scores = pd.DataFrame(
        {
            "model": model,
            "layer": layers.astype(np.int32),
            "neuron": neurons.astype(np.int32),
            "selection_frequency": frequency.astype(np.float64),
            "mean_shift": mean_shift.astype(np.float64),
            "rank": safety_ranking(frequency, mean_shift),
            "in_safety_set": in_set,
        }
    )
    write_table(_with_experts(scores, n_experts, pairs.n_neurons), job.output["scores"], provenance)


def _with_experts(frame: pd.DataFrame, n_experts: int, n_neurons: int) -> pd.DataFrame:
    """Mixture-of-experts models: each neuron's (expert, channel) beside its flat index."""
    if n_experts:
        expert, channel = expert_channel(frame["neuron"].to_numpy(), n_experts, n_neurons)
        position = frame.columns.get_loc("neuron") + 1
        frame.insert(position, "expert", expert.astype(np.int32))
        frame.insert(position + 1, "channel", channel.astype(np.int32))
    return frame


def _rows(model, name, draw, flat, frequency, mean_shift, n_neurons, n_experts) -> pd.DataFrame:
    layers, neurons = layer_neuron(flat, n_neurons)
    frame = pd.DataFrame(
        {
            "model": model,
            "neuron_set": name,
            "draw": pd.array([draw] * len(flat), dtype="Int64"),
            "set_size": len(flat),
            "layer": layers.astype(np.int32),
            "neuron": neurons.astype(np.int32),
            "selection_frequency": frequency[flat],
            "mean_shift": mean_shift[flat].astype(np.float64),
        }
    )
    return _with_experts(frame, n_experts, n_neurons)


def _log_sizes(shifts: np.ndarray, m: int) -> None:
    """How the set size depends on q at this m: what a user needs to choose m and q."""
    counts = top_m(shifts, m).sum(axis=0)
    n_pairs = shifts.shape[0]
    sizes = ", ".join(
        f"q={q:.2f}: {int((counts >= np.ceil(q * n_pairs - 1e-9)).sum())}" for q in (1.0, 0.9, 0.75, 0.5, 0.25)
    )
    cli.log.info("set size at top_m %d by min_fraction: %s", m, sizes)


def build_job(argv=None) -> cli.Job:
    from rim.config import load_config

    parser = cli.standalone_parser(__doc__)
    parser.add_argument("--model", required=True, help="model name (recorded in the table)")
    parser.add_argument("--dump", required=True, help="the base model's activation dump (HDF5)")
    parser.add_argument("--output", required=True, help="parquet file of the neuron sets to write")
    parser.add_argument("--scores", required=True, help="parquet file of every neuron's safety score to write")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    return cli.Job(
        input={"dump": args.dump},
        output={"sets": args.output, "scores": args.scores},
        params={"neurons": {key: value for key, value in config["neurons"].items() if key != "zeroing"}},
        wildcards={"model": args.model},
        threads=args.threads,
        log_path=args.log,
    )


if __name__ == "__main__":
    cli.main(run, build_job, globals())
