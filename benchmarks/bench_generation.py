#!/usr/bin/env python
"""Batched greedy generation (rim.evaluation.generation) vs one ``generate`` call per prompt.

Same model, same held-out harmful prompts, same number of new tokens, same stop tokens, in one
run. Prints the wall time and generated tokens per second of each method, the speed-up, and how
many responses agree token for token (batched float arithmetic may flip a near-tie).

    python benchmarks/bench_generation.py --reference /tmp/smollm2/source.json
    python benchmarks/bench_generation.py --prompts 64 --max-new-tokens 32 --threads 2

Without --reference the embedded SmolLM2 is converted into a temporary folder first (~1 min).
Target (issue 4): batched >= 5x the per-prompt throughput on the embedded model.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))

import torch  # noqa: E402

from rim.data.prepare import prepare_dataset  # noqa: E402
from rim.evaluation.generation import greedy_generate, stop_token_ids  # noqa: E402
from rim.models import load_model, prepare_model  # noqa: E402
from rim.prompts import PromptMode, render  # noqa: E402


def per_prompt_generate(lm, texts, max_new_tokens, stops):
    """The baseline: one transformers ``generate`` call per prompt (greedy)."""
    responses, generated = [], 0
    for text in texts:
        encoded = lm.tokenizer(text, return_tensors="pt", add_special_tokens=False).to(lm.device)
        with torch.inference_mode():
            out = lm.model.generate(
                **encoded,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=stops,
                pad_token_id=lm.tokenizer.pad_token_id,
            )
        tokens = out[0, encoded["input_ids"].shape[1] :].tolist()
        generated += len(tokens)
        cut = next((i for i, t in enumerate(tokens) if t in stops), len(tokens))
        responses.append(lm.tokenizer.decode(tokens[:cut], skip_special_tokens=False))
    return responses, generated


def timed(function):
    started = time.perf_counter()
    result = function()
    return result, time.perf_counter() - started


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--reference", default=None, help="model reference JSON (default: convert the embedded SmolLM2)"
    )
    parser.add_argument("--prompts", type=int, default=32, help="held-out harmful prompts")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--mode", choices=["no_think", "think"], default="no_think")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)

    reference = args.reference
    if reference is None:
        folder = Path(tempfile.mkdtemp(prefix="bench-generation-"))
        reference = folder / "source.json"
        print(f"converting the embedded SmolLM2 into {folder} ...", flush=True)
        prepare_model("smollm2", {"source": "embedded:smollm2", "dtype": "float32"}, reference)
    lm = load_model(reference, device="cpu")
    table = prepare_dataset("harmful", {"kind": "prompts", "source": "embedded:harmful", "eval_fraction": 0.5})
    prompts = table[table["split"] == "eval"]["prompt"].head(args.prompts).tolist()
    mode = PromptMode(args.mode, thinking=args.mode == "think")
    texts = [render(lm.adapter, lm.tokenizer, prompt, mode) for prompt in prompts]
    stops = stop_token_ids(lm)
    refusal_ids = lm.adapter.refusal_token_ids(lm.tokenizer)
    prompt_tokens = sum(len(lm.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts)
    print(
        f"model {lm.reference.get('name')}, {len(texts)} prompts ({prompt_tokens} prompt tokens), "
        f"max_new_tokens {args.max_new_tokens}, batch {args.batch_size}, {args.threads} threads"
    )
    greedy_generate(lm.model, lm.tokenizer, texts[:2], max_new_tokens=2, stop_ids=stops)  # warm-up

    def batched(share_prefix):
        generations = greedy_generate(
            lm.model,
            lm.tokenizer,
            texts,
            max_new_tokens=args.max_new_tokens,
            stop_ids=stops,
            refusal_ids=refusal_ids,
            batch_size=args.batch_size,
            share_prefix=share_prefix,
        )
        # Tokens generated = response tokens plus the stop token of each finished row.
        return [g.response for g in generations], sum(g.response_tokens + g.finished for g in generations)

    (shared, shared_tokens), shared_s = timed(lambda: batched(True))
    (plain, plain_tokens), plain_s = timed(lambda: batched(False))
    (single, single_tokens), single_s = timed(lambda: per_prompt_generate(lm, texts, args.max_new_tokens, stops))

    rows = [
        ("batched, shared prefix (ours)", shared_s, shared_tokens),
        ("batched, no prefix sharing", plain_s, plain_tokens),
        ("one generate() per prompt", single_s, single_tokens),
    ]
    print(f"{'method':32s} {'wall s':>8s} {'tokens':>7s} {'tok/s':>8s}")
    for name, seconds, tokens in rows:
        print(f"{name:32s} {seconds:8.2f} {tokens:7d} {tokens / seconds:8.1f}")
    speedup = (shared_tokens / shared_s) / (single_tokens / single_s)
    print(f"speed-up of batched generation over one generate() per prompt: {speedup:.1f}x (target >= 5x)")
    print(f"prefix sharing: {plain_s / shared_s:.2f}x faster than batched without it")
    agree = sum(a == b for a, b in zip(shared, single))
    agree_plain = sum(a == b for a, b in zip(shared, plain))
    print(
        f"responses identical to per-prompt generate(): {agree}/{len(texts)}; to batched without sharing: "
        f"{agree_plain}/{len(texts)}"
    )


if __name__ == "__main__":
    main()
