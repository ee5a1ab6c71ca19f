"""Refusal heads (docs/method.md#5-refusal-heads): where the position predicting the first generated token looks.

For each harmful prompt, rendered with thinking ON and OFF, every head's attention from the last
prompt token (the position that predicts the first generated token) is reduced to its argmax key
position, and that position is named by its region (``rim.positions``: user content, end of
turn, assistant header, think tags, the empty think span, the reasoning opener, ...).

A refusal head is one whose argmax *moves* between named regions when thinking is switched:
- families with a native think mode (Qwen3): from the assistant header (ON) into the empty think
  span that OFF puts in the prompt (the paper's definition);
- families without one (thinking ON = the assistant turn prefilled with a reasoning opener,
  OFF = plain): the mode-specific span is the opener, present only when ON, so the move is from
  the assistant header (OFF) into the reasoning opener (ON). DECISION: the analogue of the
  paper's move, from the adapter's prompt modes; both moves are config keys
  (``heads.detection.move``). Heads that attend to the previous token show this move by
  construction on such families, so read their share against the head's other regions.

A head's score is the share of prompts that show the move, with a bootstrap interval.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch

from rim.positions import REGIONS, LabelledPrompt
from rim.provenance import read_table
from rim.stats import bootstrap, rate


@dataclass(frozen=True)
class RegionMove:
    """The regions the argmax must be in with thinking ON and with thinking OFF."""

    on_regions: tuple[str, ...]
    off_regions: tuple[str, ...]

    def describe(self) -> str:
        return f"ON in {'/'.join(self.on_regions)}, OFF in {'/'.join(self.off_regions)}"


def region_move(adapter, move_config: Mapping) -> RegionMove:
    """The move that marks a refusal head for this adapter's family (config ``heads.detection.move``)."""
    key = "native_thinking" if adapter.native_thinking else "prefilled_thinking"
    block = move_config[key]
    move = RegionMove(tuple(block["thinking_on"]), tuple(block["thinking_off"]))
    unknown = sorted(set(move.on_regions + move.off_regions) - set(REGIONS))
    if unknown:
        from rim.errors import ConfigError

        raise ConfigError(
            f"config key 'heads.detection.move.{key}': unknown regions {unknown}; known: {', '.join(REGIONS)}"
        )
    return move


@contextlib.contextmanager
def eager_attention(model: torch.nn.Module) -> Iterator[None]:
    """Run with eager attention, the only implementation that returns attention weights."""
    previous = getattr(model.config, "_attn_implementation", None)
    if previous == "eager":
        yield
        return
    model.set_attn_implementation("eager")
    try:
        yield
    finally:
        model.set_attn_implementation(previous)


def left_pad(sequences: Sequence[Sequence[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Left-padded ids and attention mask, so that the last column is every prompt's last token."""
    width = max(len(sequence) for sequence in sequences)
    ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        ids[row, width - len(sequence) :] = torch.tensor(list(sequence), dtype=torch.long)
        mask[row, width - len(sequence) :] = 1
    return ids.to(device), mask.to(device)


def position_ids(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted from each prompt's first real token, as generation counts them."""
    return (mask.long().cumsum(-1) - 1).clamp(min=0)


def argmax_keys(last_row: torch.Tensor, pad: torch.Tensor | int = 0) -> torch.Tensor:
    """Key index that each head's last query attends to most.

    ``last_row``: [batch, layers, heads, keys] attention weights of the last query; ``pad``:
    left-padding per row, subtracted so indices count from each prompt's first token.
    """
    index = last_row.argmax(dim=-1)
    pad = torch.as_tensor(pad, device=index.device).reshape(-1, *([1] * (index.dim() - 1)))
    return index - pad


def classify_keys(key_positions: np.ndarray, regions: Sequence[str]) -> np.ndarray:
    """Region name of each argmax key position (any shape of indices into ``regions``)."""
    names = np.asarray(list(regions), dtype=object)
    positions = np.asarray(key_positions)
    if positions.size and (positions.min() < 0 or positions.max() >= len(names)):
        raise ValueError(f"key positions outside the prompt of {len(names)} tokens")
    return names[positions]


@torch.no_grad()
def attention_argmax(loaded, prompts: Sequence[LabelledPrompt], batch_size: int = 8, progress=None) -> np.ndarray:
    """[n_prompts, layers, heads] argmax key position of the last prompt token, per head."""
    model, device = loaded.model, loaded.device
    pad_id = loaded.tokenizer.pad_token_id or 0
    result: list[np.ndarray | None] = [None] * len(prompts)
    order = sorted(range(len(prompts)), key=lambda i: prompts[i].prompt_length)
    with eager_attention(model):
        for start in range(0, len(order), batch_size):
            chunk = order[start : start + batch_size]
            sequences = [prompts[i].input_ids[: prompts[i].prompt_length] for i in chunk]
            ids, mask = left_pad(sequences, pad_id, device)
            out = model(
                input_ids=ids,
                attention_mask=mask,
                position_ids=position_ids(mask),
                output_attentions=True,
                logits_to_keep=1,
            )
            if not out.attentions or out.attentions[0] is None:
                raise RuntimeError("the model returned no attention weights (it needs eager attention)")
            last_row = torch.stack([layer[:, :, -1, :] for layer in out.attentions], dim=1)
            pad = ids.shape[1] - mask.sum(dim=1)
            keys = argmax_keys(last_row.float(), pad).cpu().numpy()
            for row, index in enumerate(chunk):
                result[index] = keys[row]
            if progress is not None:
                progress.update(len(chunk))
    return np.stack(result)


def argmax_table(
    prompt_ids: Sequence[str], mode: str, prompts: Sequence[LabelledPrompt], keys: np.ndarray
) -> pd.DataFrame:
    """Tidy table: one row per (prompt, layer, head) with the argmax key position and its region."""
    n, layers, heads = keys.shape
    frames = []
    for index in range(n):
        regions = prompts[index].regions[: prompts[index].prompt_length]
        frames.append(
            pd.DataFrame(
                {
                    "prompt_id": prompt_ids[index],
                    "mode": mode,
                    "layer": np.repeat(np.arange(layers), heads),
                    "head": np.tile(np.arange(heads), layers),
                    "key_position": keys[index].reshape(-1),
                    "key_region": classify_keys(keys[index].reshape(-1), regions),
                    "query_position": prompts[index].prompt_length - 1,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def refusal_head_scores(
    argmax: pd.DataFrame,
    on_mode: str,
    off_mode: str,
    move: RegionMove,
    *,
    count_query_token: bool = False,
    n_boot: int = 1000,
    seed: int = 0,
) -> pd.DataFrame:
    """Per head: the share of prompts whose argmax shows the move, with its bootstrap interval.

    ``argmax`` is the table of ``argmax_table`` for both modes; only prompts present in both count.
    DECISION: unless ``count_query_token``, an argmax on the query token itself (a head attending
    to its own position) is not in any region: the query is the last token of the header or of the
    opener, so self-attending heads would otherwise "move" by construction. Columns also give the
    median distance from query to argmax in each mode, to spot local (previous-token) heads.
    """
    keys = ["prompt_id", "layer", "head"]
    table = argmax.assign(distance=argmax["query_position"] - argmax["key_position"])
    on = table[table["mode"] == on_mode].set_index(keys)[["key_region", "distance"]]
    off = table[table["mode"] == off_mode].set_index(keys)[["key_region", "distance"]]
    paired = on.add_suffix("_on").join(off.add_suffix("_off"), how="inner").reset_index()
    paired["on_in_region"] = paired["key_region_on"].isin(move.on_regions)
    paired["off_in_region"] = paired["key_region_off"].isin(move.off_regions)
    if not count_query_token:
        paired["on_in_region"] &= paired["distance_on"] > 0
        paired["off_in_region"] &= paired["distance_off"] > 0
    paired["moved"] = paired["on_in_region"] & paired["off_in_region"]
    rows = []
    for (layer, head), group in paired.groupby(["layer", "head"], sort=True):
        estimate = rate(group["moved"].to_numpy(), n_boot=n_boot, seed=seed)
        rows.append(
            {
                "layer": int(layer),
                "head": int(head),
                "share": estimate.value,
                "ci_low": estimate.ci_low,
                "ci_high": estimate.ci_high,
                "n_moved": int(group["moved"].sum()),
                "n_prompts": int(len(group)),
                "share_on_in_region": float(group["on_in_region"].mean()),
                "share_off_in_region": float(group["off_in_region"].mean()),
                "top_region_on": group["key_region_on"].mode().iloc[0],
                "top_region_off": group["key_region_off"].mode().iloc[0],
                "median_distance_on": float(group["distance_on"].median()),
                "median_distance_off": float(group["distance_off"].median()),
            }
        )
    scores = pd.DataFrame(rows)
    scores["previous_token_head"] = previous_token_heads(scores)
    scores["on_mode"], scores["off_mode"] = on_mode, off_mode
    scores["on_regions"], scores["off_regions"] = "/".join(move.on_regions), "/".join(move.off_regions)
    scores = scores.sort_values(["share", "layer", "head"], ascending=[False, True, True], kind="stable")
    scores["rank"] = np.arange(1, len(scores) + 1)
    return scores.sort_values(["layer", "head"]).reset_index(drop=True)


def previous_token_heads(scores: pd.DataFrame) -> pd.Series:
    """Heads whose argmax is, on the median prompt, the token just before the query in both modes
    (docs/method.md#5-refusal-heads). Such a head "moves" whenever the last prompt token changes
    region, as the prefilled opener makes it for families without a think mode: a move by
    construction, not a decision about refusing. A scores table without the distances (written
    by hand, or before they existed) flags no head."""
    if "previous_token_head" in scores:
        return scores["previous_token_head"].fillna(False).astype(bool)
    if not {"median_distance_on", "median_distance_off"} <= set(scores.columns):
        return pd.Series(False, index=scores.index)
    return (scores["median_distance_on"] == 1) & (scores["median_distance_off"] == 1)


def top_refusal_heads(
    scores: pd.DataFrame, k: int, min_share: float = 0.0, *, keep_previous_token_heads: bool = False
) -> list[tuple[int, int]]:
    """The k heads with the highest share (above ``min_share``), as (layer, head) by rank;
    previous-token heads are left out unless ``keep_previous_token_heads``."""
    chosen = scores[scores["share"] > min_share]
    if not keep_previous_token_heads:
        chosen = chosen[~previous_token_heads(chosen)]
    chosen = chosen.sort_values("rank").head(k)
    return [(int(layer), int(head)) for layer, head in zip(chosen["layer"], chosen["head"])]


def random_heads_like(
    heads: Sequence[tuple[int, int]], num_heads: int, rng: np.random.Generator
) -> list[tuple[int, int]]:
    """As many random heads per layer as ``heads`` has there, excluding ``heads`` (docs/method.md#5-refusal-heads).

    Where a layer has too few other heads, the draw takes all of them (and is smaller).
    """
    chosen = set(heads)
    drawn: list[tuple[int, int]] = []
    for layer in sorted({layer for layer, _ in heads}):
        count = sum(1 for other, _ in heads if other == layer)
        others = [head for head in range(num_heads) if (layer, head) not in chosen]
        picked = rng.choice(others, size=min(count, len(others)), replace=False) if others else []
        drawn += [(layer, int(head)) for head in sorted(picked)]
    return drawn


@torch.no_grad()
def mean_head_inputs(loaded, prompts: Sequence[LabelledPrompt], batch_size: int = 8) -> dict[int, torch.Tensor]:
    """Mean input of every layer's attention output projection over all prompt tokens.

    What mean ablation writes into an ablated head's slice (``rim.hooks.ablate(mean_heads=...)``).
    """
    from rim.hooks import attached

    model, adapter, device = loaded.model, loaded.adapter, loaded.device
    layers = adapter.num_layers(model)
    sums: dict[int, torch.Tensor] = {}
    count = 0
    current_mask: dict[str, torch.Tensor] = {}

    def capture(layer):
        def hook(module, args):
            mask = current_mask["mask"].unsqueeze(-1).to(args[0].dtype)
            total = (args[0].float() * mask).sum(dim=(0, 1))
            sums[layer] = sums.get(layer, 0) + total

        return hook

    hooks = {adapter.attention_output_name(layer): capture(layer) for layer in range(layers)}
    pad_id = loaded.tokenizer.pad_token_id or 0
    with attached(model, forward_pre=hooks):
        for start in range(0, len(prompts), batch_size):
            chunk = prompts[start : start + batch_size]
            ids, mask = left_pad([p.input_ids[: p.prompt_length] for p in chunk], pad_id, device)
            current_mask["mask"] = mask
            model(input_ids=ids, attention_mask=mask, position_ids=position_ids(mask), logits_to_keep=1)
            count += int(mask.sum())
    return {layer: (sums[layer] / count).cpu() for layer in range(layers)}


# ----- head ablation (docs/method.md#5-refusal-heads, causal test) -----------------------------
def ablation_conditions(
    refusal_heads: Sequence[tuple[int, int]], num_heads: int, draws: int, seed: int
) -> dict[str, list[tuple[int, int]]]:
    """Condition name -> heads to ablate: ``none``, ``refusal_heads``, ``random_<i>`` per draw."""
    rng = np.random.default_rng(seed)
    conditions: dict[str, list[tuple[int, int]]] = {"none": [], "refusal_heads": list(refusal_heads)}
    for draw in range(draws):
        conditions[f"random_{draw}"] = random_heads_like(refusal_heads, num_heads, rng)
    return conditions


def ablation_effects(frame: pd.DataFrame, *, n_boot: int = 1000, seed: int = 0, outcomes=None) -> pd.DataFrame:
    """Paired effects of ablation on the same prompts, per mode and metric.

    ``frame``: per-prompt evaluation rows (rim.evaluation) with a ``condition`` column (none,
    refusal_heads, random_<i>). Rows, each bootstrapped over prompts: every condition's change
    from ``none``; ``random_heads``, the change averaged over the random draws; and
    ``refusal_minus_random``, the refusal heads' change minus that average. ``outcomes``: the
    outcome convention of misalignment rates (``rim.evaluation.summary.outcome_convention``).
    """
    from rim.evaluation.summary import METRICS, outcome_convention

    convention = outcome_convention(outcomes)
    rows = []
    for (mode, kind), part in frame.groupby(["mode", "kind"], sort=False):
        for metric, judge, column, kinds, values, _ in METRICS:
            if column not in part or (kinds is not None and kind not in kinds):
                continue
            wide = part.assign(_value=values(part, convention)).pivot_table(
                index="prompt_id", columns="condition", values="_value", aggfunc="first", dropna=False
            )
            if "none" not in wide or wide["none"].isna().all():
                continue
            changes = {c: wide[c] - wide["none"] for c in wide.columns if c != "none"}
            random = [c for c in changes if c.startswith("random_")]
            if random:
                changes["random_heads"] = pd.concat([changes[c] for c in random], axis=1).mean(axis=1)
                if "refusal_heads" in changes:
                    changes["refusal_minus_random"] = changes["refusal_heads"] - changes["random_heads"]
            for condition, change in changes.items():
                estimate = bootstrap(change.to_numpy(dtype=float), n_boot=n_boot, seed=seed)
                statistic = "refusal_minus_random" if condition == "refusal_minus_random" else "change_from_none"
                rows.append(
                    {
                        "mode": mode,
                        "kind": kind,
                        "condition": condition,
                        "metric": metric,
                        "judge": judge,
                        "statistic": statistic,
                        "value": estimate.value,
                        "ci_low": estimate.ci_low,
                        "ci_high": estimate.ci_high,
                        "n": estimate.n,
                    }
                )
    return pd.DataFrame(
        rows, columns=["mode", "kind", "condition", "metric", "judge", "statistic", "value", "ci_low", "ci_high", "n"]
    )


def heads_label(heads: Sequence[tuple[int, int]]) -> str:
    """``L6-H20, L0-H11`` (the paper's notation)."""
    return ", ".join(f"L{layer}-H{head}" for layer, head in heads)


def select_head_prompts(table_path: str, prompt_set: Mapping) -> pd.DataFrame:
    """The prompts a heads/patching job runs on: the evaluation's selection of the prompt set
    (``{"name": ..., **evaluation.prompt_sets entry}``, limit already set), read from its table."""
    from rim.evaluation import EvaluationSettings, select_prompts

    settings = EvaluationSettings.from_params(prompt_set, name=prompt_set.get("name"))
    return select_prompts(read_table(table_path), settings, source=str(table_path))
