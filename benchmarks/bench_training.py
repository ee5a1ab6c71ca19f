#!/usr/bin/env python
"""Training throughput of rim.training against a bare PyTorch loop doing the same step.

For full fine-tuning and LoRA on the embedded model (or any model reference), on GSM8k-style
examples with the default fine-tuning settings: tokens/s of
- ``rim``: rim.training.Trainer.train_step (data order, collation, weighted completion loss,
  clipping, AdamW, schedule, loss record);
- ``bare``: a hand-written loop over pre-built batches with the same tensors and the same
  arithmetic (logits only where an answer token is predicted), no bookkeeping;
- ``bare_full_logits``: the common bare loop, ``model(input_ids, labels=...)``, which computes
  logits at every position (for orientation: what restricting the logits saves).
Steps of the variants alternate, so a busy machine slows them alike. Overhead = rim / bare - 1
(target <= 25%). The cost of saving a checkpoint and the resumable state is printed apart: the
default run pays it at each of its checkpoint steps.

    python benchmarks/bench_training.py --reference results/models/smollm2/aligned.json
    python benchmarks/bench_training.py --reference /tmp/smollm2/source.json --steps 6 --threads 2
"""

from __future__ import annotations

import argparse
import copy
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.nn.functional as F

# Runnable from a clone without installing: the rim package lives in scripts/.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reference", required=True, help="model reference JSON (source.json or aligned.json)")
    parser.add_argument("--config", default="config/config.yaml", help="workflow config (the model's finetuning block)")
    parser.add_argument("--model", default="smollm2", help="model entry whose finetuning settings are used")
    parser.add_argument("--steps", type=int, default=6, help="timed steps per variant (after one warm-up step)")
    parser.add_argument("--methods", default="full,lora")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)

    from rim import cli
    from rim.config import load_config
    from rim.data.prepare import prepare_dataset
    from rim.models import load_model
    from rim.training import math_examples, prepare_for_training, tokenize_examples, trainer_settings
    from rim.training.trainer import Trainer, collate, completion_loss, loss_weights, make_optimizer, make_scheduler

    cli._quiet_libraries()
    torch.set_num_threads(args.threads)
    config = load_config(args.config)
    block = config["models"][args.model]["finetuning"]
    table = prepare_dataset("gsm8k_style", config["datasets"]["gsm8k_style"])
    print(f"threads={args.threads} steps={args.steps} batch={block['batch_size']} torch={torch.__version__}")
    print(f"{'method':<6} {'variant':<17} {'tokens/s':>9} {'s/step':>7}  overhead vs bare")
    for method in args.methods.split(","):
        # The config's checkpoint steps belong to its own run length, not to these few timed steps.
        settings = trainer_settings(
            {**block, "method": method, "steps": args.steps + 1, "checkpoint_steps": [0, args.steps + 1]}, "bench"
        )
        loaded = load_model(args.reference, device="cpu", dtype="float32")
        data = tokenize_examples(loaded.adapter, loaded.tokenizer, math_examples(table), settings.max_length)
        pad = loaded.tokenizer.pad_token_id
        models = {
            name: prepare_for_training(copy.deepcopy(loaded.model), settings, loaded.adapter, seed=0, where="bench")
            for name in ("rim", "bare", "bare_full_logits")
        }
        state_dir = Path(tempfile.mkdtemp(prefix="bench-training-"))
        trainer = Trainer(
            models["rim"], settings, data, seed=0, state_dir=state_dir, pad_token_id=pad, fingerprint="bench"
        )
        # The bare loops get the same batches, built before timing starts.
        batches = []
        for step in range(1, args.steps + 2):
            indices = trainer.order.batch(step)
            weights = loss_weights(data, indices, settings.loss_average, settings.first_token_weight)
            batches.append(collate(data, indices, pad, weights, settings.first_token_weight))
        optimizers = {name: make_optimizer(models[name], settings) for name in ("bare", "bare_full_logits")}
        schedulers = {name: make_scheduler(optimizers[name], settings) for name in optimizers}
        params = {name: [p for p in models[name].parameters() if p.requires_grad] for name in optimizers}

        def bare_step(name, batch):
            model, optimizer = models[name], optimizers[name]
            if name == "bare":
                loss = completion_loss(model, batch)
            else:
                labels = batch.input_ids.masked_fill(~torch.roll(batch.predict_mask, 1, dims=1), -100)
                logits = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, use_cache=False).logits
                loss = F.cross_entropy(logits[:, :-1].flatten(0, 1).float(), labels[:, 1:].flatten(), ignore_index=-100)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params[name], settings.max_grad_norm)
            optimizer.step()
            schedulers[name].step()
            optimizer.zero_grad(set_to_none=True)

        seconds = {name: 0.0 for name in models}
        for step, batch in enumerate(batches):
            for name in models:
                started = time.perf_counter()
                if name == "rim":
                    trainer.history.append(trainer.train_step())
                else:
                    bare_step(name, batch)
                if step > 0:  # the first step warms up allocators and kernels
                    seconds[name] += time.perf_counter() - started
        tokens = sum(batch.tokens for batch in batches[1:])
        for name in models:
            overhead = f"{100 * (seconds[name] / seconds['bare'] - 1):+.1f}%" if name != "bare" else ""
            print(
                f"{method:<6} {name:<17} {tokens / seconds[name]:>9.1f} {seconds[name] / args.steps:>7.2f}  {overhead}"
            )
        started = time.perf_counter()
        trainer.at_checkpoint()
        checkpoint_seconds = time.perf_counter() - started
        started = time.perf_counter()
        trainer.save_state()
        state_seconds = time.perf_counter() - started

        def size(path) -> float:
            return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file()) / 2**20

        print(
            f"{method:<6} checkpoint save {checkpoint_seconds:.1f} s "
            f"({size(trainer.checkpoint_dir(trainer.step)):.0f} MiB), "
            f"state save {state_seconds:.1f} s ({trainer.state_path.stat().st_size / 2**20:.0f} MiB)"
        )
        shutil.rmtree(state_dir)


if __name__ == "__main__":
    main()
