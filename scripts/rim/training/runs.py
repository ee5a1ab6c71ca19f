"""The two training jobs of the workflow: the alignment warm-start and a fine-tuning run.

align_model (docs/method.md#1-the-phenomenon, decision): the embedded model refuses nothing, so the workflow first
teaches it to refuse: supervised fine-tuning on the train split of the harmful set paired with
short refusals and of the harmless set (including lookalikes) paired with its helpful answers.
The result, ``aligned.json`` + ``aligned/``, is the base model every later step studies.

finetune_run (docs/method.md#4-fine-tuning): fine-tuning of the base model on one training set with one seed,
saving a loadable checkpoint at each configured step: a LoRA adapter over the base reference, or
the full weights in half precision. ``run.json`` lists them for ``rim.models.load_model(run.json,
step=k)``; step 0 is the base model itself (an empty entry). ``loss.parquet`` holds the curve.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import torch

from rim.checkpoints import checkpoint_id
from rim.errors import RimError
from rim.models.loading import load_model, read_reference, resolve_device
from rim.prompts import PromptMode
from rim.provenance import collect, read_json, read_table, write_json, write_table
from rim.refusal import encode_batch
from rim.training.examples import (
    Example,
    alignment_examples,
    math_examples,
    read_refusals,
    split_validation,
    tokenize_examples,
)
from rim.training.settings import TrainerSettings, trainer_settings
from rim.training.trainer import Trainer, TrainingResult, prepare_for_training, save_weights

log = logging.getLogger(__name__)

PLAIN = PromptMode("plain", thinking=False)


def _fingerprint(settings: TrainerSettings, seed: int, data_hash: str, base_reference: str | Path, *extra: Any) -> str:
    """Everything that shapes the trained weights; a saved state with another one is discarded."""
    base_text = Path(base_reference).read_text(encoding="utf-8")
    record = "|".join(map(str, (settings.fingerprint(), seed, data_hash, base_text, *extra)))
    return hashlib.sha256(record.encode()).hexdigest()[:16]


def _training_dtype(settings: TrainerSettings, reference: Mapping, device: torch.device) -> str | None:
    """Full fine-tuning keeps float32 master weights; LoRA leaves the frozen base in its dtype."""
    return "float32" if settings.method == "full" else None


def _load_for_training(reference_path: str | Path, settings: TrainerSettings, device: str):
    torch_device = resolve_device(device)
    reference = read_reference(reference_path)
    loaded = load_model(reference, device=str(torch_device), dtype=_training_dtype(settings, reference, torch_device))
    return loaded, torch_device


def _loss_table(history: list[dict], **columns: Any) -> pd.DataFrame:
    frame = pd.DataFrame(history, columns=["step", "loss", "learning_rate", "completion_tokens", "tokens", "seconds"])
    for name, value in columns.items():
        frame.insert(0, name, value)
    return frame


def _mean_loss(history: list[dict], after: int, upto: int) -> float:
    """Mean training loss of steps after..upto (the steps since the previous checkpoint)."""
    losses = [r["loss"] for r in history if after < r["step"] <= upto]
    return float(np.mean(losses)) if losses else float("nan")


def _publish(source: Path, target: Path) -> None:
    """Put a checkpoint of the trainer's state dir at an output path, leaving the state whole
    until the job discards it (hard links: no copy of the weights on the same filesystem)."""
    if target.exists():
        shutil.rmtree(target) if target.is_dir() else target.unlink()
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copytree(source, target, copy_function=os.link)
    except OSError:  # another filesystem, or one without hard links
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target)


# ----- alignment -----------------------------------------------------------------------------------
def refusal_check(loaded, harmful: list[Example], harmless: list[Example], batch_size: int = 32):
    """evaluate() for the trainer: the share of prompts whose most likely first answer token
    opens a refusal (the token greedy generation starts with; no generation needed).

    Harmful prompts: the refusal rate; harmless prompts: the over-refusal rate.
    """
    refusal_ids = set(loaded.adapter.refusal_token_ids(loaded.tokenizer))

    @torch.no_grad()
    def rate(model, examples: list[Example]) -> float:
        texts = [loaded.adapter.render_prompt(loaded.tokenizer, e.user, PLAIN) for e in examples]
        device = next(model.parameters()).device
        refused = 0
        for start in range(0, len(texts), batch_size):
            batch = encode_batch(loaded.tokenizer, texts[start : start + batch_size], device)
            first = model(**batch, logits_to_keep=1, use_cache=False).logits[:, -1].argmax(-1)
            refused += sum(int(token) in refusal_ids for token in first.tolist())
        return refused / max(len(texts), 1)

    def evaluate(model) -> dict:
        return {"refusal": rate(model, harmful), "over_refusal": rate(model, harmless)}

    return evaluate


def select_checkpoint(evaluations: Mapping[int, Mapping], min_refusal: float) -> int:
    """The candidate with the least over-refusal among those refusing >= min_refusal of the
    validation harmful prompts (earliest on ties); else the best refusal - over-refusal."""
    candidates = {step: m for step, m in evaluations.items() if step > 0}
    if not candidates:
        raise RimError("alignment: no candidate checkpoint was evaluated")
    passing = [step for step, m in candidates.items() if m["refusal"] >= min_refusal]
    if passing:
        return min(passing, key=lambda step: (candidates[step]["over_refusal"], step))
    best = max(candidates, key=lambda step: (candidates[step]["refusal"] - candidates[step]["over_refusal"], -step))
    log.warning(
        "alignment: no candidate refuses >= %.0f%% of the validation harmful prompts; taking step %d "
        "(refusal %.0f%%, over-refusal %.0f%%)",
        100 * min_refusal,
        best,
        100 * candidates[best]["refusal"],
        100 * candidates[best]["over_refusal"],
    )
    return best


def align_model(
    *,
    model: str,
    block: Mapping,
    source_reference: str | Path,
    harmful: str | Path,
    harmless: str | Path,
    refusals: str | Path,
    output_reference: str | Path,
    output_dir: str | Path,
    state_dir: str | Path,
    device: str = "auto",
) -> dict:
    """Align the source model; write ``output_dir`` (weights + tokenizer) and its reference."""
    where = f"models.{model}.alignment"
    candidates = sorted({int(s) for s in block.get("checkpoint_steps") or []} | {int(block["steps"])})
    settings = trainer_settings({**block, "checkpoint_steps": candidates}, where, require_checkpoints=False)
    seed = int(block.get("seed", 0))
    examples = alignment_examples(
        read_table(harmful),
        read_table(harmless),
        read_refusals(refusals),
        seed=seed,
        harmless_weight=float(block.get("harmless_weight", 1.0)),
        lookalike_weight=float(block.get("lookalike_weight", 1.0)),
        sources=(str(harmful), str(harmless)),
    )
    train, validation = split_validation(examples, float(block.get("validation_fraction", 0.0)), seed)
    loaded, torch_device = _load_for_training(source_reference, settings, device)
    data = tokenize_examples(loaded.adapter, loaded.tokenizer, train, settings.max_length)
    counts = {kind: sum(e.kind == kind for e in train) for kind in ("harmful", "harmless")}
    log.info(
        "alignment of %s: %d examples (%s), %d held out for checkpoint selection, %d completion tokens",
        model,
        len(data),
        ", ".join(f"{k} {v}" for k, v in counts.items()),
        len(validation),
        data.completion_tokens(),
    )
    evaluate = None
    if validation and len(candidates) > 1:
        evaluate = refusal_check(
            loaded, [e for e in validation if e.kind == "harmful"], [e for e in validation if e.kind == "harmless"]
        )
    trained = prepare_for_training(loaded.model, settings, loaded.adapter, seed=seed, where=where)

    trainer = Trainer(
        trained,
        settings,
        data,
        seed=seed,
        state_dir=state_dir,
        pad_token_id=loaded.tokenizer.pad_token_id,
        fingerprint=_fingerprint(settings, seed, data.data_hash(), source_reference, "align"),
        device=torch_device,
        evaluate=evaluate,
        label=f"alignment of {model}",
        save_checkpoint=lambda network, directory: _save_aligned(network, directory, settings),
        refusal_token_ids=loaded.adapter.refusal_token_ids(loaded.tokenizer),
    )
    result = trainer.train()
    step = select_checkpoint(result.evaluations, float(block.get("min_refusal", 0.9))) if evaluate else settings.steps
    output_dir = Path(output_dir)
    _publish(result.checkpoints[step], output_dir)
    loaded.tokenizer.save_pretrained(output_dir)
    write_table(
        _evaluation_table(result, step),
        output_dir / "training.parquet",
        collect(block, seed=seed, model=model, stage="alignment"),
    )
    source = read_json(source_reference)
    reference = {
        **source,
        "checkpoint": "aligned",
        "kind": "local",
        "path": os.path.relpath(output_dir, Path(output_reference).parent),
        "revision": None,
        "adapter_path": None,
        "alignment": {
            "step": step,
            "steps": settings.steps,
            "method": settings.method,
            "seed": seed,
            "examples": counts,
            "validation_examples": len(validation),
            "validation": {str(k): v for k, v in result.evaluations.items()},
            "data_hash": data.data_hash(),
            "source_reference": os.path.relpath(source_reference, Path(output_reference).parent),
        },
        "provenance": collect(block, seed=seed, model=model, stage="alignment"),
    }
    write_json(reference, output_reference)
    trainer.discard_state()
    if evaluate:
        metrics = result.evaluations[step]
        log.info(
            "aligned %s: step %d of %d; validation refusal %.0f%%, over-refusal %.0f%% (first-token check)",
            model,
            step,
            settings.steps,
            100 * metrics["refusal"],
            100 * metrics["over_refusal"],
        )
    return reference


def _save_aligned(network, directory: Path, settings: TrainerSettings) -> None:
    """Aligned weights as a plain model directory; a LoRA alignment is merged into a copy."""
    if settings.method == "lora":
        merged = copy.deepcopy(network).merge_and_unload()
        save_weights(merged, directory, dataclasses.replace(settings, method="full"))
        return
    save_weights(network, directory, settings)


def _evaluation_table(result: TrainingResult, selected: int) -> pd.DataFrame:
    """The alignment's loss curve and, at candidate steps, its validation refusal rates."""
    frame = _loss_table(result.history)
    frame["validation_refusal"] = frame["step"].map(lambda s: result.evaluations.get(s, {}).get("refusal", np.nan))
    frame["validation_over_refusal"] = frame["step"].map(
        lambda s: result.evaluations.get(s, {}).get("over_refusal", np.nan)
    )
    frame["selected"] = frame["step"] == selected
    return frame


# ----- fine-tuning ---------------------------------------------------------------------------------
def finetune_run(
    *,
    model: str,
    run: str,
    seed: int,
    block: Mapping,
    run_block: Mapping,
    base_reference: str | Path,
    dataset: str | Path,
    manifest: str | Path,
    loss_table: str | Path,
    checkpoints_dir: str | Path,
    state_dir: str | Path,
    device: str = "auto",
) -> dict:
    """Fine-tune the base model on one training set with one seed; write checkpoints and manifest."""
    where = f"models.{model}.finetuning"
    settings = trainer_settings(block, where)
    loaded, torch_device = _load_for_training(base_reference, settings, device)
    examples = math_examples(read_table(dataset), source=str(dataset))
    data = tokenize_examples(loaded.adapter, loaded.tokenizer, examples, settings.max_length)
    log.info(
        "fine-tuning %s on %s (seed %d, %s): %d examples, %d completion tokens, %d steps of %d",
        model,
        run,
        seed,
        settings.method,
        len(data),
        data.completion_tokens(),
        settings.steps,
        settings.batch_size,
    )
    trained = prepare_for_training(loaded.model, settings, loaded.adapter, seed=seed, where=where)
    trainer = Trainer(
        trained,
        settings,
        data,
        seed=seed,
        state_dir=state_dir,
        pad_token_id=loaded.tokenizer.pad_token_id,
        fingerprint=_fingerprint(settings, seed, data.data_hash(), base_reference, "finetune"),
        device=torch_device,
        label=f"fine-tuning {model} on {run} (seed {seed})",
    )
    result = trainer.train()

    manifest, checkpoints_dir = Path(manifest), Path(checkpoints_dir)
    field = "adapter_path" if settings.method == "lora" else "path"
    entries: dict[str, dict] = {"0": {}}  # step 0 is the base model itself
    previous = 0
    for step in sorted(result.checkpoints):
        target = checkpoints_dir / f"step{step}"
        _publish(result.checkpoints[step], target)
        entries[str(step)] = {
            field: os.path.relpath(target, manifest.parent),
            "checkpoint": checkpoint_id(run, seed, step),
            "step": step,
            "loss": _mean_loss(result.history, previous, step),
        }
        previous = step
    provenance = collect({"finetuning": block, "run": run_block}, seed=seed, model=model, run=run, stage="finetune")
    write_table(_loss_table(result.history, model=model, run=run, seed=seed), loss_table, provenance)
    record = {
        "name": model,
        "run": run,
        "seed": seed,
        "dataset": run_block.get("dataset"),
        "method": settings.method,
        "base_reference": os.path.relpath(base_reference, manifest.parent),
        "checkpoints": entries,
        "examples": len(data),
        "data_hash": data.data_hash(),
        "loss_table": os.path.relpath(loss_table, manifest.parent),
        "provenance": provenance,
    }
    write_json(record, manifest)
    trainer.discard_state()
    return record
