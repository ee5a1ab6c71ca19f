"""One corrupt input fails its own job only: with keep-going (the default profile sets it) the other
checkpoints' jobs finish, and the failure names the file and how to rebuild it."""

from __future__ import annotations

import os
import time

import pytest

from workflow_helpers import clone_workdir, snakemake

# Clones the session fixture ras_pipeline: under pytest -n it shares that fixture's worker.
pytestmark = pytest.mark.xdist_group("ras_pipeline")

EVAL = "results/eval/tiny"
CORRUPT = "results/responses/tiny/gsm8k_style/seed0/step2/harmful/no_think.parquet"


def test_a_corrupt_table_fails_its_checkpoint_and_the_others_finish(ras_pipeline, tmp_path):
    template, _ = ras_pipeline
    workdir = clone_workdir(template, tmp_path / "workdir")
    table = workdir / CORRUPT
    stat = table.stat()
    table.write_bytes(table.read_bytes()[: stat.st_size // 2])  # truncated, as by a full disk
    os.utime(table, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # so that nothing plans to rebuild it
    started = time.time()

    # Every table is judged again, one at a time and step 2's harmful responses (the corrupt
    # table) first: without keep-going (the default profile sets it; no flag here) the run would
    # stop before the other judge jobs start.
    result = snakemake(
        workdir,
        "--cores",
        "1",
        "--prioritize",
        f"{EVAL}/gsm8k_style/seed0/step2/harmful/no_think.parquet",
        "--forcerun",
        "judge",
        "--",
        "results/ras.parquet",
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-4000:]
    for finished in ("base/harmful/no_think.parquet", "gsm8k_style/seed0/step4/harmful/no_think.parquet"):
        assert (workdir / EVAL / finished).stat().st_mtime > started, f"{finished} was not rebuilt:\n{output[-4000:]}"
    assert not (workdir / EVAL / "gsm8k_style/seed0/step2/harmful/no_think.parquet").exists()
    log = (workdir / "logs/judge/tiny/gsm8k_style/seed0/step2/harmful/no_think.log").read_text()
    assert f"{CORRUPT}: unreadable or incomplete" in log and f"snakemake --force {CORRUPT}" in log, log[-3000:]
    assert "Traceback" not in log
    assert not (workdir / ".snakemake" / "locks").exists() or not list((workdir / ".snakemake" / "locks").iterdir())
