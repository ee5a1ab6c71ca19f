"""benchmarks/bench_dag.py runs the workflow in a copy of the repository: the copy must be the
workflow a user runs, default profile included (Snakemake finds it through the profiles link)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def load_bench_dag():
    spec = importlib.util.spec_from_file_location("bench_dag", REPO / "benchmarks" / "bench_dag.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_copy_keeps_the_profiles_link(tmp_path):
    load_bench_dag().copy_tracked(tmp_path)
    link = tmp_path / "profiles"
    assert link.is_symlink()
    assert (link / "default" / "config.yaml").read_text() == (
        REPO / "workflow" / "profiles" / "default" / "config.yaml"
    ).read_text()
    assert (tmp_path / "Snakefile").is_file()
    assert (tmp_path / "scripts" / "rim" / "__init__.py").is_file()
