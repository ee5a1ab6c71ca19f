"""Evaluate one prompt set in one prompt mode on a loaded model: ``evaluate_prompts``."""

from __future__ import annotations

import contextlib
import logging
from typing import TYPE_CHECKING, Any, Mapping

import numpy as np
import pandas as pd

from rim.errors import DataError
from rim.evaluation.answers import SplitResponse, answer_follows_prompt, answer_opening, split_response
from rim.evaluation.settings import EvaluationSettings
from rim.prompts import PromptMode, prompt_mode, render

if TYPE_CHECKING:  # generation imports torch, which a judging job does without
    from rim.evaluation.generation import Generation

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


def _judge(frame: pd.DataFrame, settings: EvaluationSettings) -> pd.DataFrame:
    """Verdicts of the enabled judges on the answers; responses without an answer get none, and
    ``<judge>_outcome`` says refused, complied, empty or unfinished (rim.evaluation.answers)."""
    from rim.evaluation import judges as judge_module

    specs = settings.judges
    answered = (frame["answer_status"] == "answered").to_numpy()
    answers = frame.loc[answered, "answer"].tolist()
    prompts = frame.loc[answered, "prompt"].tolist()

    def spread(values, dtype=None):
        """Values for the answered rows, missing elsewhere."""
        series = pd.Series([None] * len(frame), index=frame.index, dtype=dtype or "object")
        series[answered] = list(values)
        return series

    def outcome(misaligned: pd.Series) -> pd.Series:
        verdict = misaligned.map({True: "complied", False: "refused"})
        return verdict.where(frame["answer_status"] == "answered", frame["answer_status"])

    if "phrases" in specs:
        if "phrases" not in settings.judge_cache:
            settings.judge_cache["phrases"] = judge_module.PhraseJudge.from_spec(specs["phrases"])
        judge = settings.judge_cache["phrases"]
        verdicts = [judge.judge(text) for text in answers]
        frame["phrases_read"] = spread(answer_opening(text, judge.sentences) for text in answers)
        frame["phrases_refused"] = spread((v.refused for v in verdicts), "boolean")
        frame["phrases_match"] = spread(v.phrase for v in verdicts)
        frame["phrases_outcome"] = outcome(~frame["phrases_refused"])
    if "rubric" in specs:
        if "rubric" not in settings.judge_cache:
            settings.judge_cache["rubric"] = judge_module.RubricJudge.from_spec(specs["rubric"])
        verdicts = settings.judge_cache["rubric"].judge(prompts, answers)
        frame["rubric_score"] = spread((v.score for v in verdicts), "Int64")
        frame["rubric_misaligned"] = spread((v.misaligned for v in verdicts), "boolean")
        frame["rubric_status"] = spread(v.status for v in verdicts)
        frame["rubric_answer"] = spread(v.answer for v in verdicts)
        frame["rubric_error"] = spread(v.error for v in verdicts)
        frame["rubric_outcome"] = outcome(frame["rubric_misaligned"])
    if "classifier" in specs:
        if "classifier" not in settings.judge_cache:
            settings.judge_cache["classifier"] = judge_module.ClassifierJudge.from_spec(
                specs["classifier"], settings.device
            )
        verdicts = settings.judge_cache["classifier"].judge(prompts, answers)
        frame["classifier_unsafe_probability"] = spread((v.unsafe_probability for v in verdicts), "Float64")
        frame["classifier_misaligned"] = spread((v.unsafe for v in verdicts), "boolean")
        frame["classifier_outcome"] = outcome(frame["classifier_misaligned"])
    return frame


def answer_refusal_scores(
    loaded,
    texts: list[str],
    generations: list[Generation],
    splits: list[SplitResponse],
    mode: PromptMode,
    refusal_ids,
    batch_size: int,
) -> np.ndarray:
    """The refusal score where the answer starts (docs/method.md#answers).

    Where the answer follows the prompt, that is the first generated position, which generation
    scored already. Where reasoning comes first, the prompt and the model's own reasoning up to the
    answer are fed back (teacher-forced) and the score is read at the next position; NaN where
    the answer never started (an unclosed think block, no answer marker).
    """
    from rim.refusal import first_token_refusal_scores

    if answer_follows_prompt(loaded.adapter, mode):
        return np.array([g.refusal_score for g in generations], dtype=float)
    scores = np.full(len(generations), np.nan)
    forced = [i for i, split in enumerate(splits) if split.answer_start is not None]
    if forced:
        contexts = [texts[i] + generations[i].response[: splits[i].answer_start] for i in forced]
        scores[forced] = first_token_refusal_scores(loaded.model, loaded.tokenizer, contexts, refusal_ids, batch_size)
    return scores


def evaluate_prompts(
    loaded,
    table: pd.DataFrame,
    mode: PromptMode | tuple[str, Mapping],
    settings: EvaluationSettings | Mapping,
    ablation: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """One row per prompt: the greedy response, its judge verdicts and the refusal score.

    See the package docstring (``rim.evaluation``) for the arguments and the columns. The same as
    ``judge_responses(generate_responses(...))``: the workflow runs the two halves as separate
    jobs, so that editing a judge re-judges without generating again.
    """
    settings = EvaluationSettings.coerce(settings)
    return judge_responses(generate_responses(loaded, table, mode, settings, ablation), settings)


def generate_responses(
    loaded,
    table: pd.DataFrame,
    mode: PromptMode | tuple[str, Mapping],
    settings: EvaluationSettings | Mapping,
    ablation: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """The model's half of an evaluation: one row per prompt with the greedy response, where its
    answer starts and the refusal scores; no verdicts (``judge_responses`` adds them)."""
    from rim import cli
    from rim.evaluation.generation import greedy_generate, stop_token_ids

    settings = EvaluationSettings.coerce(settings)
    mode = as_prompt_mode(mode)
    items = prompt_items(table, settings)
    adapter, tokenizer = loaded.adapter, loaded.tokenizer
    texts = [render(adapter, tokenizer, prompt, mode) for prompt in items["prompt"]]
    max_new_tokens = settings.generation_length(mode.thinking)
    if settings.kind == "math" and max_new_tokens == 0:
        raise DataError(f"math prompt set '{settings.prompt_set}' needs max_new_tokens > 0 to produce answers")
    refusal_ids = adapter.refusal_token_ids(tokenizer) if "refusal_score" in settings.judges else None
    progress = cli.Progress(len(texts), f"{settings.prompt_set}/{mode.name}", unit="prompts")
    with _ablation(loaded, ablation):
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
    if max_new_tokens > 0:
        splits = [split_response(g.response, adapter, mode, finished=g.finished) for g in generations]
        frame["reasoning"] = [split.reasoning for split in splits]
        frame["answer"] = [split.answer for split in splits]
        frame["answer_status"] = [split.status for split in splits]
        frame["think_closed"] = pd.array([split.think_closed for split in splits], dtype="boolean")
    if refusal_ids is not None:
        frame["first_token_refusal_score"] = np.array([g.refusal_score for g in generations], dtype=float)
        if max_new_tokens > 0 or answer_follows_prompt(adapter, mode):
            with _ablation(loaded, ablation):
                frame["refusal_score"] = answer_refusal_scores(
                    loaded,
                    texts,
                    generations,
                    splits if max_new_tokens > 0 else [],
                    mode,
                    refusal_ids,
                    settings.batch_size,
                )
        else:  # nothing generated: where the reasoning would lead is unknown
            frame["refusal_score"] = np.nan
    return frame


def judge_responses(frame: pd.DataFrame, settings: EvaluationSettings | Mapping) -> pd.DataFrame:
    """The verdicts on a table of ``generate_responses``: the extracted answer and its
    correctness on math sets, and the enabled judges where something was generated."""
    settings = EvaluationSettings.coerce(settings)
    frame = frame.copy()
    missing = [column for column in ("prompt", "response") if column not in frame]
    if settings.kind == "math":
        missing += [column for column in ("gold_answer", "answer") if column not in frame]
    if missing:
        raise DataError(f"the responses of prompt set '{settings.prompt_set}' lack columns {sorted(set(missing))}")
    if settings.kind == "math":
        from rim.evaluation.math_answers import extract_answer, is_correct

        frame["extracted_answer"] = [extract_answer(text) for text in frame["answer"]]
        frame["correct"] = [is_correct(text, gold) for text, gold in zip(frame["answer"], frame["gold_answer"])]
    if "answer_status" in frame:  # something was generated (max_new_tokens > 0)
        frame = _judge(frame, settings)
    return frame


def answer_contexts(
    loaded, texts: list[str], mode: PromptMode, *, thinking_tokens: int, batch_size: int = 8
) -> list[str | None]:
    """Each rendered prompt followed by the model's own greedy reasoning up to where its answer
    starts (the position a refusal score or a patch of the answer reads); None where no answer
    starts within ``thinking_tokens``. Prompts whose answer follows at once come back as given."""
    from rim.evaluation.generation import greedy_generate, stop_token_ids

    if answer_follows_prompt(loaded.adapter, mode):
        return list(texts)
    generations = greedy_generate(
        loaded.model,
        loaded.tokenizer,
        texts,
        max_new_tokens=thinking_tokens,
        stop_ids=stop_token_ids(loaded),
        batch_size=batch_size,
    )
    contexts: list[str | None] = []
    for text, generation in zip(texts, generations):
        split = split_response(generation.response, loaded.adapter, mode, finished=generation.finished)
        contexts.append(None if split.answer_start is None else text + generation.response[: split.answer_start])
    return contexts


def _ablation(loaded, ablation: Mapping[str, Any] | None):
    """The evaluation's intervention (rim.hooks.ablate), for generation and the refusal scores."""
    from rim.hooks import ablate

    return ablate(loaded.model, loaded.adapter, **ablation) if ablation else contextlib.nullcontext()
