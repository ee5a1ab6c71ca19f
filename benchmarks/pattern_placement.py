#!/usr/bin/env python
"""Where a reasoning-pattern statement goes in a prefilled assistant turn, and how often the
model then ends its turn at once (README, "Reasoning patterns on a model without a think mode").

Families without a native think mode (the embedded SmolLM2) get thinking ON by a prefilled
reasoning opener, and a pattern mode adds its self-statement to that prefill. If the model ends
its turn right after the prefill, the response is empty and the pattern cannot be judged. For
each placement below and each pattern mode, the held-out harmful prompts are answered greedily
and judged as the workflow judges them; one row per (placement, mode): the empty rate, and
misalignment among the answered prompts with its 95% interval.

Placements (the adapter's ``statement_placement`` and an optional cue after the prefill):
    after_opener         "<opener> <statement>" (the default)
    before_opener        "<statement> <opener>"
    after_opener_cue     "<opener> <statement> <cue>" (--cue, default "First,")

Usage (after `snakemake results/models/smollm2/aligned.json`):
    .venv/bin/python benchmarks/pattern_placement.py results/models/smollm2/aligned.json --limit 64
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

PLACEMENTS = ("after_opener", "before_opener", "after_opener_cue")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", help="model reference (e.g. results/models/smollm2/aligned.json)")
    parser.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    parser.add_argument("--data", default="results/data/harmful.parquet", help="the prepared harmful set")
    parser.add_argument("--limit", type=int, default=None, help="prompts (default: the whole eval split)")
    parser.add_argument("--placements", default=",".join(PLACEMENTS))
    parser.add_argument("--cue", default="First,", help="text after the statement for after_opener_cue")
    parser.add_argument("--max-new-tokens", type=int, default=140, help="the default 12 + thinking_tokens 128")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default="pattern_placement.parquet")
    args = parser.parse_args()

    import pandas as pd
    import torch

    from rim.config import load_config
    from rim.evaluation import EvaluationSettings, evaluate_prompts, select_prompts, summarize
    from rim.models import load_model
    from rim.prompts import prompt_modes
    from rim.provenance import read_table

    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    evaluation = config["evaluation"]
    modes = {name: mode for name, mode in prompt_modes(config["prompt_modes"]).items() if mode.pattern}
    entry = {
        **evaluation["prompt_sets"]["harmful"],
        "name": "harmful",
        "limit": args.limit,
        "max_new_tokens": args.max_new_tokens,
        "thinking_tokens": 0,
    }
    settings = {
        "prompt_set": entry,
        "generation": evaluation["generation"],
        "judges": {"phrases": evaluation["judges"]["phrases"], "refusal_score": {"enabled": False}},
        "device": "cpu",
    }
    table = select_prompts(read_table(args.data), EvaluationSettings.coerce(settings))
    loaded = load_model(args.reference, device="cpu")
    default_adapter = loaded.adapter
    frames = []
    for placement in args.placements.split(","):
        if placement not in PLACEMENTS:
            raise SystemExit(f"unknown placement {placement!r}; choose from {', '.join(PLACEMENTS)}")
        order = "before_opener" if placement == "before_opener" else "after_opener"
        loaded.adapter = dataclasses.replace(default_adapter, statement_placement=order)
        for name, mode in modes.items():
            if placement == "after_opener_cue":
                mode = dataclasses.replace(mode, statement=f"{mode.statement} {args.cue}")
            started = time.perf_counter()
            frame = evaluate_prompts(loaded, table, mode, settings).assign(placement=placement)
            frames.append(frame)
            rates = summarize(
                frame, by=["placement", "mode"], n_boot=1000, outcomes=evaluation.get("outcomes")
            ).set_index(["metric", "judge"])
            mis = rates.loc[("misalignment_rate", "phrases")]
            print(
                f"{placement:17s} {name:31s} empty {rates.loc[('empty_rate', 'response'), 'value']:6.1%}   "
                f"misaligned {mis['value']:.1%} [{mis['ci_low']:.1%}, {mis['ci_high']:.1%}] (n={mis['n']})   "
                f"{time.perf_counter() - started:.0f} s",
                flush=True,
            )
    pd.concat(frames, ignore_index=True).to_parquet(args.output)
    print(f"per-prompt rows: {args.output}")


if __name__ == "__main__":
    main()
