"""Head-patching scans (docs/method.md#5-refusal-heads, decision: our scan beyond the paper).

For every (layer, head): take that head's output -- its slice of the input of the attention
output projection -- from a *source* run (e.g. thinking OFF, or the base model) and put it into a
*target* run (thinking ON, or a fine-tuned checkpoint); the effect is the change of the target's
first-token refusal score (``rim.refusal``). Patched positions are ``last`` (the position that
predicts the first generated token; works for source and target prompts of different lengths)
or ``all`` (every position; source and target must have the same length).

Three implementations:
- ``naive_scan``: one full forward pass per head (the reference; TransformerLens-style cost);
- ``exact_scan``: equal to the naive loop up to float rounding, but it recomputes only what a
  head can change. A head in layer l changes nothing before layer l, and, patched at the last
  position, nothing at earlier positions (causal attention): ``last`` runs the prompt once to
  cache keys and values, then feeds only the last token for a batch of heads at once (one row per
  head), replaying the clean outputs of the layers below the batch's first head; ``all`` replays
  the clean outputs of layers < l and runs layers l.. for a batch of the heads of layer l;
- ``attribution_scan``: first-order attribution patching, effect ~ grad . (source - target)
  per head slice, for all heads from one forward and one backward pass per batch of prompts
  (an approximation: exact where the score is linear in the head outputs).

Effects are arrays [prompts, layers, heads]; ``scan_summary`` turns them into the tidy table
(mean over prompts with a bootstrap interval).
"""

from __future__ import annotations

import contextlib
import copy
import inspect
from typing import Callable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from rim.heads import left_pad, position_ids
from rim.hooks import attached
from rim.refusal import refusal_log_odds
from rim.stats import bootstrap

POSITIONS = ("last", "all")


def _check_positions(positions: str) -> None:
    if positions not in POSITIONS:
        raise ValueError(f"patched positions must be one of {POSITIONS}, not {positions!r}")


def _grid(loaded) -> tuple[int, int, int]:
    adapter, model = loaded.adapter, loaded.model
    return adapter.num_layers(model), adapter.num_heads(model), adapter.head_dim(model)


def _as_ids(sequence: Sequence[int], device) -> torch.Tensor:
    return torch.tensor([list(sequence)], dtype=torch.long, device=device)


def _cache_keyword(model) -> str:
    """transformers 5 names the KV cache argument ``cache``; 4.x names it ``past_key_values``."""
    return "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"


def _new_cache(model):
    from transformers import DynamicCache

    try:
        return DynamicCache(config=model.config)
    except TypeError:
        return DynamicCache()


def _score(logits: torch.Tensor, refusal_ids: Sequence[int]) -> torch.Tensor:
    return refusal_log_odds(logits[:, -1, :], refusal_ids)


# ----- head outputs of the source run ----------------------------------------------------------
@torch.no_grad()
def head_inputs(
    loaded, sequences: Sequence[Sequence[int]], positions: str = "last", batch_size: int = 8
) -> list[torch.Tensor]:
    """Per prompt, [layers, patched positions, heads * head_dim]: the input of every attention
    output projection at the patched positions (the last one, or all), on the CPU in float32."""
    _check_positions(positions)
    model, adapter, device = loaded.model, loaded.adapter, loaded.device
    layers = adapter.num_layers(model)
    pad_id = loaded.tokenizer.pad_token_id or 0
    seen: dict[int, torch.Tensor] = {}

    def capture(layer):
        def hook(module, args):
            seen[layer] = args[0].detach()

        return hook

    out: list[torch.Tensor | None] = [None] * len(sequences)
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    hooks = {adapter.attention_output_name(layer): capture(layer) for layer in range(layers)}
    with attached(model, forward_pre=hooks):
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            ids, mask = left_pad([sequences[i] for i in chunk], pad_id, device)
            model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), logits_to_keep=1)
            stacked = torch.stack([seen[layer] for layer in range(layers)])  # [L, B, T, W]
            for row, index in enumerate(chunk):
                length = 1 if positions == "last" else len(sequences[index])
                out[index] = stacked[:, row, -length:, :].float().cpu()
    return out


# ----- patching hooks --------------------------------------------------------------------------
def _patch_hooks(loaded, rows: Sequence[tuple[int, int]], source: torch.Tensor) -> dict[str, Callable]:
    """Forward-pre hooks on the output projections: row k of the batch gets head rows[k] from
    ``source`` ([layers, S, width]) at the last S positions of the sequence it is given."""
    adapter = loaded.adapter
    _, _, head_dim = _grid(loaded)
    width = source.shape[-1]
    hooks: dict[str, Callable] = {}
    for layer in sorted({layer for layer, _ in rows}):
        mask = torch.zeros(len(rows), 1, width, dtype=torch.bool)
        for k, (row_layer, head) in enumerate(rows):
            if row_layer == layer:
                mask[k, 0, head * head_dim : (head + 1) * head_dim] = True

        def hook(module, args, mask=mask, values=source[layer]):
            hidden, *rest = args
            span = values.shape[0]
            values = values.to(hidden)
            patched = torch.where(mask.to(hidden.device), values.unsqueeze(0), hidden[:, -span:, :])
            hidden = torch.cat([hidden[:, :-span, :], patched], dim=1) if hidden.shape[1] > span else patched
            return (hidden, *rest)

        hooks[adapter.attention_output_name(layer)] = hook
    return hooks


def _all_heads(loaded) -> list[tuple[int, int]]:
    layers, heads, _ = _grid(loaded)
    return [(layer, head) for layer in range(layers) for head in range(heads)]


def _check_pair(target: Sequence[int], source: torch.Tensor, positions: str, index: int) -> None:
    if positions == "all" and source.shape[1] != len(target):
        raise ValueError(
            f"prompt {index}: patching all positions needs source and target of the same length "
            f"({source.shape[1]} vs {len(target)} tokens); patch the last position instead"
        )


# ----- the naive loop: one full forward pass per head ------------------------------------------
@torch.no_grad()
def naive_scan(
    loaded,
    targets: Sequence[Sequence[int]],
    sources: Sequence[torch.Tensor],
    refusal_ids: Sequence[int],
    positions: str = "last",
    progress=None,
) -> np.ndarray:
    """[prompts, layers, heads] effects, each from its own full forward pass of the target."""
    _check_positions(positions)
    layers, heads, _ = _grid(loaded)
    model, device = loaded.model, loaded.device
    effects = np.zeros((len(targets), layers, heads))
    for index, (target, source) in enumerate(zip(targets, sources)):
        _check_pair(target, source, positions, index)
        ids = _as_ids(target, device)
        clean = _score(model(input_ids=ids, logits_to_keep=1).logits, refusal_ids)
        for layer, head in _all_heads(loaded):
            with attached(model, forward_pre=_patch_hooks(loaded, [(layer, head)], source)):
                patched = _score(model(input_ids=ids, logits_to_keep=1).logits, refusal_ids)
            effects[index, layer, head] = float(patched - clean)
        if progress is not None:
            progress.update(1)
    return effects


# ----- the exact scan --------------------------------------------------------------------------
def _chunks(items: Sequence, size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _record_layers(loaded, recorded: dict) -> dict[str, Callable]:
    """Forward hooks that keep every decoder layer's output (to replay it later)."""

    def record(layer):
        def hook(module, args, output):
            recorded[layer] = output

        return hook

    path = loaded.adapter.layers_path
    return {f"{path}.{layer}": record(layer) for layer in range(loaded.adapter.num_layers(loaded.model))}


def _exact_last(loaded, target: Sequence[int], source: torch.Tensor, refusal_ids, head_batch: int) -> np.ndarray:
    """Cache keys/values of every position but the last once; then run only the last token, one
    batch row per head, replaying the clean outputs of the layers below the batch's first head."""
    model, device = loaded.model, loaded.device
    layers, heads, _ = _grid(loaded)
    keyword = _cache_keyword(model)
    ids = _as_ids(target, device)
    length = ids.shape[1]
    effects = np.zeros((layers, heads))
    if length < 2:  # nothing to cache: every position is patched
        return _exact_all(loaded, target, source, refusal_ids, head_batch)
    prefix = _new_cache(model)
    model(input_ids=ids[:, :-1], use_cache=True, **{keyword: prefix})
    recorded: dict[int, object] = {}

    def last_token(
        rows: Sequence[tuple[int, int]], count: int, hooks: Mapping[str, Callable], forward: Mapping[str, Callable]
    ):
        cache = copy.deepcopy(prefix)
        if count > 1:
            cache.batch_repeat_interleave(count)
        last = ids[:, -1:].expand(count, 1)
        where = torch.full((count, 1), length - 1, dtype=torch.long, device=device)
        first = min((layer for layer, _ in rows), default=0)
        replay = {earlier: _expand(recorded[earlier], count) for earlier in range(first)}
        with _layers_replayed(loaded, replay), attached(model, forward_pre=hooks, forward=forward):
            logits = model(
                input_ids=last, position_ids=where, use_cache=True, logits_to_keep=1, **{keyword: cache}
            ).logits
        return _score(logits, refusal_ids)

    clean = float(last_token([], 1, {}, _record_layers(loaded, recorded))[0])
    for rows in _chunks(_all_heads(loaded), head_batch):
        scores = last_token(rows, len(rows), _patch_hooks(loaded, rows, source), {}).cpu().numpy()
        for (layer, head), score in zip(rows, scores):
            effects[layer, head] = score - clean
    return effects


@contextlib.contextmanager
def _layers_replayed(loaded, outputs: Mapping[int, object]) -> Iterator[None]:
    """Layers in ``outputs`` return their recorded output instead of computing it."""
    layers = loaded.adapter.layers(loaded.model)
    try:
        for index, output in outputs.items():
            layers[index].forward = lambda *args, _output=output, **kwargs: _output
        yield
    finally:
        for index in outputs:
            layers[index].__dict__.pop("forward", None)


def _expand(output, count: int):
    """A recorded layer output repeated for ``count`` batch rows (tensor or tuple of them)."""
    if isinstance(output, torch.Tensor):
        return output.expand(count, *output.shape[1:])
    if isinstance(output, tuple):
        return tuple(_expand(item, count) for item in output)
    return output


def _exact_all(loaded, target: Sequence[int], source: torch.Tensor, refusal_ids, head_batch: int) -> np.ndarray:
    """Record every layer's clean output once; for layer l, replay layers < l and run l.. only."""
    model, device = loaded.model, loaded.device
    layers, heads, _ = _grid(loaded)
    ids = _as_ids(target, device)
    recorded: dict[int, object] = {}
    with attached(model, forward=_record_layers(loaded, recorded)):
        clean = float(_score(model(input_ids=ids, logits_to_keep=1).logits, refusal_ids)[0])
    effects = np.zeros((layers, heads))
    for layer in range(layers):
        for rows in _chunks([(layer, head) for head in range(heads)], head_batch):
            count = len(rows)
            replay = {earlier: _expand(recorded[earlier], count) for earlier in range(layer)}
            with _layers_replayed(loaded, replay), attached(model, forward_pre=_patch_hooks(loaded, rows, source)):
                logits = model(input_ids=ids.expand(count, -1), logits_to_keep=1).logits
            for (_, head), score in zip(rows, _score(logits, refusal_ids).cpu().numpy()):
                effects[layer, head] = score - clean
    return effects


@torch.no_grad()
def exact_scan(
    loaded,
    targets: Sequence[Sequence[int]],
    sources: Sequence[torch.Tensor],
    refusal_ids: Sequence[int],
    positions: str = "last",
    head_batch: int = 32,
    progress=None,
) -> np.ndarray:
    """[prompts, layers, heads] effects equal to ``naive_scan``'s, computed without redoing what
    a patched head cannot change; ``head_batch`` heads share one forward pass."""
    _check_positions(positions)
    layers, heads, _ = _grid(loaded)
    effects = np.zeros((len(targets), layers, heads))
    scan = _exact_last if positions == "last" else _exact_all
    for index, (target, source) in enumerate(zip(targets, sources)):
        _check_pair(target, source, positions, index)
        effects[index] = scan(loaded, target, source, refusal_ids, max(1, int(head_batch)))
        if progress is not None:
            progress.update(1)
    return effects


# ----- attribution patching --------------------------------------------------------------------
def attribution_scan(
    loaded,
    targets: Sequence[Sequence[int]],
    sources: Sequence[torch.Tensor],
    refusal_ids: Sequence[int],
    positions: str = "last",
    batch_size: int = 8,
    progress=None,
) -> np.ndarray:
    """[prompts, layers, heads] first-order effects: the gradient of the target's refusal score
    with respect to each head's slice, dotted with (source - target) over the patched positions.
    One forward and one backward pass per batch of prompts give every head."""
    _check_positions(positions)
    model, adapter, device = loaded.model, loaded.adapter, loaded.device
    layers, heads, head_dim = _grid(loaded)
    pad_id = loaded.tokenizer.pad_token_id or 0
    effects = np.zeros((len(targets), layers, heads))
    captured: dict[int, torch.Tensor] = {}

    def capture(layer):
        def hook(module, args):
            hidden, *rest = args
            if not hidden.requires_grad:  # parameters frozen: start the graph here
                hidden = hidden.detach().requires_grad_(True)
            captured[layer] = hidden
            return (hidden, *rest)

        return hook

    hooks = {adapter.attention_output_name(layer): capture(layer) for layer in range(layers)}
    order = sorted(range(len(targets)), key=lambda i: len(targets[i]))
    for index, (target, source) in enumerate(zip(targets, sources)):
        _check_pair(target, source, positions, index)
    for chunk in _chunks(order, max(1, int(batch_size))):
        ids, mask = left_pad([targets[i] for i in chunk], pad_id, device)
        with attached(model, forward_pre=hooks), torch.enable_grad():
            logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), logits_to_keep=1).logits
            scores = _score(logits, refusal_ids)
            grads = torch.autograd.grad(scores.sum(), [captured[layer] for layer in range(layers)])
        for row, index in enumerate(chunk):
            span = sources[index].shape[1]
            for layer in range(layers):
                clean = captured[layer][row, -span:, :].detach().float().cpu()
                gradient = grads[layer][row, -span:, :].float().cpu()
                contribution = gradient * (sources[index][layer] - clean)
                effects[index, layer] = contribution.reshape(span, heads, head_dim).sum(dim=(0, 2)).numpy()
        captured.clear()
        if progress is not None:
            progress.update(len(chunk))
    return effects


# ----- tidy output -----------------------------------------------------------------------------
def scan_summary(effects: np.ndarray, *, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> pd.DataFrame:
    """Mean effect over prompts per (layer, head) with a bootstrap interval over prompts."""
    n, layers, heads = effects.shape
    rows = []
    for layer in range(layers):
        for head in range(heads):
            estimate = bootstrap(effects[:, layer, head], n_boot=n_boot, seed=seed, level=level)
            rows.append(
                {
                    "layer": layer,
                    "head": head,
                    "effect": estimate.value,
                    "ci_low": estimate.ci_low,
                    "ci_high": estimate.ci_high,
                    "n_prompts": estimate.n,
                }
            )
    return pd.DataFrame(rows)


@torch.no_grad()
def refusal_scores(
    loaded, sequences: Sequence[Sequence[int]], refusal_ids: Sequence[int], batch_size: int = 8
) -> np.ndarray:
    """Clean first-token refusal score of each tokenized prompt (context for the effects)."""
    model, device = loaded.model, loaded.device
    pad_id = loaded.tokenizer.pad_token_id or 0
    scores = np.zeros(len(sequences))
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i]))
    for chunk in _chunks(order, batch_size):
        ids, mask = left_pad([sequences[i] for i in chunk], pad_id, device)
        logits = model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), logits_to_keep=1).logits
        scores[list(chunk)] = _score(logits, refusal_ids).float().cpu().numpy()
    return scores
