"""Reciprocal activation shifts and RAS between a base model and a checkpoint (docs/method.md#6-safety-neurons-and-ras).

For a neuron group G of size n, with a_0 the base model's and a_t the checkpoint's activation
of a neuron (its pooled activation averaged over the inputs of a set):

    delta_safe = (1/n) * sum over j in G whose activation on safety inputs fell  of (1/a_t - 1/a_0)
    delta_math = (1/n) * sum over j in G whose activation on math inputs rose    of (1/a_0 - 1/a_t)
    RAS        = 2 * delta_safe * delta_math / (delta_safe + delta_math)      (harmonic mean)

with the arithmetic and geometric means and each delta alone as ablations, and the KL baseline
E_x[KL(pi_0 || pi_t)] on math inputs (``coarse_kl``).

The paper leaves two things open; both are settings (``ShiftSettings``), recorded in the output:

normalization  ``group`` (default): n is the size of the group, the formula as printed.
               ``qualifying``: n counts only the neurons that qualify (fell, resp. rose), so
               each delta is a mean shift per moving neuron.
handling       what reciprocals do with activations near zero or negative, given ``epsilon``:
               ``exclude`` (default): a neuron with a_0 <= epsilon or a_t <= epsilon is left out
               of the sums (its reciprocal is undefined or explodes); it still counts in n for
               ``group`` normalization.
               ``clip``: activations are floored at epsilon (a negative or tiny activation counts
               as epsilon), so a neuron moving between values below epsilon contributes nothing
               and no term exceeds 1/epsilon.
               ``absolute``: the magnitude |a| is used, floored at epsilon.

The qualification "fell"/"rose" is judged on the handled values, so every term is >= 0 and
so are both deltas; the harmonic mean of two zeros is 0.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Mapping

import numpy as np

from rim.errors import ConfigError

NORMALIZATIONS = ("group", "qualifying")
HANDLINGS = ("exclude", "clip", "absolute")
SHIFT_METRICS = ("ras_harmonic", "ras_arithmetic", "ras_geometric", "delta_safe", "delta_math")


@dataclass(frozen=True)
class ShiftSettings:
    normalization: str = "group"
    handling: str = "exclude"
    epsilon: float = 0.01

    def __post_init__(self):
        if self.normalization not in NORMALIZATIONS:
            raise ConfigError(
                f"config key 'ras.normalization': '{self.normalization}' is not one of {', '.join(NORMALIZATIONS)}"
            )
        if self.handling not in HANDLINGS:
            raise ConfigError(
                f"config key 'ras.activation_handling': '{self.handling}' is not one of {', '.join(HANDLINGS)}"
            )
        if not self.epsilon > 0:
            raise ConfigError(f"config key 'ras.epsilon' must be > 0, got {self.epsilon}")

    @classmethod
    def from_config(cls, block: Mapping) -> "ShiftSettings":
        return cls(
            normalization=str(block.get("normalization", "group")),
            handling=str(block.get("activation_handling", "exclude")),
            epsilon=float(block.get("epsilon", 0.01)),
        )

    def as_dict(self) -> dict:
        return asdict(self)


def handled(a0: np.ndarray, at: np.ndarray, settings: ShiftSettings) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(a0, at, usable) after the near-zero / negative handling; ``usable`` marks neurons kept."""
    a0, at = np.asarray(a0, dtype=np.float64), np.asarray(at, dtype=np.float64)
    eps = settings.epsilon
    # A neuron without a value (NaN: no pooled token on any input) never counts.
    finite = np.isfinite(a0) & np.isfinite(at)
    if settings.handling == "exclude":
        usable = finite & (a0 > eps) & (at > eps)
    else:
        if settings.handling == "absolute":
            a0, at = np.abs(a0), np.abs(at)
        a0, at, usable = np.maximum(a0, eps), np.maximum(at, eps), finite
    # Placeholders keep the reciprocals finite where the neuron is left out anyway.
    return np.where(usable, a0, 1.0), np.where(usable, at, 1.0), usable


def _normalized(terms: np.ndarray, qualifies: np.ndarray, settings: ShiftSettings) -> float:
    total = float(terms[qualifies].sum())
    if settings.normalization == "group":
        n = terms.size
    else:
        n = int(qualifies.sum())
    return total / n if n else 0.0


def delta_safe(a0: np.ndarray, at: np.ndarray, settings: ShiftSettings = ShiftSettings()) -> float:
    """(1/n) sum over neurons whose activation on safety inputs fell of (1/a_t - 1/a_0)."""
    a0, at, usable = handled(a0, at, settings)
    qualifies = usable & (at < a0)
    return _normalized(1.0 / at - 1.0 / a0, qualifies, settings)


def delta_math(a0: np.ndarray, at: np.ndarray, settings: ShiftSettings = ShiftSettings()) -> float:
    """(1/n) sum over neurons whose activation on math inputs rose of (1/a_0 - 1/a_t)."""
    a0, at, usable = handled(a0, at, settings)
    qualifies = usable & (at > a0)
    return _normalized(1.0 / a0 - 1.0 / at, qualifies, settings)


def harmonic_mean(x: float, y: float) -> float:
    return 0.0 if x + y == 0 else 2.0 * x * y / (x + y)


def shift_metrics(
    safe_base: np.ndarray,
    safe_checkpoint: np.ndarray,
    math_base: np.ndarray,
    math_checkpoint: np.ndarray,
    settings: ShiftSettings = ShiftSettings(),
) -> dict[str, float]:
    """RAS and its ablations for one neuron group (arrays hold the group's activations)."""
    ds = delta_safe(safe_base, safe_checkpoint, settings)
    dm = delta_math(math_base, math_checkpoint, settings)
    return {
        "ras_harmonic": harmonic_mean(ds, dm),
        "ras_arithmetic": (ds + dm) / 2.0,
        "ras_geometric": float(np.sqrt(ds * dm)),
        "delta_safe": ds,
        "delta_math": dm,
    }


def mean_activation(pooled: np.ndarray) -> np.ndarray:
    """Activation of each neuron on an input set: its pooled activation averaged over inputs.

    Inputs without a pooled value (NaN) are left out; a neuron with none at all stays NaN.
    """
    pooled = np.asarray(pooled, dtype=np.float64)
    counts = np.isfinite(pooled).sum(axis=0)
    total = np.nansum(pooled, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, total / np.maximum(counts, 1), np.nan)


# ----- KL baseline ------------------------------------------------------------------------------
# Storing a model's full next-token distribution at every position is vocab-sized; the base
# model's dump keeps its top-k log-probabilities, and the checkpoint is compared on those k
# tokens plus one bucket for the rest of the vocabulary. This coarsened KL is a lower bound of
# the full KL (data-processing inequality) and equals it when k covers the vocabulary.
_TINY = 1e-30


def log_tail_mass(logprobs_top: np.ndarray) -> np.ndarray:
    """log(1 - sum(exp(logprobs_top))) along the last axis, kept finite."""
    logprobs_top = np.asarray(logprobs_top, dtype=np.float64)
    mass = np.exp(logprobs_top).sum(axis=-1)
    return np.log(np.clip(1.0 - mass, _TINY, 1.0))


def coarse_kl(base_logprobs_top: np.ndarray, checkpoint_logprobs_at_top: np.ndarray) -> np.ndarray:
    """KL(pi_0 || pi_t) per position over the base's top-k tokens and one tail bucket.

    ``base_logprobs_top`` [..., k]: the base model's log-probabilities of its k most likely
    tokens; ``checkpoint_logprobs_at_top`` [..., k]: the checkpoint's log-probabilities of the
    same tokens. Returns [...].
    """
    p_log = np.asarray(base_logprobs_top, dtype=np.float64)
    q_log = np.asarray(checkpoint_logprobs_at_top, dtype=np.float64)
    head = (np.exp(p_log) * (p_log - q_log)).sum(axis=-1)
    p_tail, q_tail = log_tail_mass(p_log), log_tail_mass(q_log)
    tail_mass = np.exp(p_tail)
    # 0 * log 0 = 0: when k covers (almost) the whole vocabulary the tail bucket is empty.
    tail = np.where(tail_mass > 1e-12, tail_mass * (p_tail - q_tail), 0.0)
    return np.maximum(head + tail, 0.0)


# ----- tables -----------------------------------------------------------------------------------
METRICS = SHIFT_METRICS + ("kl",)


@dataclass(frozen=True)
class NeuronGroup:
    """A neuron set by name: ``safety``, ``random`` (with its draw) or ``all``."""

    name: str
    draw: int | None
    flat: np.ndarray | None  # flat indices; None = every neuron


def checkpoint_rows(
    groups: list[NeuronGroup],
    safe_base: np.ndarray,
    safe_checkpoint: np.ndarray,
    math_base: np.ndarray,
    math_checkpoint: np.ndarray,
    kl: float,
    settings: ShiftSettings,
) -> list[dict]:
    """Every metric of one checkpoint: RAS and ablations per neuron group, and the KL baseline.

    Activations are flat [n_layers * n_neurons] means over the inputs of each set.
    """
    rows = []
    for group in groups:
        index = slice(None) if group.flat is None else group.flat
        size = safe_base.size if group.flat is None else len(group.flat)
        metrics = shift_metrics(
            safe_base[index], safe_checkpoint[index], math_base[index], math_checkpoint[index], settings
        )
        rows += [
            {"neuron_set": group.name, "draw": group.draw, "set_size": size, "metric": name, "value": value}
            for name, value in metrics.items()
        ]
    # The KL baseline uses no neurons: its rows carry neuron_set "none".
    rows.append({"neuron_set": "none", "draw": None, "set_size": 0, "metric": "kl", "value": float(kl)})
    return rows


# The scopes of results/ras_correlations.parquet (docs/method.md#correlation-with-misalignment).
CORRELATION_SCOPES = {
    "seed": "the checkpoints of one seed, the base model as its step 0",
    "pooled": "the checkpoints of every seed of the run, the base model once",
    "pooled_without_base": "as pooled, without the base model (every shift is 0 there by construction)",
    "partial_step": "as pooled, with what a line in the training step explains removed from both sides",
    "seed_mean": "the mean of the per-seed r, with a t interval and p-value over seeds",
}


def correlation_table(
    table,
    *,
    against: str = "misalignment_rate",
    methods=("pearson", "spearman"),
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
):
    """Correlation of each metric with ``against`` across the checkpoints of each run.

    One row per (model, run, scope, seed, neuron set, draw, metric, method); the scopes are
    ``CORRELATION_SCOPES``. The checkpoints of one run are autocorrelated along training and all
    seeds share the base model, so the pooled p-values treat dependent points as independent;
    ``seed_mean`` is the scope whose interval rests on independent replicates (the seeds).
    """
    import pandas as pd

    from rim.stats import correlation, mean_correlation, partial_correlation

    # One correlation per variant of RAS's inputs too, where the table has them.
    keys = ["model", "run", *(["inputs"] if "inputs" in table else []), "neuron_set", "draw", "metric"]
    rows = []

    def record(key, scope, seed_value, method, result, n_seeds):
        rows.append(
            {
                **dict(zip(keys, key)),
                "scope": scope,
                "seed": seed_value,
                "against": against,
                "method": method,
                "r": result.r,
                "p_value": result.p_value,
                "ci_low": result.ci_low,
                "ci_high": result.ci_high,
                "n_checkpoints": result.n,
                "n_seeds": n_seeds,
            }
        )

    def add(frame, scope, seed_value):
        for key, part in frame.groupby(keys, dropna=False, sort=True):
            n_seeds = int(part.loc[part["checkpoint"] != "base", "seed"].nunique())
            for method in methods:
                if scope == "partial_step":
                    result = partial_correlation(
                        part["value"], part[against], part["step"], method, n_boot=n_boot, level=level, seed=seed
                    )
                else:
                    result = correlation(part["value"], part[against], method, n_boot=n_boot, level=level, seed=seed)
                record(key, scope, seed_value, method, result, n_seeds)

    for seed_value, part in table.groupby("seed", sort=True):
        add(part, "seed", int(seed_value))
    pooled = table.drop_duplicates(subset=[*keys, "checkpoint"])
    add(pooled, "pooled", None)
    add(pooled[pooled["checkpoint"] != "base"], "pooled_without_base", None)
    add(pooled, "partial_step", None)
    per_seed = pd.DataFrame([row for row in rows if row["scope"] == "seed"])
    if not per_seed.empty:
        for key, part in per_seed.groupby([*keys, "method"], dropna=False, sort=True):
            result = mean_correlation(part["r"], key[-1], level=level)
            checkpoints = pooled
            for column, value in zip(keys, key[:-1]):
                checkpoints = checkpoints[
                    checkpoints[column].isna() if pd.isna(value) else checkpoints[column] == value
                ]
            rows.append(
                {
                    **dict(zip(keys, key[:-1])),
                    "scope": "seed_mean",
                    "seed": None,
                    "against": against,
                    "method": key[-1],
                    "r": result.r,
                    "p_value": result.p_value,
                    "ci_low": result.ci_low,
                    "ci_high": result.ci_high,
                    "n_checkpoints": len(checkpoints),
                    "n_seeds": result.n,
                }
            )
    columns = [
        "model",
        "run",
        *(["inputs"] if "inputs" in table else []),
        "scope",
        "seed",
        "neuron_set",
        "draw",
        "metric",
        "against",
        "method",
        "r",
        "p_value",
        "ci_low",
        "ci_high",
        "n_checkpoints",
        "n_seeds",
    ]
    result = pd.DataFrame(rows, columns=columns)
    result["seed"] = result["seed"].astype("Int64")
    result["draw"] = result["draw"].astype("Int64")
    return result
