from __future__ import annotations

import functools
import inspect
import os
import re

import pytest

from rim.testing import make_tiny_model, FAMILIES


def pytest_configure(config):
    # Under pytest-xdist (pytest -n 2) the workers share the cores: one torch thread each, so
    # that they do not oversubscribe the machine (the workflow tests' jobs set their own threads).
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


# A test that runs Snakemake, itself or through a fixture, is a workflow test: `pytest -m "not
# workflow"` is the unit-only loop (about a minute on 2 cores).
_RUNS_SNAKEMAKE = re.compile(r"\bsnakemake\w*\(|\bdry_run\(|\bSNAKEMAKE\b")


@functools.cache
def _runs_snakemake(function) -> bool:
    try:
        return bool(_RUNS_SNAKEMAKE.search(inspect.getsource(function)))
    except (OSError, TypeError):
        return False


def pytest_collection_modifyitems(config, items):
    for item in items:
        functions = [getattr(item, "function", None)]
        for definitions in item._fixtureinfo.name2fixturedefs.values():
            functions.extend(definition.func for definition in definitions)
        if any(_runs_snakemake(function) for function in functions if function is not None):
            item.add_marker(pytest.mark.workflow)


# Every family rim.testing builds: llama, qwen3, gemma2, phi3, olmo2, mistral.
TINY_FAMILIES = tuple(FAMILIES)


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict:
    """Tiny random models of each supported family, built once per test session."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {family: make_tiny_model(family, root / family) for family in TINY_FAMILIES}


@pytest.fixture
def hub_offline(monkeypatch):
    """No hub here: make the libraries fail at once instead of waiting on network time-outs.

    huggingface_hub and datasets read HF_HUB_OFFLINE when imported, so patch their constants too.
    """
    import datasets.config
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True, raising=False)


@pytest.fixture(scope="session")
def ras_pipeline(tiny_model_dirs, tmp_path_factory):
    """The tiny pipeline built once up to results/ras.parquet: one seed of the RAS run, checkpoints
    at steps 0 (the base model), 2 and 4. Tests clone it (workflow_helpers.clone_workdir) before
    they change anything. Returns (workdir, config)."""
    from workflow_helpers import snakemake, tiny_config, write_config

    workdir = tmp_path_factory.mktemp("ras-pipeline")
    config = tiny_config(tiny_model_dirs["llama"], training={"runs": {"gsm8k_style": {"seeds": [0]}}})
    write_config(workdir, config)
    snakemake(workdir, "results/ras.parquet")
    return workdir, config


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models run fastest on one thread (and a shared machine's load does not slow them).
    Modules ask for it with pytest.mark.usefixtures("one_torch_thread")."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def math_table(tmp_path_factory):
    """A small GSM8k-style table (12 problems, 10 for training) in the dataset rules' schema."""
    import pandas as pd

    rows = [
        {
            "problem_id": f"p{i}",
            "question": f"Tom has {i} pens and buys {i + 2} more. How many pens?",
            "reasoning": f"{i} + {i + 2} = {2 * i + 2}",
            "final": f"#### {2 * i + 2}",
            "answer": str(2 * i + 2),
            "split": "train" if i < 10 else "eval",
        }
        for i in range(12)
    ]
    path = tmp_path_factory.mktemp("data") / "math.parquet"
    pd.DataFrame(rows).to_parquet(path)
    return path
