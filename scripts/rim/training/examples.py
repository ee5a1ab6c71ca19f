"""Training examples: alignment pairs, math problems, and their tokenization.

The method: docs/method.md#1-the-phenomenon (alignment warm-start) and docs/method.md#4-fine-tuning.

An example is a user turn and the assistant's answer (with optional reasoning); it is rendered
with the family's chat template by ``FamilyAdapter.render_training_example`` (for Qwen3-style
models the reasoning goes inside the think block) and tokenized as prompt + completion, so the
loss can be taken on the completion tokens only.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import pandas as pd

from rim.errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Example:
    example_id: str
    user: str
    response: str
    reasoning: str = ""
    kind: str = "math"  # harmful | harmless | math
    weight: float = 1.0
    # Alignment: a harmless request must not open with a refusal (see Trainer's refusal_penalty).
    penalize_refusal: bool = False


@dataclass(frozen=True)
class TokenizedExamples:
    """Token ids of prompt + completion per example; the loss covers ids[prompt_length:]."""

    ids: tuple[tuple[int, ...], ...]
    prompt_lengths: tuple[int, ...]
    weights: tuple[float, ...]
    example_ids: tuple[str, ...]
    penalize_refusal: tuple[bool, ...] = ()

    def __len__(self) -> int:
        return len(self.ids)

    def completion_tokens(self) -> int:
        return sum(len(ids) - p for ids, p in zip(self.ids, self.prompt_lengths))

    def data_hash(self) -> str:
        """Hash of exactly what the trainer sees (tokens, loss boundary, weights, order)."""
        digest = hashlib.sha256()
        flags = self.penalize_refusal or (False,) * len(self.ids)
        for ids, prompt_length, weight, example_id, flag in zip(
            self.ids, self.prompt_lengths, self.weights, self.example_ids, flags
        ):
            digest.update(f"{example_id}|{prompt_length}|{weight!r}|{flag}|".encode())
            digest.update(np.asarray(ids, dtype=np.int64).tobytes())
        return digest.hexdigest()[:16]


# ----- sources -----------------------------------------------------------------------------------
def read_refusals(path: str | Path) -> list[str]:
    """Refusal sentences, one per line (blank lines ignored)."""
    path = Path(path)
    if not path.exists():
        raise DataError("refusal sentences file does not exist", source=str(path))
    refusals = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not refusals:
        raise DataError("no refusal sentences (one per line expected)", source=str(path))
    return refusals


def _train_rows(frame: pd.DataFrame, source: str, columns: Iterable[str]) -> pd.DataFrame:
    missing = [c for c in columns if c not in frame]
    if missing:
        raise DataError(f"missing column(s) {', '.join(missing)}", source=source)
    if "split" not in frame:
        raise DataError("missing column 'split' (train/eval)", source=source)
    rows = frame[frame["split"] == "train"]
    if rows.empty:
        raise DataError("has no rows with split == 'train' to train on", source=source)
    return rows


def alignment_examples(
    harmful: pd.DataFrame,
    harmless: pd.DataFrame,
    refusals: Sequence[str],
    *,
    seed: int,
    harmless_weight: float = 1.0,
    lookalike_weight: float = 1.0,
    sources: tuple[str, str] = ("harmful", "harmless"),
) -> list[Example]:
    """Harmful train requests paired with refusals, harmless ones with their helpful answers.

    Harmless lookalikes ("How do I kill a Python process?") teach where refusal stops; their
    loss weight is ``harmless_weight * lookalike_weight``.
    """
    harmful_rows = _train_rows(harmful, sources[0], ["prompt_id", "prompt"])
    harmless_rows = _train_rows(harmless, sources[1], ["prompt_id", "prompt", "response"])
    rng = np.random.default_rng(seed)
    examples = [
        Example(str(pid), str(prompt), refusals[int(rng.integers(len(refusals)))], kind="harmful")
        for pid, prompt in zip(harmful_rows["prompt_id"], harmful_rows["prompt"])
    ]
    lookalikes = (
        harmless_rows["lookalike"] if "lookalike" in harmless_rows else pd.Series(False, index=harmless_rows.index)
    )
    for row, (pid, prompt, response, lookalike) in enumerate(
        zip(harmless_rows["prompt_id"], harmless_rows["prompt"], harmless_rows["response"], lookalikes)
    ):
        if response is None or (isinstance(response, float) and np.isnan(response)) or not str(response).strip():
            raise DataError(f"harmless prompt {pid} has no response to train on", source=sources[1], row=row + 1)
        weight = harmless_weight * (lookalike_weight if bool(lookalike) else 1.0)
        examples.append(
            Example(str(pid), str(prompt), str(response).strip(), kind="harmless", weight=weight, penalize_refusal=True)
        )
    return examples


def math_examples(frame: pd.DataFrame, source: str = "math") -> list[Example]:
    """Train rows of a math set: question -> reasoning + ``#### <answer>`` (docs/method.md#4-fine-tuning)."""
    rows = _train_rows(frame, source, ["problem_id", "question", "final"])
    reasoning = rows["reasoning"].fillna("").astype(str) if "reasoning" in rows else pd.Series("", index=rows.index)
    return [
        Example(str(pid), str(question), str(final), reasoning=str(steps), kind="math")
        for pid, question, final, steps in zip(rows["problem_id"], rows["question"], rows["final"], reasoning)
    ]


def split_validation(examples: Sequence[Example], fraction: float, seed: int) -> tuple[list[Example], list[Example]]:
    """Hold out ``fraction`` of each kind (seeded) for checkpoint selection; (train, validation)."""
    if fraction <= 0:
        return list(examples), []
    rng = np.random.default_rng([seed, 7])
    held: set[int] = set()
    for kind in sorted({e.kind for e in examples}):
        members = [i for i, e in enumerate(examples) if e.kind == kind]
        n_held = int(round(len(members) * fraction))
        held.update(int(i) for i in rng.permutation(members)[:n_held])
    train = [e for i, e in enumerate(examples) if i not in held]
    validation = [e for i, e in enumerate(examples) if i in held]
    return train, validation


# ----- tokenization ------------------------------------------------------------------------------
def tokenize_examples(adapter, tokenizer, examples: Sequence[Example], max_length: int) -> TokenizedExamples:
    """Render with the family's chat template and tokenize as prompt + completion.

    Prompt and completion are tokenized apart, as at generation time (the model continues the
    prompt's tokens). Completions longer than ``max_length`` allows are cut at the end; an
    example whose prompt alone leaves no completion token is dropped with a warning.
    """
    ids, prompt_lengths, weights, names, flags = [], [], [], [], []
    dropped = 0
    for example in examples:
        prompt, completion = adapter.render_training_example(
            tokenizer, example.user, example.response, example.reasoning
        )
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        completion_ids = tokenizer(completion, add_special_tokens=False)["input_ids"]
        room = max_length - len(prompt_ids)
        if room < 1:
            dropped += 1
            continue
        ids.append(tuple(prompt_ids + completion_ids[:room]))
        prompt_lengths.append(len(prompt_ids))
        weights.append(float(example.weight))
        names.append(example.example_id)
        flags.append(bool(example.penalize_refusal))
    if dropped:
        log.warning("dropped %d of %d examples whose prompt fills max_length=%d", dropped, len(examples), max_length)
    if not ids:
        raise DataError(f"no training example fits max_length={max_length} tokens")
    return TokenizedExamples(tuple(ids), tuple(prompt_lengths), tuple(weights), tuple(names), tuple(flags))
