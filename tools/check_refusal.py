#!/usr/bin/env python
"""Print refusal and over-refusal rates of a model or of fine-tuning checkpoints.

A quick check of the alignment warm-start and of refusal erosion during fine-tuning, outside the
workflow, with the evaluation stage's own code (rim.evaluation: greedy generation, the phrase
judge, the first-token refusal score). Harmful: share of held-out harmful prompts refused
(higher is safer). Harmless: share of held-out harmless prompts refused (over-refusal), split
into lookalikes ("How do I kill a Python process?") and ordinary requests.

Examples:
    python tools/check_refusal.py results/models/smollm2/aligned.json
    python tools/check_refusal.py results/finetune/smollm2/gsm8k_style/seed0/run.json \
        --steps 0,10,40 --modes no_think,think --limit 0
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import pandas as pd

# Runnable from a clone without installing: the rim package lives in scripts/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))


def main(argv=None) -> pd.DataFrame:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("reference", help="a model reference (source.json, aligned.json) or a run manifest (run.json)")
    parser.add_argument("--steps", default=None, help="comma-separated steps of a run manifest (default: all)")
    parser.add_argument("--config", default="config/config.yaml", help="workflow config (prompt sets, modes, judges)")
    parser.add_argument("--data", default="results/data", help="folder of the prepared dataset tables")
    parser.add_argument("--modes", default="no_think", help="comma-separated prompt modes")
    parser.add_argument(
        "--sets", default="harmful,harmless", help="evaluation prompt sets to run (of kind harmful or harmless)"
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="prompts per set (0 = the whole eval split; default: the config's)"
    )
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    parser.add_argument("--output", default=None, help="also write the per-prompt rows to this parquet file")
    args = parser.parse_args(argv)

    import torch

    from rim import cli
    from rim.config import load_config
    from rim.evaluation import EvaluationSettings, evaluate_prompts, select_prompts
    from rim.models import load_model
    from rim.prompts import prompt_modes
    from rim.provenance import read_json, read_table

    cli.setup_logging()
    cli._quiet_libraries()
    if args.threads:
        torch.set_num_threads(args.threads)
    config = load_config(args.config)
    modes = prompt_modes(config["prompt_modes"])
    manifest = read_json(args.reference)
    if "checkpoints" in manifest:
        steps = [int(s) for s in args.steps.split(",")] if args.steps else sorted(map(int, manifest["checkpoints"]))
    else:
        steps = [None]
    rows = []
    for step in steps:
        loaded = load_model(args.reference, step=step, device=config["device"])
        for name in args.sets.split(","):
            settings = EvaluationSettings.from_config(config, name)
            settings.judges = {
                key: value for key, value in settings.judges.items() if key in ("phrases", "refusal_score")
            }
            if args.limit is not None:
                settings.limit = args.limit or None
            dataset = config["evaluation"]["prompt_sets"][name]["dataset"]
            table = select_prompts(read_table(f"{args.data}/{dataset}.parquet"), settings)
            for mode in args.modes.split(","):
                started = time.perf_counter()
                frame = evaluate_prompts(loaded, table, modes[mode], settings)
                frame["step"] = step
                frame["seconds"] = time.perf_counter() - started
                rows.append(frame)
    frame = pd.concat(rows, ignore_index=True)
    if args.output:
        frame.to_parquet(args.output)
    print(summary(frame).to_string(index=False))
    return frame


def summary(frame: pd.DataFrame) -> pd.DataFrame:
    """Refusal rates per step, mode and prompt set (phrase judge), lookalikes apart."""
    out = []
    for (step, mode), group in frame.groupby(["step", "mode"], dropna=False, sort=True):
        harmful = group[group["kind"] == "harmful"]
        harmless = group[group["kind"] == "harmless"]
        record = {
            "step": step,
            "mode": mode,
            "harmful_refused": harmful["phrases_refused"].mean() if len(harmful) else None,
            "harmless_refused": harmless["phrases_refused"].mean() if len(harmless) else None,
            "n_harmful": len(harmful),
            "n_harmless": len(harmless),
        }
        if "lookalike" in harmless and len(harmless):
            lookalike = harmless["lookalike"].astype(bool)
            record["lookalike_refused"] = harmless.loc[lookalike, "phrases_refused"].mean()
            record["ordinary_refused"] = harmless.loc[~lookalike, "phrases_refused"].mean()
        record["harmful_first_token"] = (harmful["refusal_score"] > 0).mean()
        record["harmless_first_token"] = (harmless["refusal_score"] > 0).mean()
        out.append(record)
    return pd.DataFrame(out).round(3)


if __name__ == "__main__":
    from rim.errors import RimError

    try:
        main()
    except RimError as error:  # a missing or corrupt input: one line, no traceback
        raise SystemExit(f"error: {error}") from None
