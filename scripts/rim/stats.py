"""Confidence intervals and correlations reported throughout the workflow.

Seeded percentile bootstrap everywhere, so that a rerun reproduces every interval exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
from scipy import stats as _scipy_stats


@dataclass(frozen=True)
class Estimate:
    value: float
    ci_low: float
    ci_high: float
    n: int

    def as_dict(self, prefix: str = "") -> dict:
        return {
            f"{prefix}value" if prefix else "value": self.value,
            f"{prefix}ci_low": self.ci_low,
            f"{prefix}ci_high": self.ci_high,
            f"{prefix}n": self.n,
        }


def bootstrap(
    values: Sequence[float] | np.ndarray,
    statistic: Callable[[np.ndarray], float] = np.mean,
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Estimate:
    """Statistic of ``values`` with a percentile bootstrap interval over items."""
    data = np.asarray(values, dtype=float)
    data = data[~np.isnan(data)]
    n = len(data)
    if n == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    point = float(statistic(data))
    rng = np.random.default_rng(seed)
    draws = rng.integers(0, n, size=(n_boot, n))
    if statistic is np.mean:
        boot = data[draws].mean(axis=1)
    else:
        boot = np.array([statistic(data[row]) for row in draws])
    alpha = (1 - level) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return Estimate(point, float(low), float(high), n)


def rate(flags: Sequence[bool] | np.ndarray, **kwargs) -> Estimate:
    """A proportion (e.g. misalignment rate) with its bootstrap interval."""
    return bootstrap(np.asarray(flags, dtype=float), np.mean, **kwargs)


def difference_of_rates(
    a: Sequence[bool], b: Sequence[bool], *, n_boot: int = 1000, level: float = 0.95, seed: int = 0
) -> Estimate:
    """rate(a) - rate(b) for two independent groups, bootstrapped within each group."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) == 0 or len(b) == 0:
        return Estimate(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    boot = a[rng.integers(0, len(a), (n_boot, len(a)))].mean(1) - b[rng.integers(0, len(b), (n_boot, len(b)))].mean(1)
    alpha = (1 - level) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    return Estimate(float(a.mean() - b.mean()), float(low), float(high), int(min(len(a), len(b))))


@dataclass(frozen=True)
class Correlation:
    method: str
    r: float
    p_value: float
    ci_low: float
    ci_high: float
    n: int


def correlation(
    x: Sequence[float],
    y: Sequence[float],
    method: str = "pearson",
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Correlation:
    """Pearson or Spearman r with its two-sided p-value and a bootstrap interval over pairs."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = ~(np.isnan(x) | np.isnan(y))
    x, y = x[keep], y[keep]
    n = len(x)
    func = {"pearson": _scipy_stats.pearsonr, "spearman": _scipy_stats.spearmanr}[method]
    if n < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return Correlation(method, float("nan"), float("nan"), float("nan"), float("nan"), n)
    result = func(x, y)
    r, p = float(result[0]), float(result[1])
    rng = np.random.default_rng(seed)
    # All resamples at once (the same draws as one resample per iteration): a run's table has
    # hundreds of correlations, and a Python loop of scipy calls costs ~1 s for each.
    index = rng.integers(0, n, (n_boot, n))
    xs, ys = x[index], y[index]
    keep = (np.ptp(xs, axis=1) > 0) & (np.ptp(ys, axis=1) > 0)
    xs, ys = xs[keep], ys[keep]
    if method == "spearman":
        xs, ys = _scipy_stats.rankdata(xs, axis=1), _scipy_stats.rankdata(ys, axis=1)
    boot = _rowwise_pearson(xs, ys)
    alpha = (1 - level) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha]) if boot.size else (float("nan"), float("nan"))
    return Correlation(method, r, p, float(low), float(high), n)


def _rowwise_pearson(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Pearson r of each row pair (Spearman's r is this on ranks), clipped to [-1, 1]."""
    xc = xs - xs.mean(axis=1, keepdims=True)
    yc = ys - ys.mean(axis=1, keepdims=True)
    r = (xc * yc).sum(axis=1) / np.sqrt((xc * xc).sum(axis=1) * (yc * yc).sum(axis=1))
    return np.clip(r, -1.0, 1.0)


def _ranked(values: np.ndarray, method: str) -> np.ndarray:
    return _scipy_stats.rankdata(values, axis=-1) if method == "spearman" else values


def _partial_from_pairwise(r_xy, r_xz, r_yz):
    """r of x and y with z's linear part removed from both (first-order partial correlation)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (r_xy - r_xz * r_yz) / np.sqrt((1 - r_xz**2) * (1 - r_yz**2))
    return np.clip(r, -1.0, 1.0)


def partial_correlation(
    x: Sequence[float],
    y: Sequence[float],
    z: Sequence[float],
    method: str = "pearson",
    *,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> Correlation:
    """r of x and y controlling for z (docs/method.md#correlation-with-misalignment): the Pearson r
    of the residuals of x and y after a least-squares line on z (Spearman: on ranks), with the
    two-sided t-test p-value on n - 3 degrees of freedom and a bootstrap interval over triples."""
    x, y, z = (np.asarray(v, dtype=float) for v in (x, y, z))
    keep = ~(np.isnan(x) | np.isnan(y) | np.isnan(z))
    x, y, z = x[keep], y[keep], z[keep]
    n = len(x)
    nan = Correlation(method, float("nan"), float("nan"), float("nan"), float("nan"), n)
    if n < 4 or min(np.ptp(x), np.ptp(y), np.ptp(z)) == 0:
        return nan
    xr, yr, zr = (_ranked(v, method) for v in (x, y, z))
    pair = lambda a, b: float(_rowwise_pearson(a[None], b[None])[0])  # noqa: E731
    r_xz, r_yz = pair(xr, zr), pair(yr, zr)
    if abs(r_xz) >= 1 or abs(r_yz) >= 1:  # x or y is a line in z: nothing is left to correlate
        return nan
    r = float(_partial_from_pairwise(pair(xr, yr), r_xz, r_yz))
    dof = n - 3
    t = r * np.sqrt(dof / max(1e-300, 1 - r * r))
    p = float(2 * _scipy_stats.t.sf(abs(t), dof))
    rng = np.random.default_rng(seed)
    index = rng.integers(0, n, (n_boot, n))
    xs, ys, zs = x[index], y[index], z[index]
    ok = (np.ptp(xs, axis=1) > 0) & (np.ptp(ys, axis=1) > 0) & (np.ptp(zs, axis=1) > 0)
    xs, ys, zs = (_ranked(v[ok], method) for v in (xs, ys, zs))
    boot = _partial_from_pairwise(_rowwise_pearson(xs, ys), _rowwise_pearson(xs, zs), _rowwise_pearson(ys, zs))
    boot = boot[np.isfinite(boot)]
    alpha = (1 - level) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha]) if boot.size else (float("nan"), float("nan"))
    return Correlation(method, r, p, float(low), float(high), n)


def mean_correlation(rs: Sequence[float], method: str = "pearson", *, level: float = 0.95) -> Correlation:
    """The mean of per-seed correlations, with a t interval over seeds and the one-sample t-test
    p-value against 0 (docs/method.md#correlation-with-misalignment): seeds are the independent
    replicates, so the interval is as wide as the seeds disagree. ``n`` is the number of seeds;
    the interval and p need at least 2 (with 2 or 3 seeds it is wide, as it should be)."""
    rs = np.asarray(rs, dtype=float)
    rs = rs[~np.isnan(rs)]
    k = len(rs)
    if k == 0:
        return Correlation(method, float("nan"), float("nan"), float("nan"), float("nan"), 0)
    mean = float(rs.mean())
    if k < 2:
        return Correlation(method, mean, float("nan"), float("nan"), float("nan"), k)
    spread = float(rs.std(ddof=1)) / np.sqrt(k)
    if spread == 0:
        return Correlation(method, mean, 0.0 if mean != 0 else 1.0, mean, mean, k)
    quantile = float(_scipy_stats.t.ppf(0.5 + level / 2, k - 1))
    p = float(2 * _scipy_stats.t.sf(abs(mean) / spread, k - 1))
    low, high = max(-1.0, mean - quantile * spread), min(1.0, mean + quantile * spread)
    return Correlation(method, mean, p, low, high, k)
