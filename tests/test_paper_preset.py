"""config/paper.yaml: the paper's eight models plan offline, each job asks for its model's GPUs,
and a config given with --configfile replaces the embedded default instead of joining it."""

from __future__ import annotations

import re

import pytest
import yaml

from rim.config import load_config
from rim.models.adapters import ADAPTERS
from workflow_helpers import REPO, planned_jobs, snakemake

PAPER = REPO / "config" / "paper.yaml"
# model_type of each hub model (from its config.json), and the adapter that takes it.
HUB_MODEL_TYPES = {
    "Qwen/Qwen3-4B": "qwen3",
    "Qwen/Qwen3-30B-A3B": "qwen3_moe",
    "microsoft/Phi-3.5-mini-instruct": "phi3",
    "microsoft/Phi-3.5-MoE-instruct": "phimoe",
    "allenai/OLMo-2-0425-1B-Instruct": "olmo2",
    "allenai/OLMoE-1B-7B-0125-Instruct": "olmoe",
    "mistralai/Mistral-7B-Instruct-v0.3": "mistral",
    "mistralai/Mixtral-8x7B-Instruct-v0.1": "mixtral",
}


@pytest.fixture(scope="module")
def paper():
    return load_config(PAPER)


def test_the_preset_names_the_papers_eight_models_with_its_lora_settings(paper):
    assert {entry["source"] for entry in paper["models"].values()} == set(HUB_MODEL_TYPES)
    for name, entry in paper["models"].items():
        model_type = HUB_MODEL_TYPES[entry["source"]]
        assert any(model_type in adapter.model_types for adapter in ADAPTERS.values()), name
        finetuning = entry["finetuning"]
        assert finetuning["lora"] == {
            "rank": 32,
            "alpha": 64.0,
            "dropout": 0.0,
            "use_rslora": True,
            "target_modules": None,
            "target_parameters": None,
        }
        assert finetuning["learning_rate"] == 1e-5 and finetuning["batch_size"] == 32
        assert len(finetuning["checkpoint_steps"]) == 8 and finetuning["checkpoint_steps"][0] == 0
        assert entry["alignment"]["enabled"] is False  # aligned models: no warm-start
    assert paper["evaluation"]["judges"]["rubric"]["enabled"] is True


def test_the_preset_plans_the_whole_study_offline_with_each_models_gpus(paper, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    result = snakemake(tmp_path, "-n", f"--configfile={PAPER}", "results/ras.parquet")
    jobs = planned_jobs(result)
    models, seeds = len(paper["models"]), len(paper["training"]["runs"]["gsm8k"]["seeds"])
    checkpoints = 1 + seeds * (len(paper["models"]["qwen3_4b"]["finetuning"]["checkpoint_steps"]) - 1)
    assert jobs["prepare_model"] == models == 8
    assert jobs["finetune"] == models * seeds
    # One job per checkpoint (its responses and its dump), nothing generated apart.
    assert jobs["generate_and_dump_base"] + jobs["generate_and_dump"] == models * checkpoints
    assert "generate" not in jobs
    assert jobs["safety_neurons"] == jobs["ras"] == models
    # Only the preset's models: the embedded default's (smollm2) does not join the study.
    output = result.stdout + result.stderr
    assert "smollm2" not in output and "gsm8k_style" not in output
    for block in re.findall(
        r"^rule (?:finetune|generate_and_dump_base|generate_and_dump):\n(.*?)(?=\n\n)", output, re.M | re.S
    ):
        model = re.search(r"wildcards: model=(\w+)", block).group(1)
        gpus = paper["models"][model]["gpus"]
        assert f"gpu={gpus}," in re.search(r"resources: (.*)", block).group(1), (model, block)


def test_a_figure_reading_an_undefined_prompt_set_is_a_named_config_error(tmp_path):
    config = yaml.safe_load(PAPER.read_text())
    del config["figures"]["training_sets"]  # its default math set, multiarith, is not in the preset
    path = tmp_path / "paper.yaml"
    path.write_text(yaml.safe_dump(config))
    result = snakemake(tmp_path, "-n", f"--configfile={path}", "results/ras.parquet", check=False)
    assert result.returncode != 0
    assert (
        "config key 'figures.training_sets.math': prompt set 'multiarith' is not defined"
        in result.stdout + result.stderr
    )
