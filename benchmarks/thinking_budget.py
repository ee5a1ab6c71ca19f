#!/usr/bin/env python
"""Think-mode misalignment as the generation budget grows: the curve behind the default
``evaluation.generation.thinking_tokens`` (README, "Thinking ON: how many tokens to read").

For each model reference and each budget (total new tokens), the held-out harmful prompts are
answered greedily with thinking ON (and, for reference, OFF) and judged as the workflow judges
them (rim.evaluation: the answer split from the reasoning, the phrase judge on the answer's
opening, outcomes refused / complied / empty / unfinished). Prints one row per (model, mode,
budget): misalignment with its 95% interval, the empty and unfinished rates, and the share of
responses cut off by the budget; writes the per-prompt rows to --output (parquet) for inspection.

Usage (after `snakemake results/finetune/smollm2/gsm8k_style/seed0/run.json`):
    .venv/bin/python benchmarks/thinking_budget.py \
        results/models/smollm2/aligned.json results/finetune/smollm2/gsm8k_style/seed0/run.json:30
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("references", nargs="+", help="model references; run.json:STEP for a checkpoint")
    parser.add_argument("--budgets", default="12,32,64,128,256", help="total new tokens, comma-separated")
    parser.add_argument("--config", default=str(REPO / "config" / "config.yaml"))
    parser.add_argument("--data", default="results/data/harmful.parquet", help="the prepared harmful set")
    parser.add_argument("--limit", type=int, default=None, help="prompts (default: the whole eval split)")
    parser.add_argument("--modes", default="think,no_think")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--statement-placement",
        choices=["after_opener", "before_opener"],
        default=None,
        help="override the adapter's placement of pattern statements (families without a think mode)",
    )
    parser.add_argument("--output", default="thinking_budget.parquet")
    args = parser.parse_args()

    import pandas as pd
    import torch

    from rim.config import load_config
    from rim.evaluation import EvaluationSettings, evaluate_prompts, select_prompts, summarize
    from rim.evaluation.answers import split_response
    from rim.evaluation.judges import PhraseJudge
    from rim.models import load_model
    from rim.prompts import prompt_modes
    from rim.provenance import read_table

    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    evaluation = config["evaluation"]
    entry = {**evaluation["prompt_sets"]["harmful"], "name": "harmful", "limit": args.limit}
    modes = prompt_modes(config["prompt_modes"])
    budgets = [int(b) for b in args.budgets.split(",")]
    frames = []
    judge = PhraseJudge.from_spec(evaluation["judges"]["phrases"])
    for reference in args.references:
        path, _, step = reference.partition(":")
        loaded = load_model(path, step=int(step) if step else None, device="cpu")
        if args.statement_placement:
            loaded.adapter = dataclasses.replace(loaded.adapter, statement_placement=args.statement_placement)
        label = Path(path).stem if not step else f"{Path(path).parent.name}/step{step}"
        for mode_name in args.modes.split(","):
            mode = modes[mode_name]
            mode_budgets = budgets if mode.thinking else budgets[:1]
            # Greedy decoding is prefix-consistent: the longest budget's response, cut after b
            # tokens, is the response at budget b. Generate once, judge at every budget.
            prompt_set = {**entry, "max_new_tokens": max(mode_budgets), "thinking_tokens": 0}
            settings = {
                "prompt_set": prompt_set,
                "generation": evaluation["generation"],
                "judges": {"refusal_score": {"enabled": False}},
                "device": "cpu",
            }
            table = select_prompts(read_table(args.data), EvaluationSettings.coerce(settings))
            started = time.perf_counter()
            full = evaluate_prompts(loaded, table, mode, settings)
            seconds = time.perf_counter() - started
            for budget in mode_budgets:
                frame = full.assign(model=label, budget=budget)
                rows = [
                    cut(loaded, response, tokens, finished, budget)
                    for response, tokens, finished in zip(full["response"], full["response_tokens"], full["finished"])
                ]
                frame["response"], frame["finished"] = [r for r, _ in rows], [f for _, f in rows]
                splits = [split_response(r, loaded.adapter, mode, finished=f) for r, f in rows]
                frame["answer"] = [split.answer for split in splits]
                frame["answer_status"] = [split.status for split in splits]
                refused = [
                    judge.judge(split.answer).refused if split.status == "answered" else None for split in splits
                ]
                frame["phrases_refused"] = pd.array(refused, dtype="boolean")
                frame["phrases_outcome"] = [
                    split.status if r is None else ("refused" if r else "complied") for split, r in zip(splits, refused)
                ]
                frames.append(frame)
                rates = summarize(
                    frame, by=["model", "mode", "budget"], n_boot=1000, outcomes=evaluation.get("outcomes")
                ).set_index(["metric", "judge"])
                mis = rates.loc[("misalignment_rate", "phrases")]
                print(
                    f"{label:22s} {mode_name:30s} {budget:4d} tokens: misaligned {mis['value']:.1%} "
                    f"[{mis['ci_low']:.1%}, {mis['ci_high']:.1%}] (n={mis['n']}), "
                    f"empty {rates.loc[('empty_rate', 'response'), 'value']:.1%}, "
                    f"unfinished {rates.loc[('unfinished_rate', 'response'), 'value']:.1%}, "
                    f"cut off {1 - frame['finished'].mean():.1%}",
                    flush=True,
                )
            print(
                f"{label}: {mode_name} generated {max(mode_budgets)} tokens for {len(full)} prompts in {seconds:.0f} s",
                flush=True,
            )
    pd.concat(frames, ignore_index=True).to_parquet(args.output)
    print(f"per-prompt rows: {args.output}")


def cut(loaded, response: str, tokens: int, finished: bool, budget: int) -> tuple[str, bool]:
    """The response at a smaller budget: its first ``budget`` tokens, finished only if it ended within them."""
    if tokens <= budget:
        return response, finished
    ids = loaded.tokenizer(response, add_special_tokens=False)["input_ids"][:budget]
    return loaded.tokenizer.decode(ids, skip_special_tokens=False), False


if __name__ == "__main__":
    main()
