from __future__ import annotations

import pytest

from rim.testing import make_tiny_model


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory) -> dict:
    """Tiny random models of each supported family, built once per test session."""
    root = tmp_path_factory.mktemp("tiny-models")
    return {family: make_tiny_model(family, root / family) for family in ("llama", "qwen3", "gemma2")}
