#!/usr/bin/env python
"""Head-patching scan: naive loop vs exact scan vs attribution patching, same prompts and model.

Targets (issue 6): exact >= 2x faster than the naive loop (and equal to it); attribution >= 20x
faster than the naive loop with Spearman >= 0.8 against exact. Prints the figures; exits 1 when
a target is missed.

    python benchmarks/bench_patching.py --reference results/models/smollm2/source.json --prompts 4
    python benchmarks/bench_patching.py --reference ... --positions all --prompts 2

The pair is the default scan's: harmful prompts with thinking OFF patched into thinking ON.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

from rim import patching  # noqa: E402
from rim.data.sources import read_source  # noqa: E402
from rim.models import load_model  # noqa: E402
from rim.positions import label_prompt  # noqa: E402
from rim.prompts import PromptMode  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", default="results/models/smollm2/source.json", help="model reference JSON")
    parser.add_argument("--prompts", type=int, default=4, help="harmful prompts (embedded set)")
    parser.add_argument("--positions", default="last", choices=patching.POSITIONS)
    parser.add_argument("--head-batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    lm = load_model(args.reference, device=args.device)
    users = read_source({"source": "embedded:harmful"})["prompt"].tolist()[: args.prompts]
    on, off = PromptMode("think", True), PromptMode("no_think", False)
    if args.positions == "all":
        # Every position needs source and target of one length (the base-into-checkpoint shape);
        # OFF prompts of two different requests, cut to a common length, stand in for it here.
        targets = [label_prompt(lm.adapter, lm.tokenizer, u, off).input_ids for u in users]
        sources_ids = [
            label_prompt(lm.adapter, lm.tokenizer, users[(i + 1) % len(users)], off).input_ids
            for i in range(len(users))
        ]
        width = [min(len(a), len(b)) for a, b in zip(targets, sources_ids)]
        targets = [t[-w:] for t, w in zip(targets, width)]
        sources_ids = [s[-w:] for s, w in zip(sources_ids, width)]
    else:
        targets = [label_prompt(lm.adapter, lm.tokenizer, u, on).input_ids for u in users]
        sources_ids = [label_prompt(lm.adapter, lm.tokenizer, u, off).input_ids for u in users]
    refusal = lm.adapter.refusal_token_ids(lm.tokenizer)
    layers, heads = lm.adapter.num_layers(lm.model), lm.adapter.num_heads(lm.model)
    tokens = sum(len(t) for t in targets)
    print(
        f"model {lm.reference.get('name')} ({layers} layers x {heads} heads), {len(targets)} prompts, "
        f"{tokens} target tokens, positions={args.positions}, threads={args.threads}, device={lm.device}"
    )

    sources = patching.head_inputs(lm, sources_ids, args.positions)  # shared by all three methods
    patching.exact_scan(lm, targets[:1], sources[:1], refusal, args.positions, head_batch=args.head_batch)  # warm-up

    started = time.perf_counter()
    naive = patching.naive_scan(lm, targets, sources, refusal, args.positions)
    t_naive = time.perf_counter() - started
    started = time.perf_counter()
    exact = patching.exact_scan(lm, targets, sources, refusal, args.positions, head_batch=args.head_batch)
    t_exact = time.perf_counter() - started
    started = time.perf_counter()
    attribution = patching.attribution_scan(lm, targets, sources, refusal, args.positions, batch_size=len(targets))
    t_attribution = time.perf_counter() - started

    max_diff = float(np.abs(exact - naive).max())
    rho_all = float(spearmanr(exact.ravel(), attribution.ravel())[0])
    rho_mean = float(spearmanr(exact.mean(0).ravel(), attribution.mean(0).ravel())[0])
    speed_exact, speed_attribution = t_naive / t_exact, t_naive / t_attribution
    print(f"naive loop:   {t_naive:8.2f} s  ({layers * heads * len(targets)} forward passes)")
    print(f"exact scan:   {t_exact:8.2f} s  speed-up {speed_exact:6.1f}x  max |exact - naive| = {max_diff:.2e}")
    print(
        f"attribution:  {t_attribution:8.2f} s  speed-up {speed_attribution:6.1f}x  "
        f"Spearman vs exact: {rho_all:.3f} (per prompt and head), {rho_mean:.3f} (mean over prompts)"
    )
    print(f"largest |effect| (exact): {np.abs(exact).max():.3f}")
    ok = speed_exact >= 2 and speed_attribution >= 20 and rho_mean >= 0.8 and max_diff <= 1e-3
    print("targets (exact >= 2x, attribution >= 20x, Spearman >= 0.8):", "met" if ok else "MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
