#!/usr/bin/env python
"""Whole-DAG benchmark: build a target from scratch in a temporary copy of the repository.

Copies the repository's tracked files (git ls-files; the working tree as it is, so uncommitted
edits count) into a temporary folder, runs `snakemake --cores N <target>` there with this
environment's Snakemake, and prints:
- the wall time of the run and the number of jobs, per rule;
- the sum of the job times per rule, from Snakemake's own benchmark files
  (results/benchmarks/<rule>/..., the `s` column), and the largest resident memory of any job;
- the peak memory of the whole process tree (Snakemake and its jobs, sampled every second);
- the CPU time of the Snakemake process itself (planning, file checks, logging; not its jobs),
  which shares the cores with the jobs.

    python benchmarks/bench_dag.py                           # results/ras.parquet, 2 cores
    python benchmarks/bench_dag.py --target all --cores 2 --keep /tmp/dag_run
    python benchmarks/bench_dag.py -- --scheduler ilp        # extra Snakemake arguments after --

Run the code before and after a change one after the other on the same, otherwise idle machine:
a second process on 2 cores changes the figures more than most changes do.
"""

from __future__ import annotations

import argparse
import csv
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def copy_tracked(destination: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        source, target = REPO / name.decode(), destination / name.decode()
        target.parent.mkdir(parents=True, exist_ok=True)
        if source.is_symlink():
            # profiles -> workflow/profiles: without it Snakemake runs without the default profile.
            target.symlink_to(source.readlink())
        elif source.is_file():
            shutil.copy2(source, target)


def tree_rss_mb(pid: int) -> float:
    """Resident memory of a process and all its descendants (MB), from /proc."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0.0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total / 2**20


def own_cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of the process itself so far (its children not counted)."""
    import psutil

    try:
        times = psutil.Process(pid).cpu_times()
    except psutil.NoSuchProcess:
        return None
    return times.user + times.system


def per_rule(benchmarks: Path) -> dict[str, dict[str, float]]:
    """Jobs, summed seconds and the largest max_rss (MB) per rule from Snakemake's benchmark files."""
    rules: dict[str, dict[str, float]] = defaultdict(lambda: {"jobs": 0, "seconds": 0.0, "max_rss_mb": 0.0})
    for path in benchmarks.rglob("*.tsv"):
        rule = path.relative_to(benchmarks).parts[0]
        with path.open() as handle:
            rows = list(csv.DictReader(handle, delimiter="\t"))
        for row in rows[-1:]:  # the last repeat
            entry = rules[rule]
            entry["jobs"] += 1
            entry["seconds"] += float(row["s"])
            rss = row.get("max_rss", "NA")
            if rss not in ("", "NA", "-"):
                entry["max_rss_mb"] = max(entry["max_rss_mb"], float(rss))
    return dict(rules)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--target", default="results/ras.parquet", help="Snakemake target ('all' for the default target)"
    )
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--keep", default=None, help="run in this folder and keep it (default: a temporary folder)")
    parser.add_argument("--snakemake", default=str(Path(sys.executable).with_name("snakemake")))
    parser.add_argument("extra", nargs="*", help="more Snakemake arguments (after --)")
    args = parser.parse_args(argv)

    folder = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="bench_dag_"))
    if folder.exists() and any(folder.iterdir()):
        raise SystemExit(f"{folder} is not empty: the run must start from scratch")
    folder.mkdir(parents=True, exist_ok=True)
    copy_tracked(folder)
    command = [args.snakemake, "--cores", str(args.cores), *args.extra]
    command += [] if args.target == "all" else [args.target]
    print(f"+ {' '.join(command)}  (in {folder})", flush=True)
    log = folder / "bench_dag.log"
    peak = [0.0]
    # Read every second: the last reading before Snakemake exits is its CPU time to within 1 s.
    snakemake_cpu = [0.0]
    started = time.perf_counter()
    with log.open("w") as output:
        # The copy's own package, ahead of an editable install that points at this checkout.
        env = {
            **os.environ,
            "PYTHONPATH": os.pathsep.join(filter(None, [str(folder / "scripts"), os.environ.get("PYTHONPATH")])),
        }
        process = subprocess.Popen(command, cwd=folder, stdout=output, stderr=subprocess.STDOUT, env=env)

        def sample() -> None:
            while process.poll() is None:
                peak[0] = max(peak[0], tree_rss_mb(process.pid))
                seconds = own_cpu_seconds(process.pid)
                if seconds is not None and process.poll() is None:
                    snakemake_cpu[0] = seconds
                time.sleep(1.0)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        returncode = process.wait()
        sampler.join(timeout=2)
    wall = time.perf_counter() - started
    rules = per_rule(folder / "results" / "benchmarks")
    benchmarked = sum(int(entry["jobs"]) for entry in rules.values())
    done = re.findall(r"(\d+) of (\d+) steps", log.read_text())
    total = f"{done[-1][0]} of {done[-1][1]} jobs" if done else "no job"
    print(f"exit status {returncode}; log {log}")
    print(
        f"wall time {wall:.0f} s ({wall / 60:.1f} min) on {args.cores} cores; {total} done, "
        f"{benchmarked} with benchmark files"
    )
    print(f"peak memory of the process tree {peak[0]:.0f} MB")
    share = 100 * snakemake_cpu[0] / wall
    print(f"CPU time of the Snakemake process itself {snakemake_cpu[0]:.0f} s ({share:.1f}% of one core)")
    print(f"{'rule':<24} {'jobs':>5} {'sum of job s':>13} {'mean s':>8} {'max job RSS MB':>15}")
    for rule, entry in sorted(rules.items(), key=lambda item: -item[1]["seconds"]):
        mean = entry["seconds"] / max(entry["jobs"], 1)
        print(f"{rule:<24} {int(entry['jobs']):>5} {entry['seconds']:>13.0f} {mean:>8.1f} {entry['max_rss_mb']:>15.0f}")
    if not args.keep:
        shutil.rmtree(folder, ignore_errors=True)
    raise SystemExit(returncode)


if __name__ == "__main__":
    main()
