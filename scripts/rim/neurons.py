"""Safety-critical neurons and random control sets (docs/method.md#6-safety-neurons-and-ras).

A neuron is one channel of an MLP site in one layer, indexed (layer, neuron); arrays here hold
neurons flattened as ``layer * n_neurons + neuron``.

For each pair k (a harmful prompt and its malicious-intent "-MI" version) the shift of neuron j
is f_j(-MI) - f_j(plain), with f the pooled activation on prompt + the model's own response.
The top-m neurons by shift are selected per pair; the safety set A_safe is their intersection
over all pairs (the paper), or (DECISION) the neurons selected in at least a fraction q of the
pairs. Random control sets have the same size and are drawn, seeded, from the other neurons.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np

from rim.errors import ConfigError, DataError, RimError

if TYPE_CHECKING:  # pandas is imported where it is used: the config checks here stay light
    import pandas as pd

SELECTIONS = ("intersection", "frequency")
RANDOM_MATCHING = ("global", "layer")


@dataclass(frozen=True)
class PairShifts:
    """f(-MI) - f(plain) per pair and neuron: ``shifts`` [n_pairs, n_layers * n_neurons]."""

    prompt_ids: list[str]
    shifts: np.ndarray
    n_layers: int
    n_neurons: int


def pair_shifts(
    plain_ids: Sequence[str],
    plain: np.ndarray,
    intent_ids: Sequence[str],
    intent: np.ndarray,
    *,
    source: str = "activation dump",
) -> PairShifts:
    """Match plain and -MI inputs by prompt id and subtract their pooled activations.

    ``plain`` and ``intent`` are [n, n_layers, n_neurons]. Prompts present in only one set are
    left out; no common prompt at all is an error.
    """
    plain, intent = np.asarray(plain), np.asarray(intent)
    if plain.shape[1:] != intent.shape[1:]:
        raise DataError(
            f"plain and -MI activations differ in shape: {plain.shape[1:]} vs {intent.shape[1:]}", source=source
        )
    intent_row = {str(pid): row for row, pid in enumerate(intent_ids)}
    common = [(str(pid), row) for row, pid in enumerate(plain_ids) if str(pid) in intent_row]
    if not common:
        raise DataError(
            "no prompt id is shared by the plain and the -MI inputs, so no (harmful, -MI) pair can be formed "
            f"(plain ids start {list(plain_ids)[:3]}, -MI ids start {list(intent_ids)[:3]})",
            source=source,
        )
    common.sort()
    ids = [pid for pid, _ in common]
    plain_rows = np.array([row for _, row in common])
    intent_rows = np.array([intent_row[pid] for pid in ids])
    n_layers, n_neurons = plain.shape[1], plain.shape[2]
    shifts = intent[intent_rows].astype(np.float32) - plain[plain_rows].astype(np.float32)
    return PairShifts(ids, shifts.reshape(len(ids), n_layers * n_neurons), n_layers, n_neurons)


def top_m(shifts: np.ndarray, m: int) -> np.ndarray:
    """[n_pairs, n_units] bool: the m largest shifts of each pair (ties: lower index first)."""
    shifts = np.asarray(shifts)
    n_units = shifts.shape[1]
    if not 1 <= m <= n_units:
        raise ConfigError(
            f"config key 'neurons.top_m' must be between 1 and the number of neurons ({n_units}), got {m}"
        )
    # A stable sort of the negated shifts keeps the choice deterministic under ties. A shift
    # without a value (NaN: a mixture-of-experts neuron no token of the pair was routed to) is
    # never selected, however few neurons have one.
    finite = np.isfinite(shifts)
    order = np.argsort(-np.where(finite, shifts, -np.inf), axis=1, kind="stable")[:, :m]
    selected = np.zeros(shifts.shape, dtype=bool)
    np.put_along_axis(selected, order, True, axis=1)
    return selected & finite


def selection_frequency(shifts: np.ndarray, m: int) -> np.ndarray:
    """Fraction of pairs that put each neuron in their top m."""
    return top_m(shifts, m).mean(axis=0)


def required_pairs(n_pairs: int, selection: str, min_fraction: float) -> int:
    """How many pairs must select a neuron for it to enter the set."""
    if selection == "intersection":
        return n_pairs
    if selection == "frequency":
        if not 0 < min_fraction <= 1:
            raise ConfigError(f"config key 'neurons.min_fraction' must be in (0, 1], got {min_fraction}")
        # The small slack keeps q = 0.8 of 10 pairs at 8, not 9, despite binary fractions.
        return max(1, math.ceil(min_fraction * n_pairs - 1e-9))
    raise ConfigError(f"config key 'neurons.selection': '{selection}' is not one of {', '.join(SELECTIONS)}")


def safety_neurons(
    shifts: np.ndarray, m: int, selection: str = "intersection", min_fraction: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """A_safe as sorted flat indices, and every neuron's selection frequency.

    An empty set is an error that says which m or q would give a non-empty one.
    """
    shifts = np.asarray(shifts)
    n_pairs = shifts.shape[0]
    counts = top_m(shifts, m).sum(axis=0)
    needed = required_pairs(n_pairs, selection, min_fraction)
    chosen = np.flatnonzero(counts >= needed)
    if chosen.size == 0:
        best = int(counts.max())
        raise RimError(
            f"the safety-neuron set is empty: no neuron is among the top {m} of {needed} of the {n_pairs} "
            f"(harmful, -MI) pairs (the most any neuron reaches is {best} pairs, a fraction of "
            f"{best / n_pairs:.2f}). Raise 'neurons.top_m', or use 'neurons.selection: frequency' with "
            f"'neurons.min_fraction' <= {best / n_pairs:.2f}"
        )
    return chosen, counts / n_pairs


def random_neuron_sets(
    n_layers: int,
    n_neurons: int,
    reference: np.ndarray,
    draws: int,
    seed: int,
    matching: str = "global",
) -> list[np.ndarray]:
    """``draws`` random sets of the reference set's size, disjoint from it, as sorted flat indices.

    ``global`` draws uniformly from all other neurons (the paper's control); ``layer`` draws as
    many neurons in each layer as the reference set has there, so both sets sit in the same layers.
    """
    reference = np.asarray(reference, dtype=np.int64)
    total = n_layers * n_neurons
    available = np.ones(total, dtype=bool)
    available[reference] = False
    rng = np.random.default_rng(seed)
    sets = []
    for _ in range(draws):
        if matching == "global":
            pool = np.flatnonzero(available)
            if pool.size < reference.size:
                raise ConfigError(
                    f"cannot draw {reference.size} random neurons from the {pool.size} outside the safety set"
                )
            chosen = rng.choice(pool, size=reference.size, replace=False)
        elif matching == "layer":
            chosen_parts = []
            layers, per_layer = np.unique(reference // n_neurons, return_counts=True)
            for layer, count in zip(layers, per_layer):
                pool = np.flatnonzero(available[layer * n_neurons : (layer + 1) * n_neurons]) + layer * n_neurons
                if pool.size < count:
                    raise ConfigError(f"cannot draw {count} random neurons in layer {layer} outside the safety set")
                chosen_parts.append(rng.choice(pool, size=count, replace=False))
            chosen = np.concatenate(chosen_parts) if chosen_parts else np.array([], dtype=np.int64)
        else:
            raise ConfigError(
                f"config key 'neurons.random_matching': '{matching}' is not one of {', '.join(RANDOM_MATCHING)}"
            )
        sets.append(np.sort(chosen.astype(np.int64)))
    return sets


def safety_ranking(frequency: np.ndarray, mean_shift: np.ndarray) -> np.ndarray:
    """Every neuron's rank by the safety score, 0 = most safety-critical (flat index order).

    The score orders by selection frequency (the share of pairs whose top m hold the neuron: the
    quantity A_safe thresholds), then by mean shift f(-MI) - f(plain), then by index. So the top
    |A_safe| neurons are A_safe itself, and larger top-k sets extend it by the next most selected
    neurons (docs/method.md#zeroing-dose-response).
    """
    frequency, mean_shift = np.asarray(frequency, dtype=float), np.asarray(mean_shift, dtype=float)
    if frequency.shape != mean_shift.shape:
        raise DataError(f"selection frequency and mean shift differ in shape: {frequency.shape} vs {mean_shift.shape}")
    # lexsort sorts by the last key first; the index keeps ties deterministic.
    order = np.lexsort((np.arange(frequency.size), -np.nan_to_num(mean_shift, nan=-np.inf), -frequency))
    ranks = np.empty(frequency.size, dtype=np.int64)
    ranks[order] = np.arange(frequency.size)
    return ranks


@dataclass(frozen=True)
class ZeroingCondition:
    """One condition of the zeroing test: which neurons are zeroed and how it is grouped.

    ``family``: none, safety_set (A_safe), safety_top (the top k of the safety score) or random;
    ``size`` the number of neurons zeroed; ``zero`` the ``{layer: [neurons]}`` to zero (None: none).
    """

    family: str
    size: int
    draw: int | None
    zero: dict[int, list[int]] | None


def dose_conditions(scores: "pd.DataFrame", sizes: Sequence[int], draws: int, seed: int) -> dict[str, ZeroingCondition]:
    """Conditions top_<k> (the k highest-ranked neurons of ``scores``) and random_<k>_<d> (k neurons
    drawn, seeded, from those outside the top k) for each k in ``sizes``.

    ``scores``: one row per neuron with columns layer, neuron, rank (safety_neurons).
    """
    from rim.hooks import units_by_layer

    ordered = scores.sort_values("rank", kind="stable")
    layers, neurons = ordered["layer"].to_numpy(np.int64), ordered["neuron"].to_numpy(np.int64)
    out: dict[str, ZeroingCondition] = {}
    for size in sorted({int(k) for k in sizes}):
        if not 1 <= size < len(ordered):
            raise ConfigError(
                f"config key 'neurons.zeroing.sizes': {size} must be between 1 and the number of neurons minus one "
                f"({len(ordered) - 1})"
            )
        out[f"top_{size}"] = ZeroingCondition(
            "safety_top", size, None, units_by_layer(zip(layers[:size], neurons[:size]))
        )
        for draw in range(draws):
            rng = np.random.default_rng([seed, size, draw])
            picked = np.sort(rng.choice(np.arange(size, len(ordered)), size=size, replace=False))
            out[f"random_{size}_{draw}"] = ZeroingCondition(
                "random", size, draw, units_by_layer(zip(layers[picked], neurons[picked]))
            )
    return out


def layer_neuron(flat: np.ndarray, n_neurons: int) -> tuple[np.ndarray, np.ndarray]:
    flat = np.asarray(flat, dtype=np.int64)
    return flat // n_neurons, flat % n_neurons


def expert_channel(neurons: np.ndarray, n_experts: int, n_neurons: int) -> tuple[np.ndarray, np.ndarray]:
    """(expert, channel) of mixture-of-experts neurons, flattened in a layer as expert * channels + channel."""
    channels = n_neurons // n_experts
    return neurons // channels, neurons % channels


def flat_index(layers: Sequence[int], neurons: Sequence[int], n_neurons: int) -> np.ndarray:
    return np.asarray(layers, dtype=np.int64) * n_neurons + np.asarray(neurons, dtype=np.int64)


# ----- config checks (called from rim.config.check_consistency; no torch) -------------------------
def check_config(config) -> None:
    """Cross-references of the activations, neurons and ras blocks, each error naming its key."""
    if not any(block in config for block in ("activations", "neurons", "ras")):
        return
    prompt_sets = config.get("evaluation", {}).get("prompt_sets", {})
    modes = config.get("prompt_modes", {})
    neurons, ras, activations = config.get("neurons", {}), config.get("ras", {}), config.get("activations", {})
    named = [
        ("neurons.plain", neurons.get("plain")),
        ("neurons.intent", neurons.get("intent")),
        ("ras.safety_inputs", ras.get("safety_inputs")),
        ("ras.math_inputs", ras.get("math_inputs")),
        ("ras.over_refusal_inputs", ras.get("over_refusal_inputs")),
    ]
    named += [(f"activations.extra_inputs[{i}]", entry) for i, entry in enumerate(activations.get("extra_inputs", []))]
    for key, entry in named:
        if not entry:
            continue
        if entry["prompt_set"] not in prompt_sets:
            raise ConfigError(
                f"config key '{key}.prompt_set': '{entry['prompt_set']}' is not defined under 'evaluation.prompt_sets' "
                f"(defined: {', '.join(prompt_sets) or 'none'})"
            )
        if entry["mode"] not in modes:
            raise ConfigError(f"config key '{key}.mode': '{entry['mode']}' is not defined under 'prompt_modes'")
    expected_kinds = (
        ("neurons.plain", "harmful"),
        ("neurons.intent", "harmful"),
        ("ras.safety_inputs", "harmful"),
        ("ras.math_inputs", "math"),
        ("ras.over_refusal_inputs", "harmless"),
    )
    for key, kind in expected_kinds:
        entry = dict(named)[key]
        if entry and prompt_sets[entry["prompt_set"]].get("kind") != kind:
            raise ConfigError(
                f"config key '{key}.prompt_set': '{entry['prompt_set']}' is a "
                f"{prompt_sets[entry['prompt_set']].get('kind')} "
                f"prompt set; this needs a {kind} one"
            )
    if neurons.get("plain") and neurons.get("plain") == neurons.get("intent"):
        raise ConfigError(
            "config keys 'neurons.plain' and 'neurons.intent' name the same input set; intent needs the -MI prompts"
        )
    dumped = {f"{e['prompt_set']}/{e['mode']}" for _, e in named[:4] + named[5:] if e}
    for name in activations.get("residual_inputs", []):
        if name not in dumped:
            raise ConfigError(
                f"config key 'activations.residual_inputs': '{name}' is not a dumped input set; dumped: "
                f"{', '.join(sorted(dumped))} "
                "(add it to activations.extra_inputs)"
            )
    zeroing = neurons.get("zeroing", {})
    if zeroing.get("random_draws", 0) > neurons.get("random_draws", 0):
        raise ConfigError(
            f"config key 'neurons.zeroing.random_draws' ({zeroing['random_draws']}) exceeds 'neurons.random_draws' "
            f"({neurons['random_draws']})"
        )
    for name in zeroing.get("prompt_sets", []):
        if name not in prompt_sets:
            raise ConfigError(
                f"config key 'neurons.zeroing.prompt_sets': '{name}' is not defined under 'evaluation.prompt_sets'"
            )
    if zeroing and zeroing.get("mode") not in modes:
        raise ConfigError(
            f"config key 'neurons.zeroing.mode': '{zeroing.get('mode')}' is not defined under 'prompt_modes'"
        )
    runs = config.get("training", {}).get("runs", {})
    for run in ras.get("runs") or []:
        if run not in runs:
            raise ConfigError(
                f"config key 'ras.runs': '{run}' is not defined under 'training.runs' (defined: "
                f"{', '.join(runs) or 'none'})"
            )


def zeroing_params(config) -> dict:
    """What the zeroing test needs from the config: its block, its prompt mode, its prompt sets
    with their judges, and the generation settings (the evaluation stage's own entries)."""
    from rim.evaluation.settings import applicable_judges

    block = config["neurons"]["zeroing"]
    evaluation = config.get("evaluation", {})
    prompt_sets = {name: dict(evaluation["prompt_sets"][name]) for name in block["prompt_sets"]}
    return {
        "zeroing": block,
        "mode": dict(config["prompt_modes"][block["mode"]]),
        "prompt_sets": prompt_sets,
        "generation": dict(evaluation.get("generation", {})),
        "judges": {
            name: applicable_judges(evaluation.get("judges", {}), entry["kind"]) for name, entry in prompt_sets.items()
        },
    }


# ----- the zeroing test (docs/method.md#6-safety-neurons-and-ras) ----------------------------------
def zeroing_conditions(sets: pd.DataFrame, random_draws: int) -> dict[str, ZeroingCondition]:
    """Condition name -> what it zeroes: none, A_safe (safety) and its first random control sets."""
    from rim.hooks import units_by_layer

    safety = sets[sets["neuron_set"] == "safety"]
    out = {
        "none": ZeroingCondition("none", 0, None, None),
        "safety": ZeroingCondition(
            "safety_set", len(safety), None, units_by_layer(zip(safety["layer"], safety["neuron"]))
        ),
    }
    for draw in range(random_draws):
        part = sets[(sets["neuron_set"] == "random") & (sets["draw"] == draw)]
        out[f"random_{draw}"] = ZeroingCondition(
            "random", len(part), draw, units_by_layer(zip(part["layer"], part["neuron"]))
        )
    return out


def paired_changes(frame: pd.DataFrame, n_boot: int = 1000, seed: int = 0, outcomes=None) -> pd.DataFrame:
    """Each condition minus no intervention, per prompt set and metric, bootstrapped over prompts.

    The conditions see the same prompts, so the change is paired: the per-prompt difference of
    each flag (e.g. misaligned) or value, averaged, with a bootstrap interval over prompts.
    ``outcomes``: the outcome convention of misalignment rates, as in ``summarize``.
    """
    import pandas as pd

    from rim.stats import bootstrap

    rows = []
    for (prompt_set, kind, metric, judge), wide in _per_prompt_values(frame, outcomes):
        for condition in [c for c in wide.columns if c != "none"]:
            difference = (wide[condition] - wide["none"]).to_numpy(dtype=float)
            if np.isnan(difference).all():
                continue
            estimate = bootstrap(difference, n_boot=n_boot, seed=seed)
            rows.append(
                {
                    "prompt_set": prompt_set,
                    "kind": kind,
                    "condition": condition,
                    "metric": metric,
                    "judge": judge,
                    "statistic": "change_from_none",
                    "value": estimate.value,
                    "ci_low": estimate.ci_low,
                    "ci_high": estimate.ci_high,
                    "n": estimate.n,
                }
            )
    return pd.DataFrame(rows)


def _per_prompt_values(frame: pd.DataFrame, outcomes):
    """((prompt_set, kind, metric, judge), prompt x condition table of the metric's per-prompt value)
    for every metric the frame's judges give; only groups with a no-intervention condition."""
    from rim.evaluation.summary import METRICS, outcome_convention

    convention = outcome_convention(outcomes)
    for (prompt_set, kind), part in frame.groupby(["prompt_set", "kind"], sort=False):
        for metric, judge, column, kinds, values, _binary in METRICS:
            if column not in part or (kinds is not None and kind not in kinds):
                continue
            wide = part.assign(_v=values(part, convention)).pivot_table(
                index="prompt_id", columns="condition", values="_v", aggfunc="first"
            )
            if "none" in wide:
                yield (prompt_set, kind, metric, judge), wide


def dose_response(
    frame: pd.DataFrame, conditions: Mapping[str, ZeroingCondition], n_boot: int = 1000, seed: int = 0, outcomes=None
) -> pd.DataFrame:
    """Change from no intervention per (neuron family, number zeroed), prompt set and metric.

    The draws of a random family at one size are pooled per prompt (the mean of the draws'
    per-prompt changes) before the bootstrap over prompts, so its interval is over prompts for the
    average random set of that size (docs/method.md#zeroing-dose-response).
    """
    import pandas as pd

    from rim.stats import bootstrap

    groups: dict[tuple[str, int], list[str]] = {}
    for name, condition in conditions.items():
        if condition.family != "none":
            groups.setdefault((condition.family, condition.size), []).append(name)
    rows = []
    for (prompt_set, kind, metric, judge), wide in _per_prompt_values(frame, outcomes):
        for (family, size), names in sorted(groups.items()):
            present = [name for name in names if name in wide]
            if not present:
                continue
            changes = wide[present].sub(wide["none"], axis=0)
            difference = changes.mean(axis=1, skipna=True).to_numpy(dtype=float)
            if np.isnan(difference).all():
                continue
            estimate = bootstrap(difference, n_boot=n_boot, seed=seed)
            rows.append(
                {
                    "prompt_set": prompt_set,
                    "kind": kind,
                    "condition": f"{family}_{size}",
                    "neuron_family": family,
                    "zeroed_neurons": size,
                    "draws": len(present),
                    "metric": metric,
                    "judge": judge,
                    "statistic": "dose_change",
                    "value": estimate.value,
                    "ci_low": estimate.ci_low,
                    "ci_high": estimate.ci_high,
                    "n": estimate.n,
                }
            )
    return pd.DataFrame(rows)
