"""Partial reruns over the whole chain to results/ras.parquet, on a tiny model.

Each rule receives only its own config block through `params:`, so after an edit Snakemake's
dry run plans exactly the jobs the edit affects and what is built from them (README, "Why does
a job rerun?"). Each test works on a clone of the shared tiny build (conftest.ras_pipeline)
and edits its config/config.yaml.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pytest

from workflow_helpers import clone_workdir, planned_jobs, snakemake, write_config

# Both modules clone the session fixture ras_pipeline: under pytest -n they share one worker
# (--dist loadgroup), so that it is built once.
pytestmark = pytest.mark.xdist_group("ras_pipeline")

RAS = "results/ras.parquet"
RAS_OUTPUTS = {"results/ras.parquet", "results/ras_correlations.parquet", "results/ras/tiny.parquet"}
# A judge edit re-judges the stored responses: no generation, no dump, no neuron selection.
JUDGING_AND_AFTER = {"judge", "summarize_evaluation", "ras", "ras_table"}


@pytest.fixture(scope="module")
def built(ras_pipeline, tmp_path_factory):
    template, config = ras_pipeline
    workdir = clone_workdir(template, tmp_path_factory.mktemp("reruns") / "workdir")
    return workdir, copy.deepcopy(config)


def dry_run(workdir: Path, config: dict) -> tuple[dict, set[str], str]:
    """Job counts per rule, planned output files and the whole output of `snakemake -n` under config."""
    write_config(workdir, config)
    result = snakemake(workdir, "-n", RAS)
    output = result.stdout + result.stderr
    files = {path for line in re.findall(r"^\s+output: (.*)$", output, flags=re.M) for path in line.split(", ")}
    return planned_jobs(result), files, output


def summary(workdir: Path) -> dict[str, tuple[str, str]]:
    """output file -> (status, plan) from `snakemake --summary`."""
    result = snakemake(workdir, "--summary", RAS)
    rows = [line.split("\t") for line in result.stdout.splitlines()]
    header = rows[0]
    status, plan = header.index("status"), header.index("plan")
    return {row[0]: (row[status], row[plan]) for row in rows[1:] if len(row) == len(header)}


def built_files(workdir: Path, pattern: str) -> set[str]:
    return {str(path.relative_to(workdir)) for path in workdir.glob(pattern)}


def test_nothing_changed_reruns_nothing(built):
    workdir, config = built
    assert dry_run(workdir, config)[0] == {}
    # Writing the same settings again (a newer config file) is no change either.
    assert dry_run(workdir, copy.deepcopy(config))[0] == {}
    states = summary(workdir)
    assert RAS in states and all(state == ("ok", "no update") for state in states.values()), states
    for change in ("input", "code"):
        listed = snakemake(workdir, "--list-changes", change, RAS).stdout.split()
        assert listed == [], (change, listed)


def test_judge_settings_rerun_only_evaluation_and_what_follows(built):
    workdir, config = built
    edited = copy.deepcopy(config)
    edited["evaluation"]["judges"]["phrases"]["phrases"] = ["I refuse", "I will not"]
    try:
        planned, files, output = dry_run(workdir, edited)
        assert set(planned) <= JUDGING_AND_AFTER and planned.get("judge"), planned
        # The phrase judge reads the answers to prompt sets of harmful and harmless requests, not
        # the math answers: those evaluations are kept.
        judged = {
            path
            for path in built_files(workdir, "results/eval/tiny/**/*.parquet")
            if "/multiarith/" not in path and "/gsm8k_heldout/" not in path
        }
        assert {path for path in files if path.startswith("results/eval/tiny/")} == judged
        assert "Params have changed since last execution" in output and "'I will not'" in output
        states = summary(workdir)
        assert {path for path, (status, _) in states.items() if status == "params changed"} == judged
    finally:
        write_config(workdir, config)


def test_a_new_seed_adds_only_its_own_jobs(built):
    workdir, config = built
    edited = copy.deepcopy(config)
    edited["training"]["runs"]["gsm8k_style"]["seeds"] = [0, 1]
    try:
        planned, files, _ = dry_run(workdir, edited)
        assert planned["finetune"] == 1 and "safety_neurons" not in planned, planned
        # Every job of seed 0 has its twin for seed 1, and nothing of seed 0 or the base model
        # reruns; only the RAS tables that pool the checkpoints are rebuilt.
        seed0 = {
            path
            for path in built_files(workdir, "results/**/*")
            if "/seed0/" in path
            and (workdir / path).is_file()
            and "/checkpoints/" not in path
            and "/benchmarks/" not in path
        }
        seed1 = {path.replace("/seed0/", "/seed1/") for path in seed0}
        assert seed0 and seed1 <= files
        assert files - seed1 - RAS_OUTPUTS == {"results/finetune/tiny/gsm8k_style/seed1/checkpoints"}
        assert not any("/seed0/" in path or "/base" in path for path in files)
    finally:
        write_config(workdir, config)
