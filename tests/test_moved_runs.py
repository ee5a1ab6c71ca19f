"""A finished run moved or copied to another folder, with the workflow inside it (a colleague's
copy, results moved to cluster scratch, a release tarball unpacked), plans nothing new: every
input and output a rule declares is relative to the working directory, or a user's own file
named in the config. Outside a git checkout the run records its revision as unknown."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from rim.provenance import read_json
from workflow_helpers import REPO, SNAKEMAKE, planned_jobs, tiny_config, write_config

# What a release tarball holds: the workflow without git, tests, environments or results.
NOT_RELEASED = (".git", ".venv", "results", "logs", ".snakemake", "tests", "benchmarks", "__pycache__", "*.egg-info")
ALIGNED = "results/models/tiny/aligned.json"


def release_copy(target: Path) -> Path:
    shutil.copytree(REPO, target, symlinks=True, ignore=shutil.ignore_patterns(*NOT_RELEASED))
    return target


def snakemake_in(folder: Path, *args: str) -> subprocess.CompletedProcess:
    """`snakemake` typed inside ``folder`` (its own Snakefile, default profile and package)."""
    env = dict(os.environ, PYTHONPATH=str(folder / "scripts"))
    result = subprocess.run(
        [SNAKEMAKE, "--cores", "2", *args], cwd=folder, env=env, capture_output=True, text=True, timeout=1200
    )
    assert result.returncode == 0, f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def test_a_finished_run_copied_elsewhere_plans_nothing_and_records_no_revision(tiny_model_dirs, tmp_path):
    first = release_copy(tmp_path / "here" / "rim")
    config = tiny_config(tiny_model_dirs["llama"])
    config["models"]["tiny"]["alignment"]["enabled"] = True  # align reads the shipped refusal sentences
    write_config(first, config)
    snakemake_in(first, ALIGNED)
    assert read_json(first / ALIGNED)["provenance"]["git_revision"] == "unknown"  # not a git checkout

    # Moved with its results, logs and Snakemake's records (times kept), as cp -a or rsync -a do.
    moved = tmp_path / "scratch" / "elsewhere" / "rim-copy"
    shutil.copytree(first, moved, symlinks=True)
    shutil.rmtree(first)
    dry_run = snakemake_in(moved, "-n", ALIGNED)
    assert planned_jobs(dry_run) == {}, dry_run.stdout[-4000:]
    assert "Nothing to be done" in dry_run.stdout + dry_run.stderr


def test_declared_paths_are_relative_inside_the_working_directory_and_kept_elsewhere(tmp_path):
    from rim.data.sources import workdir_relative

    inside = tmp_path / "run" / "resources" / "prompts" / "refusals.txt"
    elsewhere = tmp_path / "data" / "my_refusals.txt"
    assert workdir_relative(inside, tmp_path / "run") == "resources/prompts/refusals.txt"
    assert workdir_relative(elsewhere, tmp_path / "run") == str(elsewhere)
