#!/usr/bin/env python
"""Compare the results of two runs of the workflow, table by table and array by array.

    python benchmarks/compare_runs.py /tmp/before_run /tmp/after_run

For every parquet table and HDF5 dump under results/ that both runs wrote: whether it holds the
same values (exactly: same rows, columns, dtypes and cells; NaN equals NaN). Provenance (the
metadata of a table, the attributes of a dump) and the wall-clock columns of the training tables
(`seconds`) are not compared: they differ between any two runs. Files only one run wrote are
listed. Exit status 1 if any shared file differs.

Pair it with benchmarks/bench_dag.py --keep DIR: the code before and after a change, one run each.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd

# Columns that measure time, not results.
TIMING_COLUMNS = {"seconds"}
SKIPPED_FOLDERS = {"benchmarks", ".training_state"}


def result_files(root: Path) -> dict[str, Path]:
    results = root / "results"
    files = {}
    for path in results.rglob("*"):
        relative = path.relative_to(results)
        if path.is_file() and path.suffix in (".parquet", ".h5") and not SKIPPED_FOLDERS & set(relative.parts):
            files[str(relative)] = path
    return files


def table_difference(a: Path, b: Path) -> str | None:
    left, right = pd.read_parquet(a), pd.read_parquet(b)
    left = left.drop(columns=[c for c in TIMING_COLUMNS if c in left])
    right = right.drop(columns=[c for c in TIMING_COLUMNS if c in right])
    try:
        pd.testing.assert_frame_equal(left, right, check_exact=True)
    except AssertionError as error:
        return str(error).splitlines()[0] + " " + " ".join(str(error).splitlines()[1:4])
    return None


def arrays(path: Path) -> dict[str, np.ndarray]:
    found = {}
    with h5py.File(path, "r") as handle:
        handle.visititems(
            lambda name, item: found.__setitem__(name, item[()]) if isinstance(item, h5py.Dataset) else None
        )
    return found


def dump_difference(a: Path, b: Path) -> tuple[str | None, int]:
    left, right = arrays(a), arrays(b)
    if set(left) != set(right):
        only_first, only_second = sorted(set(left) - set(right))[:5], sorted(set(right) - set(left))[:5]
        return f"datasets differ: only in first {only_first}, only in second {only_second}", 0
    for name in sorted(left):
        x, y = left[name], right[name]
        if x.shape != y.shape or x.dtype != y.dtype:
            return f"{name}: shape/dtype {x.shape} {x.dtype} vs {y.shape} {y.dtype}", len(left)
        same = np.array_equal(x, y, equal_nan=True) if x.dtype.kind in "fc" else np.array_equal(x, y)
        if not same:
            return f"{name}: values differ", len(left)
    return None, len(left)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", type=Path, help="working directory of the first run (holds results/)")
    parser.add_argument("second", type=Path, help="working directory of the second run")
    args = parser.parse_args(argv)
    first, second = result_files(args.first), result_files(args.second)
    shared = sorted(set(first) & set(second))
    differing, n_arrays, n_tables, n_dumps = [], 0, 0, 0
    for name in shared:
        if name.endswith(".parquet"):
            n_tables += 1
            problem = table_difference(first[name], second[name])
        else:
            n_dumps += 1
            problem, count = dump_difference(first[name], second[name])
            n_arrays += count
        if problem:
            differing.append((name, problem))
    print(f"{len(shared)} files in both runs: {n_tables} tables, {n_dumps} dumps ({n_arrays} arrays)")
    for label, only in (("first", set(first) - set(second)), ("second", set(second) - set(first))):
        if only:
            print(
                f"only in the {label} run ({len(only)}): "
                + ", ".join(sorted(only)[:8])
                + (" ..." if len(only) > 8 else "")
            )
    if differing:
        print(f"{len(differing)} differ:")
        for name, problem in differing:
            print(f"  {name}: {problem}")
        return 1
    print("every shared table and array is identical (provenance and timing columns not compared)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
