"""One corrupt input fails its own job only: with keep-going (the default profile sets it) the other
checkpoints' jobs finish, and the failure names the file and how to rebuild it."""

from __future__ import annotations

import os
import time

import pytest

from workflow_helpers import clone_workdir, snakemake

# Clones the session fixture ras_pipeline: under pytest -n it shares that fixture's worker.
pytestmark = pytest.mark.xdist_group("ras_pipeline")

DUMPS = "results/activations/tiny"
CORRUPT = "results/eval/tiny/gsm8k_style/seed0/step2/harmful/no_think.parquet"


def test_a_corrupt_table_fails_its_checkpoint_and_the_others_finish(ras_pipeline, tmp_path):
    template, _ = ras_pipeline
    workdir = clone_workdir(template, tmp_path / "workdir")
    table = workdir / CORRUPT
    stat = table.stat()
    table.write_bytes(table.read_bytes()[: stat.st_size // 2])  # truncated, as by a full disk
    os.utime(table, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # so that nothing plans to rebuild it
    started = time.time()

    # Every activation dump is rebuilt, one at a time and step 2's (which reads the corrupt table)
    # before step 4's: without keep-going (the default profile sets it; no flag here) the run
    # would stop before step 4's job starts.
    result = snakemake(
        workdir,
        "--cores",
        "1",
        "--prioritize",
        f"{DUMPS}/gsm8k_style/seed0/step2.h5",
        "--forcerun",
        "dump_activations",
        "--",
        "results/ras.parquet",
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode != 0, output[-4000:]
    for finished in ("base.h5", "gsm8k_style/seed0/step4.h5"):
        assert (workdir / DUMPS / finished).stat().st_mtime > started, f"{finished} was not rebuilt:\n{output[-4000:]}"
    assert not (workdir / DUMPS / "gsm8k_style/seed0/step2.h5").exists()
    log = (workdir / "logs/dump_activations/tiny/gsm8k_style/seed0/step2.log").read_text()
    assert f"{CORRUPT}: unreadable or incomplete" in log and f"snakemake --force {CORRUPT}" in log, log[-3000:]
    assert "Traceback" not in log
    assert not (workdir / ".snakemake" / "locks").exists() or not list((workdir / ".snakemake" / "locks").iterdir())
