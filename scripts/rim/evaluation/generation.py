"""Batched greedy generation that records the first-token refusal score on the way (docs/method.md#3-judging).

Cost is what decides the design: the default run evaluates every checkpoint of every seed on a
2-core CPU, where one forward token costs ~2.7 ms. So

- prompts are batched, sorted by length (little padding), left-padded so every row continues
  from its last real token;
- the token prefix every prompt shares (chat template and system prompt: about half the tokens
  of a short request for SmolLM2) is run once and its key/value cache copied into each batch;
- a row leaves the batch as soon as it emits a stop token, and the batch stops when every row
  has, so short answers cost only their own tokens;
- the first-token refusal score (``rim.refusal.refusal_log_odds``) is read from the logits of the
  first generated position, which generation computes anyway: no extra forward pass.

Greedy decoding: the argmax token at every step (our decision: deterministic and cheap; the paper
states a temperature of 0 for its judge only).
"""

from __future__ import annotations

import copy
import inspect
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from rim.refusal import refusal_log_odds


@dataclass(frozen=True)
class Generation:
    """One prompt's greedy continuation."""

    response: str  # decoded text up to (not including) the stop token
    response_tokens: int  # tokens in ``response``
    finished: bool  # ended with a stop token (False: cut off at max_new_tokens)
    refusal_score: float  # first-token refusal log-odds; NaN when no refusal ids were given
    prompt_tokens: int


def stop_token_ids(loaded) -> list[int]:
    """Tokens that end an assistant turn: the tokenizer's and generation config's EOS, and the
    family's end-of-turn token (``<|im_end|>``, ``<end_of_turn>``) when it is one token."""
    tokenizer, model = loaded.tokenizer, loaded.model
    ids: list[int] = []

    def add(value) -> None:
        for item in value if isinstance(value, (list, tuple)) else [value]:
            if item is not None and int(item) not in ids:
                ids.append(int(item))

    add(tokenizer.eos_token_id)
    generation_config = getattr(model, "generation_config", None)
    if generation_config is not None:
        add(generation_config.eos_token_id)
    end_of_turn = loaded.adapter.end_of_turn(tokenizer)
    if end_of_turn:
        encoded = tokenizer.encode(end_of_turn, add_special_tokens=False)
        if len(encoded) == 1:
            add(encoded[0])
    return ids


def common_prefix_length(sequences: Sequence[Sequence[int]]) -> int:
    """Length of the token prefix all sequences share, leaving each at least one own token."""
    if not sequences:
        return 0
    shortest = min(len(s) for s in sequences)
    length = 0
    first = sequences[0]
    while length < shortest - 1 and all(s[length] == first[length] for s in sequences):
        length += 1
    return length


def _cache_keyword(model) -> str:
    """transformers 5.2x renamed ``past_key_values`` to ``cache``; accept both versions."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _cache_of(output):
    cache = getattr(output, "cache", None)
    return cache if cache is not None else output.past_key_values


def _left_pad(tokenizer, rows: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    padded = tokenizer.pad({"input_ids": rows}, padding=True, padding_side="left", return_tensors="pt")
    return padded["input_ids"].to(device), padded["attention_mask"].to(device)


@torch.inference_mode()
def greedy_generate(
    model,
    tokenizer,
    texts: Sequence[str],
    *,
    max_new_tokens: int,
    stop_ids: Sequence[int],
    refusal_ids: Sequence[int] | None = None,
    batch_size: int = 32,
    share_prefix: bool = True,
    progress: Callable[[int], None] | None = None,
) -> list[Generation]:
    """Greedy continuations of rendered prompts, in the order given.

    ``max_new_tokens=0`` only scores the first position (no generation). ``progress`` is called
    with the number of prompts finished after each batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    device = next(model.parameters()).device
    encoded = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
    if any(len(ids) == 0 for ids in encoded):
        raise ValueError("an empty prompt cannot be continued")
    cache_keyword = _cache_keyword(model)
    prefix_length = common_prefix_length(encoded) if share_prefix and len(encoded) > 1 else 0
    prefix_cache = None
    if prefix_length:
        prefix = torch.tensor([encoded[0][:prefix_length]], device=device)
        prefix_cache = _cache_of(model(input_ids=prefix, use_cache=True, logits_to_keep=1))
    stops = torch.tensor(sorted(set(stop_ids)), device=device, dtype=torch.long)

    # Longest first: the largest batch (peak memory) runs first, and padding stays small.
    order = sorted(range(len(encoded)), key=lambda i: -len(encoded[i]))
    results: dict[int, Generation] = {}
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        suffix_ids, suffix_mask = _left_pad(tokenizer, [encoded[i][prefix_length:] for i in chunk], device)
        rows = len(chunk)
        cache = None
        mask = suffix_mask
        if prefix_cache is not None:
            cache = copy.deepcopy(prefix_cache)
            cache.batch_repeat_interleave(rows)
            mask = torch.cat([torch.ones(rows, prefix_length, dtype=mask.dtype, device=device), mask], dim=1)
        # Positions count real tokens only, so a left-padded row is computed as if unpadded.
        positions = (mask.cumsum(-1) - 1).clamp(min=0)
        output = model(
            input_ids=suffix_ids,
            attention_mask=mask,
            position_ids=positions[:, prefix_length:],
            use_cache=max_new_tokens > 0,
            logits_to_keep=1,
            **{cache_keyword: cache},
        )
        logits = output.logits[:, -1, :]
        if refusal_ids:
            scores = refusal_log_odds(logits, refusal_ids).tolist()
        else:
            scores = [float("nan")] * rows
        tokens: list[list[int]] = [[] for _ in range(rows)]
        finished = [False] * rows
        active = torch.arange(rows, device=device)  # batch row -> index into chunk
        cache = _cache_of(output) if max_new_tokens > 0 else None
        last_position = positions[:, -1]
        for step in range(max_new_tokens):
            next_tokens = logits.argmax(dim=-1)
            ended = torch.isin(next_tokens, stops)
            for row, token, stop in zip(active.tolist(), next_tokens.tolist(), ended.tolist()):
                if stop:
                    finished[row] = True
                else:
                    tokens[row].append(token)
            keep = (~ended).nonzero(as_tuple=True)[0]
            if len(keep) == 0 or step == max_new_tokens - 1:
                break
            if len(keep) < len(active):
                # Finished rows leave the batch: their cache rows are dropped, no more compute.
                cache.batch_select_indices(keep)
                active, mask, last_position = active[keep], mask[keep], last_position[keep]
                next_tokens = next_tokens[keep]
            mask = torch.cat([mask, torch.ones(len(active), 1, dtype=mask.dtype, device=device)], dim=1)
            last_position = last_position + 1
            output = model(
                input_ids=next_tokens[:, None],
                attention_mask=mask,
                position_ids=last_position[:, None],
                use_cache=True,
                **{cache_keyword: cache},
            )
            logits, cache = output.logits[:, -1, :], _cache_of(output)
        for row, index in enumerate(chunk):
            results[index] = Generation(
                response=tokenizer.decode(tokens[row], skip_special_tokens=False),
                response_tokens=len(tokens[row]),
                finished=finished[row],
                refusal_score=float(scores[row]),
                prompt_tokens=len(encoded[index]),
            )
        if progress is not None:
            progress(rows)
    return [results[i] for i in range(len(encoded))]
