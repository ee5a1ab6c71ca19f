"""The whole chain on a tiny random model of each family besides llama (whose pipeline the other
workflow tests build): LoRA fine-tuning on the family's targets, evaluation, activation dumps, safety neurons,
RAS, the zeroing dose-response, refusal-head scores and both head-patching scans, through the
Snakefile. (Head ablation needs a planted head, which only llama-style attention takes:
tests/test_causal_rules.py.)"""

from __future__ import annotations

import pandas as pd
import pytest

from rim.testing import MOE_FAMILIES, make_tiny_model
from workflow_helpers import planned_jobs, snakemake, tiny_config, write_config

TARGETS = [
    "results/ras.parquet",
    "results/neurons/tiny/zeroing_summary.parquet",
    "results/heads/tiny/base/refusal_heads.parquet",
    # The last checkpoint: its base-into-checkpoint pair patches every position of the same
    # prompt, so it runs whatever a random model writes (thinking-ON pairs need an answer).
    "results/heads/tiny/gsm8k_style/seed0/step4/head_patching.parquet",
]


@pytest.mark.parametrize("family", ["qwen3", "gemma2", "phi3", "olmo2", "mistral", *MOE_FAMILIES])
def test_every_stage_runs_on_a_tiny_model_of_the_family(tmp_path, family):
    model_dir = make_tiny_model(family, tmp_path / "model")
    config = tiny_config(model_dir, family="auto", training={"runs": {"gsm8k_style": {"seeds": [0]}}})
    write_config(tmp_path, config)
    snakemake(tmp_path, *TARGETS)

    manifest = pd.read_json(tmp_path / "results/finetune/tiny/gsm8k_style/seed0/run.json", typ="series")
    assert {"2", "4"} <= set(manifest["checkpoints"])
    adapter_config = pd.read_json(
        tmp_path / "results/finetune/tiny/gsm8k_style/seed0/checkpoints/step4/adapter_config.json", typ="series"
    )
    targets = {"phi3": {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}}.get(
        family, {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    )
    if family in MOE_FAMILIES:
        # Attention projections as modules, the fused expert weights as parameters.
        targets = {"q_proj", "k_proj", "v_proj", "o_proj"}
        assert set(adapter_config["target_parameters"]) == {"mlp.experts.gate_up_proj", "mlp.experts.down_proj"}
    assert set(adapter_config["target_modules"]) == targets

    ras = pd.read_parquet(tmp_path / "results/ras.parquet")
    assert set(ras["checkpoint"]) == {"base", "gsm8k_style/seed0/step2", "gsm8k_style/seed0/step4"}
    assert {"ras_harmonic", "delta_safe", "delta_math", "kl"} <= set(ras["metric"])
    assert set(ras["neuron_set"]) >= {"safety", "random", "all"}
    # RAS is 0 at the base model by construction and defined at the fine-tuned checkpoints.
    later = ras[(ras["checkpoint"] != "base") & (ras["metric"] == "ras_harmonic") & (ras["neuron_set"] == "all")]
    assert len(later) and later["value"].notna().all()
    scores = pd.read_parquet(tmp_path / "results/neurons/tiny/neuron_scores.parquet")
    if family in MOE_FAMILIES:
        # 4 experts of 32 channels per layer, addressed (layer, expert, channel).
        assert len(scores) == 2 * 128 and set(scores["expert"]) == {0, 1, 2, 3}
        assert (scores["neuron"] == scores["expert"] * 32 + scores["channel"]).all()
    zeroing = pd.read_parquet(tmp_path / "results/neurons/tiny/zeroing_summary.parquet")
    assert {"none", "safety_top_8", "safety_top_32", "random_8", "random_32"} <= set(zeroing["condition"])
    heads = pd.read_parquet(tmp_path / "results/heads/tiny/base/refusal_heads.parquet")
    assert len(heads) == 2 * 4  # layers x heads
    patching = pd.read_parquet(tmp_path / TARGETS[-1])
    into_checkpoint = patching[patching["pair"] == "base_into_checkpoint"]
    assert set(into_checkpoint["method"]) == {"exact", "attribution"} and len(into_checkpoint) == 2 * 2 * 4

    assert planned_jobs(snakemake(tmp_path, "-n", *TARGETS)) == {}
