"""Difference-of-means probes on the residual stream (docs/method.md#5-refusal-heads).

For layer l and a named position: d_l = mean over N calibration pairs of (x_a - x_b), where x is
the residual stream after the layer and (a, b) are the two groups (harmful vs harmless, or
refused vs fulfilled). An item's score is s = y . d_l; the threshold is the mean score of the
calibration set; the probe score of a group is the share of its held-out items above threshold.

DECISION: calibration uses N balanced pairs (N = the smaller group's size in the calibration
folds; the larger group is subsampled with a fixed seed), so that with unbalanced groups (few
refusals) the threshold stays the midpoint between the two groups instead of sliding towards the
larger one. Items are held out by stratified k-fold: every item is scored once by a probe that
never saw it; the k-fold accuracy counts group a above and group b at or below threshold.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import pandas as pd

from rim.stats import bootstrap


@dataclass(frozen=True)
class Probe:
    direction: np.ndarray  # [..., hidden]
    threshold: np.ndarray  # [...]

    def scores(self, x: np.ndarray) -> np.ndarray:
        """s = y . d for items ``x`` [n, ..., hidden] -> [n, ...]."""
        return np.einsum("n...h,...h->n...", x, self.direction)

    def above(self, x: np.ndarray) -> np.ndarray:
        return self.scores(x) > self.threshold


def calibrate(a: np.ndarray, b: np.ndarray, rng: np.random.Generator | None = None) -> Probe:
    """Difference-of-means probe from calibration items of both groups ([n, ..., hidden] each).

    N = min(n_a, n_b) pairs; the larger group is subsampled (seeded) to N items.
    """
    if len(a) == 0 or len(b) == 0:
        raise ValueError("a probe needs calibration items of both groups")
    n = min(len(a), len(b))
    rng = rng or np.random.default_rng(0)
    if len(a) > n:
        a = a[np.sort(rng.choice(len(a), n, replace=False))]
    if len(b) > n:
        b = b[np.sort(rng.choice(len(b), n, replace=False))]
    a, b = a.astype(np.float64), b.astype(np.float64)
    direction = (a - b).mean(axis=0)
    calibration = np.concatenate([a, b])
    threshold = np.einsum("n...h,...h->n...", calibration, direction).mean(axis=0)
    return Probe(direction=direction, threshold=threshold)


def stratified_folds(n_a: int, n_b: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Fold index of every item of group a and of group b (each group spread over the k folds)."""
    fold_a = rng.permutation(np.arange(n_a) % k)
    fold_b = rng.permutation(np.arange(n_b) % k)
    return fold_a, fold_b


@dataclass(frozen=True)
class HeldOut:
    """Held-out decisions of a k-fold probe: one flag per item (and per layer, ...)."""

    above_a: np.ndarray  # [n_a, ...]
    above_b: np.ndarray  # [n_b, ...]
    n_calibration_pairs: int  # the smallest number of pairs a fold calibrated on

    def accuracy_flags(self) -> np.ndarray:
        return np.concatenate([self.above_a, ~self.above_b])


def kfold_probe(a: np.ndarray, b: np.ndarray, k: int = 5, seed: int = 0) -> HeldOut:
    """Score every item with a probe calibrated on the other folds (k-fold, stratified)."""
    if len(a) < 2 or len(b) < 2:
        raise ValueError(f"a k-fold probe needs at least 2 items per group (got {len(a)} and {len(b)})")
    k = max(2, min(int(k), len(a), len(b)))
    rng = np.random.default_rng(seed)
    fold_a, fold_b = stratified_folds(len(a), len(b), k, rng)
    above_a = np.zeros((len(a),) + a.shape[1:-1], dtype=bool)
    above_b = np.zeros((len(b),) + b.shape[1:-1], dtype=bool)
    pairs = []
    for fold in range(k):
        probe = calibrate(a[fold_a != fold], b[fold_b != fold], rng)
        above_a[fold_a == fold] = probe.above(a[fold_a == fold])
        above_b[fold_b == fold] = probe.above(b[fold_b == fold])
        pairs.append(min(int((fold_a != fold).sum()), int((fold_b != fold).sum())))
    return HeldOut(above_a=above_a, above_b=above_b, n_calibration_pairs=min(pairs))


def probe_rows(
    a: np.ndarray,
    b: np.ndarray,
    groups: tuple[str, str],
    positions: Sequence[str],
    *,
    k: int = 5,
    seed: int = 0,
    n_boot: int = 1000,
    min_items: int = 2,
) -> pd.DataFrame:
    """Tidy rows of one probe for every layer and position.

    ``a``/``b``: residual stream [n, layers, positions, hidden] of the two groups, NaN where an
    item lacks a position (each position uses only the items that have it). Rows: one per
    (layer, position, statistic, group): ``share_above_threshold`` for each group, and the k-fold
    ``accuracy`` (group ``both``), each with a bootstrap interval over held-out items.
    """
    rows = []
    layers = a.shape[1]
    for p, position in enumerate(positions):
        xa, xb = a[:, :, p, :], b[:, :, p, :]
        xa = xa[~np.isnan(xa).any(axis=(1, 2))]
        xb = xb[~np.isnan(xb).any(axis=(1, 2))]
        base = {"position": position}
        if len(xa) < max(2, min_items) or len(xb) < max(2, min_items):
            for layer in range(layers):
                for statistic, group, n in (
                    ("share_above_threshold", groups[0], len(xa)),
                    ("share_above_threshold", groups[1], len(xb)),
                    ("accuracy", "both", len(xa) + len(xb)),
                ):
                    rows.append(
                        {
                            **base,
                            "layer": layer,
                            "statistic": statistic,
                            "group": group,
                            "value": np.nan,
                            "ci_low": np.nan,
                            "ci_high": np.nan,
                            "n_items": n,
                            "n_calibration_pairs": 0,
                        }
                    )
            continue
        held = kfold_probe(xa, xb, k=k, seed=seed)
        accuracy = held.accuracy_flags()
        for layer in range(layers):
            for statistic, group, flags in (
                ("share_above_threshold", groups[0], held.above_a[:, layer]),
                ("share_above_threshold", groups[1], held.above_b[:, layer]),
                ("accuracy", "both", accuracy[:, layer]),
            ):
                estimate = bootstrap(flags.astype(float), n_boot=n_boot, seed=seed)
                rows.append(
                    {
                        **base,
                        "layer": layer,
                        "statistic": statistic,
                        "group": group,
                        "value": estimate.value,
                        "ci_low": estimate.ci_low,
                        "ci_high": estimate.ci_high,
                        "n_items": estimate.n,
                        "n_calibration_pairs": held.n_calibration_pairs,
                    }
                )
    columns = [
        "layer",
        "position",
        "statistic",
        "group",
        "value",
        "ci_low",
        "ci_high",
        "n_items",
        "n_calibration_pairs",
    ]
    return (
        pd.DataFrame(rows, columns=columns)
        .sort_values(["position", "layer", "statistic", "group"])
        .reset_index(drop=True)
    )


def split_by_verdict(prompt_ids: Sequence[str], verdicts: Mapping[str, bool]) -> tuple[np.ndarray, np.ndarray]:
    """Indices of refused and of fulfilled items, from ``{prompt_id: refused}``; items without a
    verdict are left out."""
    refused = [i for i, pid in enumerate(prompt_ids) if pid in verdicts and verdicts[pid]]
    fulfilled = [i for i, pid in enumerate(prompt_ids) if pid in verdicts and not verdicts[pid]]
    return np.asarray(refused, dtype=int), np.asarray(fulfilled, dtype=int)
