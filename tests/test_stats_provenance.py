"""Bootstrap CIs, correlations, provenance metadata and atomic writes."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pandas as pd
import pytest
from scipy import stats as scipy_stats

from rim import provenance
from rim.provenance import atomic_path, collect, git_revision, read_provenance, write_table
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
    # A commit in a git checkout, "unknown" in a release tarball or a copied folder.
    assert record["git_revision"] == git_revision()
    assert record["git_revision"] == "unknown" or re.fullmatch(r"[0-9a-f]{40}(-dirty)?", record["git_revision"])
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


# ----- git revision ------------------------------------------------------------------------------
def git(folder, *args) -> str:
    command = [
        "git",
        "-C",
        str(folder),
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "-c",
        "commit.gpgsign=false",
        *args,
    ]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def checkout(folder):
    """A git repository with one commit of one tracked file."""
    folder.mkdir(parents=True, exist_ok=True)
    git(folder, "init", "-q")
    (folder / "Snakefile").write_text("rule all:\n")
    git(folder, "add", "Snakefile")
    git(folder, "commit", "-q", "-m", "first")
    return folder


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture
def fresh_cache():
    provenance._git_revision.cache_clear()
    yield
    provenance._git_revision.cache_clear()


@pytest.mark.usefixtures("fresh_cache")
def test_git_revision_outside_a_checkout_is_unknown(tmp_path):
    tarball = tmp_path / "rim-1.0"
    tarball.mkdir()
    (tarball / "Snakefile").write_text("rule all:\n")
    assert git_revision(tarball) == "unknown"


@needs_git
@pytest.mark.usefixtures("fresh_cache")
def test_git_revision_of_a_folder_inside_an_unrelated_repository_is_unknown(tmp_path):
    home = checkout(tmp_path / "home")
    copied = home / "projects" / "rim"
    copied.mkdir(parents=True)
    (copied / "Snakefile").write_text("rule all:\n")
    assert git_revision(home) == git(home, "rev-parse", "HEAD")
    assert git_revision(copied) == "unknown"


@needs_git
@pytest.mark.usefixtures("fresh_cache")
def test_git_revision_of_a_checkout_and_a_dirty_one(tmp_path):
    clean, dirty = checkout(tmp_path / "clean"), checkout(tmp_path / "dirty")
    (dirty / "Snakefile").write_text("rule all:\n    input: 'x'\n")
    assert git_revision(clean) == git(clean, "rev-parse", "HEAD")
    assert re.fullmatch(r"[0-9a-f]{40}", git_revision(clean))
    assert git_revision(dirty) == git(dirty, "rev-parse", "HEAD") + "-dirty"
    # Cached per folder, however it is named.
    assert git_revision(str(clean) + "/") == git_revision(clean)
    assert provenance._git_revision.cache_info().currsize == 2
    # Untracked files leave a checkout clean.
    (clean / "results").mkdir()
    (clean / "results" / "t.parquet").write_bytes(b"")
    provenance._git_revision.cache_clear()
    assert not git_revision(clean).endswith("-dirty")


@needs_git
@pytest.mark.usefixtures("fresh_cache")
def test_git_revision_without_git_installed_is_unknown(tmp_path, monkeypatch):
    repo = checkout(tmp_path / "repo")
    monkeypatch.setenv("PATH", str(tmp_path / "no-programs-here"))
    assert git_revision(repo) == "unknown"
