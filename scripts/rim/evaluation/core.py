"""Evaluate one prompt set in one prompt mode on a loaded model: ``evaluate_prompts``."""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Mapping

import numpy as np
import pandas as pd

from rim.errors import DataError
from rim.evaluation.generation import greedy_generate, stop_token_ids
from rim.evaluation.settings import EvaluationSettings
from rim.prompts import PromptMode, prompt_mode, render

log = logging.getLogger(__name__)


def as_prompt_mode(mode: PromptMode | tuple[str, Mapping]) -> PromptMode:
    """A PromptMode, or ``(name, config entry)`` of ``prompt_modes``."""
    if isinstance(mode, PromptMode):
        return mode
    name, entry = mode
    return prompt_mode(name, entry)


def prompt_items(table: pd.DataFrame, settings: EvaluationSettings) -> pd.DataFrame:
    """The rows to evaluate in our column names: prompt_id, prompt, category (+ gold_answer, lookalike).

    Math tables (problem_id, question, answer) are renamed; prompt tables pass through.
    """
    frame = table.rename(columns={"problem_id": "prompt_id", "question": "prompt"})
    if settings.kind == "math" and "gold_answer" not in frame:
        frame = frame.rename(columns={"answer": "gold_answer"})
    required = ["prompt_id", "prompt"] + (["gold_answer"] if settings.kind == "math" else [])
    missing = [column for column in required if column not in frame]
    if missing:
        raise DataError(
            f"the table for prompt set '{settings.prompt_set}' ({settings.kind}) lacks columns {missing}; "
            f"it has {list(table.columns)}"
        )
    if frame["prompt_id"].duplicated().any():
        duplicate = frame.loc[frame["prompt_id"].duplicated(), "prompt_id"].iloc[0]
        raise DataError(f"prompt set '{settings.prompt_set}' has the prompt id {duplicate!r} twice")
    keep = required + [c for c in ("category", "lookalike") if c in frame]
    frame = frame[keep].reset_index(drop=True)
    if "category" not in frame:
        frame["category"] = "none"
    frame["prompt_id"] = frame["prompt_id"].astype(str)
    return frame


def split_reasoning(response: str, adapter, mode: PromptMode) -> tuple[str, bool | None]:
    """The part of a response the judges read, and whether a native think block was closed.

    Families with a native think block (Qwen3) write ``<think>...</think>`` before the answer
    in thinking-ON modes: the judges read what follows ``</think>``. When the block is never
    closed (generation cut off inside it), they read the whole response. Other families: the
    whole response (their reasoning opener sits in the prompt).
    """
    if not (adapter.native_thinking and mode.thinking):
        return response, None
    if adapter.think_close in response:
        return response.rsplit(adapter.think_close, 1)[1].strip(), True
    return response, False


def _judge(frame: pd.DataFrame, texts: list[str], settings: EvaluationSettings) -> pd.DataFrame:
    from rim.evaluation import judges as judge_module

    specs = settings.judges
    if "phrases" in specs:
        if "phrases" not in settings.judge_cache:
            settings.judge_cache["phrases"] = judge_module.PhraseJudge.from_spec(specs["phrases"])
        judge = settings.judge_cache["phrases"]
        verdicts = [judge.judge(text) for text in texts]
        frame["phrases_refused"] = [v.refused for v in verdicts]
        frame["phrases_match"] = [v.phrase for v in verdicts]
    if "rubric" in specs:
        if "rubric" not in settings.judge_cache:
            settings.judge_cache["rubric"] = judge_module.RubricJudge.from_spec(specs["rubric"])
        verdicts = settings.judge_cache["rubric"].judge(frame["prompt"].tolist(), texts)
        frame["rubric_score"] = pd.array([v.score for v in verdicts], dtype="Int64")
        frame["rubric_misaligned"] = pd.array([v.misaligned for v in verdicts], dtype="boolean")
        frame["rubric_status"] = [v.status for v in verdicts]
        frame["rubric_answer"] = [v.answer for v in verdicts]
        frame["rubric_error"] = [v.error for v in verdicts]
    if "classifier" in specs:
        if "classifier" not in settings.judge_cache:
            settings.judge_cache["classifier"] = judge_module.ClassifierJudge.from_spec(specs["classifier"], settings.device)
        verdicts = settings.judge_cache["classifier"].judge(frame["prompt"].tolist(), texts)
        frame["classifier_unsafe_probability"] = [v.unsafe_probability for v in verdicts]
        frame["classifier_misaligned"] = [v.unsafe for v in verdicts]
    return frame


def evaluate_prompts(
    loaded,
    table: pd.DataFrame,
    mode: PromptMode | tuple[str, Mapping],
    settings: EvaluationSettings | Mapping,
    ablation: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """One row per prompt: the greedy response, its judge verdicts and the refusal score.

    See the package docstring (``rim.evaluation``) for the arguments and the columns.
    """
    from rim import cli
    from rim.hooks import ablate

    settings = EvaluationSettings.coerce(settings)
    mode = as_prompt_mode(mode)
    items = prompt_items(table, settings)
    adapter, tokenizer = loaded.adapter, loaded.tokenizer
    texts = [render(adapter, tokenizer, prompt, mode) for prompt in items["prompt"]]
    max_new_tokens = settings.generation_length(adapter.native_thinking, mode.thinking)
    if settings.kind == "math" and max_new_tokens == 0:
        raise DataError(f"math prompt set '{settings.prompt_set}' needs max_new_tokens > 0 to produce answers")
    refusal_ids = adapter.refusal_token_ids(tokenizer) if "refusal_score" in settings.judges else None
    progress = cli.Progress(len(texts), f"{settings.prompt_set}/{mode.name}", unit="prompts")
    intervention = ablate(loaded.model, adapter, **ablation) if ablation else contextlib.nullcontext()
    with intervention:
        generations = greedy_generate(
            loaded.model,
            tokenizer,
            texts,
            max_new_tokens=max_new_tokens,
            stop_ids=stop_token_ids(loaded),
            refusal_ids=refusal_ids,
            batch_size=settings.batch_size,
            share_prefix=settings.share_prefix,
            progress=progress.update,
        )
    frame = pd.DataFrame(
        {
            "prompt_set": settings.prompt_set,
            "kind": settings.kind,
            "mode": mode.name,
            "thinking": mode.thinking,
            "pattern": mode.pattern,
            "variant": mode.variant,
        },
        index=items.index,
    )
    frame = pd.concat([frame, items], axis=1)
    frame["response"] = [g.response for g in generations]
    frame["response_tokens"] = [g.response_tokens for g in generations]
    frame["prompt_tokens"] = [g.prompt_tokens for g in generations]
    frame["finished"] = [g.finished for g in generations]
    judged, closed = zip(*(split_reasoning(g.response, adapter, mode) for g in generations)) if generations else ((), ())
    frame["think_closed"] = pd.array(list(closed), dtype="boolean")
    if refusal_ids is not None:
        frame["refusal_score"] = np.array([g.refusal_score for g in generations], dtype=float)
    if settings.kind == "math":
        from rim.evaluation.math_answers import extract_answer, is_correct

        frame["extracted_answer"] = [extract_answer(text) for text in judged]
        frame["correct"] = [is_correct(text, gold) for text, gold in zip(judged, frame["gold_answer"])]
    if max_new_tokens > 0:
        # Nothing said is not compliance: the phrase judge's misalignment leaves these out.
        frame["response_empty"] = [not text.strip() for text in judged]
        frame = _judge(frame, list(judged), settings)
    return frame
