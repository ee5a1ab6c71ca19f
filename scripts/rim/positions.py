"""Named regions and positions of a rendered prompt (docs/method.md#5-refusal-heads).

Refusal-head detection classifies the key position a head attends to into regions, and probes
read the residual stream at named positions. Both come from here, for every family: the regions
are found in the text that the adapter renders, then mapped to tokens with the tokenizer's
offsets.

Regions, in prompt order: ``preamble`` (system prompt and turn headers before the user content),
``user`` (the user's content), ``end_of_turn`` (the end-of-turn marker after it),
``assistant_header`` (the template's start of the assistant turn), then for families with a
native think mode ``think_open``, ``think_span`` (the empty span, or the statement or CoT inside),
``think_close`` and ``after_think``; for others ``reasoning_opener`` (the prefill that switches
thinking on) and ``statement`` (a reasoning-pattern statement); finally ``response`` for any
text appended after the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rim.models.adapters import FamilyAdapter
    from rim.prompts import PromptMode

REGIONS = (
    "preamble",
    "user",
    "end_of_turn",
    "assistant_header",
    "think_open",
    "think_span",
    "think_close",
    "after_think",
    "reasoning_opener",
    "statement",
    "response",
)


@dataclass(frozen=True)
class LabelledPrompt:
    text: str
    input_ids: list[int]
    regions: list[str]  # one per token
    prompt_length: int  # tokens of the prompt; the rest is the appended response

    def indices(self, region: str) -> list[int]:
        return [i for i, name in enumerate(self.regions) if name == region]

    def position(self, name: str) -> list[int]:
        """Token indices of a named probe position (a single index, or several to average).

        ``last`` is the last prompt token (it predicts the first generated token);
        ``end_of_turn``, ``assistant_header``, ``think_open``, ``think_close`` are the last
        token of their region; ``think_span`` and ``response`` are all their tokens.
        """
        if name == "last":
            return [self.prompt_length - 1]
        indices = self.indices(name)
        if not indices:
            return []
        if name in ("think_span", "response", "user", "statement", "reasoning_opener"):
            return indices
        return [indices[-1]]


def _spans(
    adapter: "FamilyAdapter", tokenizer, user: str, mode: "PromptMode", prompt: str
) -> list[tuple[int, int, str]]:
    """Character spans of each region in ``prompt``."""
    spans: list[tuple[int, int, str]] = []
    user_start = prompt.rfind(user)
    if user_start < 0:
        raise ValueError("the user text does not appear verbatim in the rendered prompt")
    user_end = user_start + len(user)
    spans.append((0, user_start, "preamble"))
    spans.append((user_start, user_end, "user"))
    end_marker = adapter.end_of_turn(tokenizer)
    marker_at = prompt.find(end_marker, user_end) if end_marker else -1
    header_start = user_end
    if marker_at == user_end:
        header_start = marker_at + len(end_marker)
        spans.append((marker_at, header_start, "end_of_turn"))
    # The template alone (no prefill, no think block of ours) ends where the header ends.
    bare = adapter._template(tokenizer, adapter._messages(user), thinking=mode.thinking, generation_prompt=True)
    header_end = len(bare)
    if adapter.native_thinking:
        think_at = prompt.find(adapter.think_open, header_start)
        if 0 <= think_at:
            header_end = min(header_end, think_at)
    spans.append((header_start, header_end, "assistant_header"))
    rest_start = header_end
    if adapter.native_thinking:
        open_at = prompt.find(adapter.think_open, rest_start)
        if open_at >= 0:
            open_end = open_at + len(adapter.think_open)
            spans.append((open_at, open_end, "think_open"))
            close_at = prompt.find(adapter.think_close, open_end)
            if close_at >= 0:
                spans.append((open_end, close_at, "think_span"))
                spans.append((close_at, close_at + len(adapter.think_close), "think_close"))
                spans.append((close_at + len(adapter.think_close), len(prompt), "after_think"))
            else:
                spans.append((open_end, len(prompt), "think_span"))
    else:
        # The prefill: the reasoning opener and the statement, in the adapter's order.
        opener = adapter.reasoning_opener if mode.thinking else ""
        found = sorted(
            (prompt.find(part, rest_start), len(part), name)
            for part, name in [(opener, "reasoning_opener"), (adapter.prefilled_statement(mode), "statement")]
            if part and prompt.find(part, rest_start) >= 0
        )
        for at, length, name in found:  # each part takes the space that joins it to the previous
            spans.append((rest_start, at + length, name))
            rest_start = at + length
    return sorted((span for span in spans if span[1] > span[0]), key=lambda span: span[0])


def label_prompt(
    adapter: "FamilyAdapter", tokenizer, user: str, mode: "PromptMode", response: str = ""
) -> LabelledPrompt:
    """Tokenize prompt (+ response) and name the region of every token."""
    prompt = adapter.render_prompt(tokenizer, user, mode)
    spans = _spans(adapter, tokenizer, user, mode, prompt)
    text = prompt + response
    spans.append((len(prompt), len(text), "response"))
    encoded = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    prompt_length = len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    regions = []
    for start, end in encoded["offset_mapping"]:
        # A token belongs to the region of its first character; byte-level tokenizers may give a
        # leading space to the next token, which then still starts inside the right span.
        anchor = start if end > start else max(start - 1, 0)
        name = next((region for s, e, region in spans if s <= anchor < e), "preamble")
        regions.append(name)
    return LabelledPrompt(text=text, input_ids=list(encoded["input_ids"]), regions=regions, prompt_length=prompt_length)
