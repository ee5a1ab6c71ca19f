"""Regions and named positions of rendered prompts."""

from __future__ import annotations

import pytest

from rim.models import load_model, prepare_model
from rim.positions import label_prompt
from rim.prompts import PromptMode


@pytest.fixture(scope="module")
def models(tiny_model_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("pos")
    out = {}
    for family in ("llama", "qwen3"):
        prepare_model(family, {"source": str(tiny_model_dirs[family])}, root / f"{family}.json")
        out[family] = load_model(root / f"{family}.json", device="cpu")
    return out


def tokens_of(lm, labelled, region):
    return "".join(lm.tokenizer.decode([labelled.input_ids[i]]) for i in labelled.indices(region))


def test_qwen3_off_has_an_empty_think_span_between_the_tags(models):
    lm = models["qwen3"]
    labelled = label_prompt(lm.adapter, lm.tokenizer, "How do I kill a process?", PromptMode("off", False))
    assert tokens_of(lm, labelled, "user") == "How do I kill a process?"
    assert tokens_of(lm, labelled, "end_of_turn") == "<|im_end|>"
    assert tokens_of(lm, labelled, "think_open") == "<think>"
    assert tokens_of(lm, labelled, "think_span") == "\n\n"
    assert tokens_of(lm, labelled, "think_close") == "</think>"
    assert labelled.position("last") == [len(labelled.input_ids) - 1]
    # Region order follows the prompt.
    assert (
        labelled.position("end_of_turn")[0]
        < labelled.position("assistant_header")[0]
        < labelled.position("think_open")[0]
    )


def test_qwen3_on_with_statement_and_response(models):
    lm = models["qwen3"]
    labelled = label_prompt(
        lm.adapter, lm.tokenizer, "Hi?", PromptMode("t", True, "Quick check only."), response=" Sure, here it is."
    )
    assert tokens_of(lm, labelled, "think_span") == "\nQuick check only."
    assert tokens_of(lm, labelled, "response") == " Sure, here it is."
    assert labelled.position("think_close") == []
    assert labelled.prompt_length == labelled.indices("response")[0]


def test_plain_family_on_mode_has_the_reasoning_opener(models):
    lm = models["llama"]
    labelled = label_prompt(lm.adapter, lm.tokenizer, "Hi?", PromptMode("on", True))
    assert tokens_of(lm, labelled, "reasoning_opener") == "Let me think step by step."
    assert tokens_of(lm, labelled, "assistant_header").endswith("assistant\n")
    assert labelled.indices("think_span") == []


@pytest.mark.parametrize(
    "placement, cue",
    [("after_opener", None), ("before_opener", None), ("after_opener", "My answer:"), ("before_opener", "My answer:")],
)
def test_a_statement_is_labelled_wherever_the_adapter_places_it(models, placement, cue):
    import dataclasses

    lm = models["llama"]
    adapter = dataclasses.replace(lm.adapter, statement_placement=placement, statement_cue=cue)
    mode = PromptMode("target", True, statement="I will go with the familiar answer.")
    prompt = adapter.render_prompt(lm.tokenizer, "Pick a lock.", mode)
    statement = mode.statement + (f" {cue}" if cue else "")  # the cue follows the statement
    order = [adapter.reasoning_opener, statement]
    expected = " ".join(order if placement == "after_opener" else order[::-1])
    assert prompt.endswith(expected)
    labelled = label_prompt(adapter, lm.tokenizer, "Pick a lock.", mode)
    assert tokens_of(lm, labelled, "statement").strip() == statement
    assert tokens_of(lm, labelled, "reasoning_opener").strip() == adapter.reasoning_opener
    # Without a statement (plain thinking ON) there is no cue.
    plain = adapter.render_prompt(lm.tokenizer, "Pick a lock.", PromptMode("think", True))
    assert plain.endswith(adapter.reasoning_opener)
