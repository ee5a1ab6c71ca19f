"""Bootstrap CIs, correlations, provenance metadata and atomic writes."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from rim.provenance import atomic_path, collect, read_provenance, write_table
from rim.stats import bootstrap, correlation, difference_of_rates, rate


def test_rate_and_ci_are_seeded_and_bracket_the_value():
    flags = [True] * 30 + [False] * 70
    first, second = rate(flags, seed=3), rate(flags, seed=3)
    assert first == second
    assert first.value == pytest.approx(0.3)
    assert first.ci_low < 0.3 < first.ci_high
    assert first.n == 100
    # Normal approximation: half-width ~ 1.96 * sqrt(.3 * .7 / 100) = 0.09
    assert 0.06 < (first.ci_high - first.ci_low) / 2 < 0.12


def test_empty_rate_is_nan_not_zero():
    estimate = rate([])
    assert estimate.n == 0 and np.isnan(estimate.value)


def test_difference_of_rates():
    estimate = difference_of_rates([1, 1, 1, 0], [0, 0, 0, 1])
    assert estimate.value == pytest.approx(0.5)
    assert estimate.ci_low <= 0.5 <= estimate.ci_high


def test_correlation_matches_scipy():
    x = np.arange(8, dtype=float)
    y = np.array([0.1, 0.5, 0.3, 0.9, 1.2, 1.0, 1.6, 1.9])
    pearson = correlation(x, y, "pearson")
    expected = scipy_stats.pearsonr(x, y)
    assert pearson.r == pytest.approx(expected[0]) and pearson.p_value == pytest.approx(expected[1])
    assert pearson.ci_low <= pearson.r <= pearson.ci_high
    spearman = correlation(x, y, "spearman")
    assert spearman.r == pytest.approx(scipy_stats.spearmanr(x, y)[0])
    assert np.isnan(correlation([1, 2], [3, 4]).r)  # too few points


def test_bootstrap_of_a_median():
    estimate = bootstrap([1, 2, 3, 4, 100], np.median, n_boot=200)
    assert estimate.value == 3


def test_parquet_carries_provenance(tmp_path):
    path = tmp_path / "t.parquet"
    write_table(pd.DataFrame({"a": [1, 2]}), path, collect({"lr": 1e-5}, seed=7, dataset="x"))
    record = read_provenance(path)
    assert record["config"] == {"lr": 1e-5}
    assert record["seed"] == 7 and record["dataset"] == "x"
    assert {"torch", "transformers", "pandas", "python"} <= set(record["versions"])
    assert record["git_revision"]
    assert pd.read_parquet(path)["a"].tolist() == [1, 2]


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.parquet"
    with pytest.raises(ValueError):
        with atomic_path(target) as tmp:
            tmp.write_text("partial")
            raise ValueError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_path_gives_the_permissions_of_a_plain_file(tmp_path):
    import os

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "out.txt") as tmp:
            tmp.write_text("done")
    finally:
        os.umask(old)
    assert (tmp_path / "out.txt").stat().st_mode & 0o777 == 0o644  # mkstemp alone gives 0o600
