"""Refusal, misalignment and math evaluation (docs/method.md#1-the-phenomenon and #3-judging).

The evaluation rule runs one prompt set in one prompt mode on one checkpoint; the stages that
test interventions (zeroing safety neurons, docs/method.md#6-safety-neurons-and-ras; zeroing refusal
heads, docs/method.md#5-refusal-heads) call the same code with an ablation. Stable API::

    from rim.evaluation import EvaluationSettings, evaluate_prompts, select_prompts, summarize

    loaded = rim.models.load_model(reference, step=step)
    settings = EvaluationSettings.from_config(config, "harmful")   # or the rule's params mapping
    prompts = select_prompts(rim.provenance.read_table("results/data/harmful.parquet"), settings)
    mode = rim.prompts.prompt_modes(config["prompt_modes"])["no_think"]
    plain = evaluate_prompts(loaded, prompts, mode, settings)
    zeroed = evaluate_prompts(loaded, prompts, mode, settings, ablation={"zero_neurons": {12: [7, 99]}})
    rates = summarize(pd.concat([plain.assign(condition="none"), zeroed.assign(condition="safety")]))

``evaluate_prompts(loaded, table, mode, settings, ablation=None) -> DataFrame``
    ``loaded``: a ``rim.models.LoadedModel``. ``table``: the rows to evaluate, every one of them
    (a prepared prompt table: prompt_id, prompt, category, lookalike; or a math table:
    problem_id, question, answer); ``select_prompts`` picks the configured split and limit.
    ``mode``: a ``rim.prompts.PromptMode`` or ``(name, prompt_modes entry)``. ``settings``: an
    ``EvaluationSettings`` (reuse one object across calls: judges that load a model are built
    once) or the mapping ``{"prompt_set": entry with "name", "generation": ..., "judges": ...}``.
    ``ablation``: keyword arguments of ``rim.hooks.ablate`` (``zero_heads``, ``mean_heads`` with
    ``head_means``, ``zero_neurons``), active for the whole generation.
    Returns one row per prompt, in the order of ``table``:
    ``prompt_set, kind, mode, thinking, pattern, variant, prompt_id, prompt, category``
    (+ ``lookalike``, + ``gold_answer`` for math), ``response`` (greedy, up to the stop token),
    ``response_tokens``, ``prompt_tokens``, ``finished`` (False: cut at the token budget),
    ``reasoning`` and ``answer`` (``rim.evaluation.answers``: judges read the answer),
    ``answer_status`` (answered / empty / unfinished), ``think_closed`` (native think blocks
    only), ``refusal_score`` (refusal log-odds at the first answer position, ``rim.refusal``;
    NaN without an answer) and ``first_token_refusal_score`` (at the first generated
    position), then per enabled judge, on answered rows: ``phrases_read`` (the opening it read),
    ``phrases_refused``, ``phrases_match``; ``rubric_score``, ``rubric_misaligned``,
    ``rubric_status`` (ok / unparseable / failed), ``rubric_answer``, ``rubric_error``;
    ``classifier_unsafe_probability``, ``classifier_misaligned``; and ``<judge>_outcome``
    (refused / complied / empty / unfinished) on every row; for math ``extracted_answer``,
    ``correct`` (read from the answer).

``summarize(frame, by=None, *, n_boot=1000, level=0.95, seed=0, outcomes=None) -> DataFrame``
    Tidy rates with bootstrap intervals and counts per group (see ``rim.evaluation.summary``;
    ``outcomes`` is the config's ``evaluation.outcomes`` convention);
    ``contrasts`` gives paired mode differences (think - no_think, target - control).

The step script ``scripts/evaluate.py`` adds ``model, checkpoint, run, seed, step, dataset``
columns and writes ``results/eval/{model}/{ckpt}/{promptset}/{mode}.parquet``.

Importing this package is cheap (the Snakefile imports its settings); torch loads on first use.
"""

from __future__ import annotations

import importlib

from rim.evaluation.settings import EvaluationSettings, select_prompts

_LAZY = {
    "evaluate_prompts": "rim.evaluation.core",
    "generate_responses": "rim.evaluation.core",
    "judge_responses": "rim.evaluation.core",
    "split_response": "rim.evaluation.answers",
    "greedy_generate": "rim.evaluation.generation",
    "summarize": "rim.evaluation.summary",
    "summarize_tables": "rim.evaluation.summary",
    "contrasts": "rim.evaluation.summary",
    "extract_answer": "rim.evaluation.math_answers",
}

__all__ = ["EvaluationSettings", "select_prompts", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'rim.evaluation' has no attribute {name!r}")
