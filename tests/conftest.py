from __future__ import annotations

import os

import pytest

from rim.testing import make_tiny_model


def pytest_configure(config):
    # Under pytest-xdist (pytest -n 2) the workers share the cores: one torch thread each, so
    # that they do not oversubscribe the machine (the workflow tests' jobs set their own threads).
    if os.environ.get("PYTEST_XDIST_WORKER"):
        import torch

        torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict:
    """Tiny random models of each supported family, built once per test session."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {family: make_tiny_model(family, root / family) for family in ("llama", "qwen3", "gemma2")}


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
