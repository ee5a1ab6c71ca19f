#!/usr/bin/env python
"""Activation dump: time against a bare forward pass, and peak memory with 10x the prompts.

Targets (issue "activation dumps"): dump time <= 1.15x a bare forward pass over the same inputs;
peak RSS with 10x the prompts <= 1.2x the peak with 1x (activations stream to disk).

Inputs: held-out harmful prompts of the embedded set, each followed by a short refusal (as the
evaluation's 12-token responses), and math questions followed by their worked solution (the KL
baseline runs on those). Same batches for every variant (8 inputs, right-padded, longest first).

Timed, interleaved over --repeats rounds (median reported):
  bare forward        model(input_ids, attention_mask): the plain Hugging Face call
  bare, no lm head    the same with logits_to_keep=1 (the dump's own forward needs no logits)
  dump                rim.activations.dump_activations with the default settings (shared prefix)
  dump, no sharing    the same with share_prefix off: every token computed, hooks and writes only

Usage:
    .venv/bin/python benchmarks/bench_dump.py                       # converts SmolLM2 once (~40 s)
    .venv/bin/python benchmarks/bench_dump.py --reference /tmp/smollm2/source.json --prompts 32
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))

REFUSAL = "I'm sorry, but I can't help with that request."


def input_sets(n_prompts: int, copies: int = 1):
    """Harmful prompts with a refusal, and math questions with their solution (``copies`` x each)."""
    from rim.activations import InputSet
    from rim.data.prepare import prepare_dataset
    from rim.prompts import PromptMode

    mode = PromptMode("no_think", False)
    harmful = prepare_dataset(
        "harmful", {"kind": "prompts", "source": "embedded:harmful", "eval_fraction": 0.5, "split_seed": 0}
    )
    harmful = harmful[harmful["split"] == "eval"].head(n_prompts)
    math = prepare_dataset(
        "multiarith_style", {"kind": "math", "source": "generator:multiarith_style", "n": 100, "seed": 1}
    )
    math = math.head(max(1, n_prompts // 2))
    ids, users, responses = [], [], []
    for copy in range(copies):
        # Distinct texts per copy, so that 10x the prompts is 10x the work.
        suffix = "" if copy == 0 else f" (request {copy})"
        ids += [f"{pid}-{copy}" for pid in harmful["prompt_id"]]
        users += [f"{text}{suffix}" for text in harmful["prompt"]]
        responses += [REFUSAL] * len(harmful)
    math_ids, questions, solutions = [], [], []
    for copy in range(copies):
        suffix = "" if copy == 0 else f" (question {copy})"
        math_ids += [f"{pid}-{copy}" for pid in math["problem_id"]]
        questions += [f"{text}{suffix}" for text in math["question"]]
        solutions += [f"{r}\n{f}" for r, f in zip(math["reasoning"], math["final"])]
    return [
        InputSet("harmful", mode, ids, users, responses),
        InputSet("multiarith", mode, math_ids, questions, solutions, kl=True),
    ]


def ensure_reference(reference: str | None, workdir: Path) -> str:
    if reference:
        return reference
    path = workdir / "smollm2" / "source.json"
    if not path.exists():
        from rim.models import prepare_model

        print("converting the embedded SmolLM2 model once (~40 s) ...", flush=True)
        prepare_model("smollm2", {"source": "embedded:smollm2", "family": "auto", "dtype": "float32"}, path)
    return str(path)


def time_it(func) -> float:
    started = time.perf_counter()
    func()
    return time.perf_counter() - started


def timing(reference: str, n_prompts: int, repeats: int, threads: int, workdir: Path) -> dict:
    import torch

    from rim.activations import DumpSettings, batch_tensors, batches, dump_activations, encode_examples
    from rim.models import load_model

    torch.set_num_threads(threads)
    loaded = load_model(reference, device="cpu")
    sets = input_sets(n_prompts)
    settings = DumpSettings()
    encoded = [encode_examples(loaded.adapter, loaded.tokenizer, inputs, settings) for inputs in sets]
    tokens = sum(e.length for examples in encoded for e in examples)
    pad = loaded.tokenizer.pad_token_id or 0
    prepared = [
        batch_tensors(batch, settings, pad)[:2]
        for examples in encoded
        for batch in batches(examples, settings.batch_size)
    ]

    @torch.no_grad()
    def bare(logits_to_keep):
        for ids, attention in prepared:
            loaded.model(input_ids=ids, attention_mask=attention, use_cache=False, logits_to_keep=logits_to_keep)

    base_dump = workdir / "base.h5"

    def dump(share_prefix):
        # The base model's dump: it also keeps the top-k log-probs on the math inputs (KL baseline).
        variant = DumpSettings(share_prefix=share_prefix)
        dump_activations(loaded, sets, variant, base_dump, attributes={}, provenance={}, write_kl_reference=True)

    variants = {
        "bare forward": lambda: bare(0),
        "bare forward, no lm head": lambda: bare(1),
        "dump": lambda: dump(True),
        "dump, no prefix sharing": lambda: dump(False),
    }
    bare(1)  # warm-up (allocator, kernels)
    times = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(repeats):
        # A different order each round, so a slow spell of a shared machine hits every variant.
        for name in names[round_ % len(names) :] + names[: round_ % len(names)]:
            times[name].append(time_it(variants[name]))
    medians = {name: statistics.median(values) for name, values in times.items()}
    return {
        "tokens": tokens,
        "inputs": sum(len(e) for e in encoded),
        "seconds": medians,
        "all_seconds": times,
        "dump_mb": base_dump.stat().st_size / 2**20,
    }


MEMORY_CHILD = """
import json, sys, time
sys.path.insert(0, {scripts!r})
import torch
torch.set_num_threads({threads})
from bench_dump import input_sets
from rim.activations import DumpSettings, dump_activations
from rim.models import load_model

def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
loaded = load_model({reference!r}, device="cpu")
sets = input_sets({n_prompts}, copies={copies})
# Loading the weights peaks higher than the dump itself: reset the peak (VmHWM) after loading.
with open("/proc/self/clear_refs", "w") as handle:
    handle.write("5")
after_load = status("VmRSS")
started = time.perf_counter()
dump_activations(loaded, sets, DumpSettings(), {output!r}, attributes={{}}, provenance={{}}, write_kl_reference=True)
print(json.dumps({{"peak_rss_mb": status("VmHWM"), "rss_after_load_mb": after_load,
                  "seconds": time.perf_counter() - started, "inputs": sum(len(s.prompt_ids) for s in sets)}}))
"""


def memory(reference: str, n_prompts: int, factor: int, threads: int, workdir: Path) -> dict:
    """Peak RSS of a fresh process dumping 1x and factor x the prompts."""
    results = {}
    for copies in (1, factor):
        code = MEMORY_CHILD.format(
            scripts=str(REPO / "scripts"),
            threads=threads,
            reference=reference,
            n_prompts=n_prompts,
            copies=copies,
            output=str(workdir / f"memory{copies}.h5"),
        )
        env = dict(os.environ, PYTHONPATH=f"{REPO / 'benchmarks'}{os.pathsep}{REPO / 'scripts'}")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=False)
        if done.returncode != 0:
            raise SystemExit(f"memory run with {copies}x failed:\n{done.stderr[-3000:]}")
        results[copies] = json.loads(done.stdout.strip().splitlines()[-1])
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--reference", default=None, help="converted SmolLM2 reference (default: convert into --workdir)"
    )
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temporary one)")
    parser.add_argument("--prompts", type=int, default=32, help="harmful prompts (math inputs: half as many)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--memory-prompts", type=int, default=16, help="harmful prompts of the 1x memory run")
    parser.add_argument(
        "--memory-factor", type=int, default=10, help="the larger memory run has this many times the prompts"
    )
    parser.add_argument("--threads", type=int, default=1, help="torch threads (a dump job gets 1 of the 2 cores)")
    parser.add_argument("--skip-memory", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        workdir = Path(args.workdir or scratch)
        workdir.mkdir(parents=True, exist_ok=True)
        reference = ensure_reference(args.reference, workdir)
        result = timing(reference, args.prompts, args.repeats, args.threads, workdir)
        seconds = result["seconds"]
        print(
            f"\ninputs {result['inputs']}, tokens {result['tokens']}, threads {args.threads}, dump file "
            f"{result['dump_mb']:.1f} MB"
        )
        for name, value in seconds.items():
            print(f"  {name:28s} {value:7.2f} s   ({result['tokens'] / value:6.0f} tokens/s)")
        print(f"dump / bare forward:              {seconds['dump'] / seconds['bare forward']:.3f}  (target <= 1.15)")
        print(f"dump / bare forward, no lm head:  {seconds['dump'] / seconds['bare forward, no lm head']:.3f}")
        print(
            f"dump without prefix sharing / bare forward, no lm head: "
            f"{seconds['dump, no prefix sharing'] / seconds['bare forward, no lm head']:.3f}  (hooks, pooling, "
            "KL, writes)"
        )
        if not args.skip_memory:
            mem = memory(reference, args.memory_prompts, args.memory_factor, args.threads, workdir)
            small, large = mem[1], mem[args.memory_factor]
            for run in (small, large):
                print(
                    f"\npeak RSS while dumping {run['inputs']} inputs: {run['peak_rss_mb']:.0f} MB "
                    f"(RSS with the model loaded {run['rss_after_load_mb']:.0f} MB; the dump adds "
                    f"{run['peak_rss_mb'] - run['rss_after_load_mb']:.0f} MB; {run['seconds']:.1f} s)",
                    end="",
                )
            print(
                f"\nratio {args.memory_factor}x / 1x: {large['peak_rss_mb'] / small['peak_rss_mb']:.3f}  "
                "(target <= 1.2)"
            )


if __name__ == "__main__":
    main()
