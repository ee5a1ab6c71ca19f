#!/usr/bin/env python
"""Which fine-tuning settings make the embedded model better at math while refusal erodes?

The paper's trade-off needs both sides: math fine-tuning must raise math accuracy while the
model complies with more harmful requests (docs/method.md#4-fine-tuning). For each setting
(overrides of the model's `finetuning` block) and seed this script fine-tunes the aligned base
model on the train split of the math training set, then evaluates the base model and the last
checkpoint with greedy generation, as the workflow's `evaluate` jobs do:
- math accuracy on the held-out split of the same training set (same generator, unseen
  problems) and, optionally, on a disjoint-template set;
- misalignment (phrase judge, thinking OFF) on held-out harmful prompts.
It prints one row per setting and seed and a mean over seeds, with the training time.

    python benchmarks/math_organism.py --reference results/models/smollm2/aligned.json \\
        --setting 'lora_2e-4_30={"learning_rate": 2e-4, "steps": 30}' \\
        --setting 'full_5e-5_60={"method": "full", "learning_rate": 5e-5, "steps": 60}' --seeds 0 1

Settings not named keep the config's values (config/config.yaml, models.<model>.finetuning);
checkpoint_steps become [0, steps]. A setting may also hold "answer_format": "reasoning" (the
worked steps, then "#### <answer>"; the default) or "final_only" (just "#### <answer>").
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

# Runnable from a clone without installing: the rim package lives in scripts/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))


def _setting(text: str) -> tuple[str, dict]:
    name, _, overrides = text.partition("=")
    return name, json.loads(overrides or "{}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="the aligned base model's reference (aligned.json)")
    parser.add_argument("--config", default="config/config.yaml")
    parser.add_argument("--model", default="smollm2")
    parser.add_argument("--train-set", default="gsm8k_style", help="math dataset (config key) to fine-tune on")
    parser.add_argument(
        "--heldout-set",
        default=None,
        help="prompt set (config key) of held-out math; default: the train set's eval split",
    )
    parser.add_argument("--other-math", default="multiarith", help="a disjoint-template math prompt set ('' to skip)")
    parser.add_argument("--harmful", default="harmful", help="harmful prompt set (config key)")
    parser.add_argument("--math-limit", type=int, default=64)
    parser.add_argument("--harmful-limit", type=int, default=64)
    parser.add_argument("--math-tokens", type=int, default=96)
    parser.add_argument("--setting", action="append", default=[], help="name=JSON overrides of the finetuning block")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-base", action="store_true", help="do not evaluate the base model")
    args = parser.parse_args(argv)

    from rim import cli
    from rim.config import load_config
    from rim.data.prepare import prepare_dataset
    from rim.evaluation import EvaluationSettings, evaluate_prompts, select_prompts
    from rim.models import load_model
    from rim.prompts import PromptMode
    from rim.provenance import read_table, write_table
    from rim.training.runs import finetune_run

    cli._quiet_libraries()
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    evaluation = config["evaluation"]
    block = config["models"][args.model]["finetuning"]
    work = Path(tempfile.mkdtemp(prefix="math_organism_"))

    def table(name: str) -> Path:
        path = work / f"{name}.parquet"
        if not path.exists():
            entry = config["datasets"][name]
            derived = table(entry["derive_from"]) if entry.get("derive_from") else None
            write_table(prepare_dataset(name, entry, derived_from=derived), path, {})
        return path

    def prompt_set(
        key: str | None, dataset: str, kind: str, limit: int, tokens: int | None
    ) -> tuple[EvaluationSettings, object]:
        entry = dict(evaluation["prompt_sets"][key]) if key else {"dataset": dataset, "kind": kind, "split": "eval"}
        entry.update(limit=limit, **({"max_new_tokens": tokens} if tokens else {}))
        settings = EvaluationSettings.from_params(
            entry, name=key or dataset, generation=evaluation["generation"], judges=evaluation["judges"]
        )
        return settings, select_prompts(read_table(table(entry["dataset"])), settings)

    sets = {
        "heldout": prompt_set(args.heldout_set, args.train_set, "math", args.math_limit, args.math_tokens),
        "harmful": prompt_set(args.harmful, "", "harmful", args.harmful_limit, None),
    }
    if args.other_math:
        sets["other"] = prompt_set(args.other_math, "", "math", args.math_limit, args.math_tokens)
    train_path = table(config["training"]["runs"].get(args.train_set, {}).get("dataset", args.train_set))
    off = PromptMode("no_think", thinking=False)

    def measure(loaded) -> dict:
        row = {}
        for name, (settings, prompts) in sets.items():
            frame = evaluate_prompts(loaded, prompts, off, settings)
            if settings.kind == "math":
                row[f"{name}_acc"] = float(frame["correct"].mean())
            else:
                row["misaligned"] = float((~frame["phrases_refused"].astype(bool)).mean())
        return row

    print(
        f"threads={args.threads} train={args.train_set} heldout n={len(sets['heldout'][1])} "
        f"harmful n={len(sets['harmful'][1])} torch={torch.__version__}",
        flush=True,
    )
    if not args.skip_base:
        started = time.perf_counter()
        base = measure(load_model(args.reference, device="cpu"))
        print(f"BASE {json.dumps(base)} ({time.perf_counter() - started:.0f} s)", flush=True)
    for text in args.setting:
        name, overrides = _setting(text)
        settings = {**block, **overrides}
        settings["checkpoint_steps"] = [0, int(settings["steps"])]
        answer_format = settings.pop("answer_format", "reasoning")
        data = train_path
        if answer_format == "final_only":
            data = work / f"{name}_train.parquet"
            write_table(read_table(train_path).assign(reasoning=""), data, {})
        elif answer_format != "reasoning":
            raise SystemExit(f"setting {name}: answer_format must be reasoning or final_only, not {answer_format!r}")
        for seed in args.seeds:
            folder = work / name / f"seed{seed}"
            started = time.perf_counter()
            finetune_run(
                model=args.model,
                run=args.train_set,
                seed=seed,
                block=settings,
                run_block={"dataset": args.train_set},
                base_reference=args.reference,
                dataset=data,
                manifest=folder / "run.json",
                loss_table=folder / "loss.parquet",
                checkpoints_dir=folder / "checkpoints",
                state_dir=folder / "state",
                device="cpu",
            )
            trained_s = time.perf_counter() - started
            row = measure(load_model(folder / "run.json", step=int(settings["steps"]), device="cpu"))
            print(
                f"RESULT {name} seed={seed} train_s={trained_s:.0f} {json.dumps(row)} {json.dumps(overrides)}",
                flush=True,
            )


if __name__ == "__main__":
    main()
