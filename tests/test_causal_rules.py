"""The two causal tests through the real Snakefile on a tiny model: zeroing refusal heads
(ablate_refusal_heads) and zeroing safety neurons with its dose-response (zero_neurons).

The tiny Llama-style model has a previous-token head planted at PLANTED_HEAD, which makes the
refusal-head move on every prompt by construction (see tests/test_figures.py), so the head
ablation always has a head to zero; a random model may have none, and a test that accepted "no
head" would pass when nothing is ablated.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import yaml

from workflow_helpers import planned_jobs, snakemake, tiny_config, write_config

PLANTED_HEAD = (1, 2)
HEADS = "results/heads/tiny/base/head_ablation_summary.parquet"
NEURONS = "results/neurons/tiny/zeroing_summary.parquet"


@pytest.fixture(scope="module")
def causal_workdir(tmp_path_factory):
    from rim.testing import make_tiny_model

    model_dir = make_tiny_model("llama", tmp_path_factory.mktemp("planted") / "llama", offset_head=PLANTED_HEAD)
    workdir = tmp_path_factory.mktemp("causal")
    write_config(workdir, tiny_config(model_dir))
    snakemake(workdir, HEADS, NEURONS)
    return workdir


def test_head_ablation_zeroes_the_planted_head_and_random_heads_in_its_layers(causal_workdir):
    frame = pd.read_parquet(causal_workdir / "results/heads/tiny/base/head_ablation.parquet")
    ablated = frame.groupby("condition")["ablated_heads"].first()
    layer, head = PLANTED_HEAD
    assert f"L{layer}-H{head}" in ablated["refusal_heads"].split(", ")
    for draw in ("random_0", "random_1"):
        heads = ablated[draw].split(", ")
        assert heads and not set(heads) & set(ablated["refusal_heads"].split(", "))
    summary = pd.read_parquet(causal_workdir / HEADS)
    rated = set(summary.loc[summary["statistic"] == "rate", "condition"])
    assert rated == {"none", "refusal_heads", "random_0", "random_1"}
    assert {"refusal_heads", "random_heads", "refusal_minus_random"} <= set(summary["condition"])
    # Zeroing a head moves the refusal score of at least one prompt.
    scores = frame.pivot(index="prompt_id", columns="condition", values="refusal_score")
    assert not np.allclose(scores["refusal_heads"], scores["none"])


def test_neuron_zeroing_runs_the_dose_response_on_the_ranked_neurons(causal_workdir):
    scores = pd.read_parquet(causal_workdir / "results/neurons/tiny/neuron_scores.parquet")
    sets = pd.read_parquet(causal_workdir / "results/neurons/tiny/neuron_sets.parquet")
    safety = set(zip(*[sets.loc[sets["neuron_set"] == "safety", c] for c in ("layer", "neuron")]))
    # Every neuron is scored once; the top |A_safe| of the ranking is A_safe.
    assert len(scores) == 2 * 128 and sorted(scores["rank"]) == list(range(len(scores)))
    top = scores.nsmallest(len(safety), "rank")
    assert set(zip(top["layer"], top["neuron"])) == safety
    assert scores.loc[scores["in_safety_set"], "rank"].max() == len(safety) - 1

    frame = pd.read_parquet(causal_workdir / "results/neurons/tiny/zeroing.parquet")
    sizes = frame.groupby("condition")[["neuron_family", "zeroed_neurons"]].first()
    assert sizes.loc["top_8"].tolist() == ["safety_top", 8] and sizes.loc["top_32"].tolist() == ["safety_top", 32]
    assert sizes.loc["random_32_0"].tolist() == ["random", 32]
    assert sizes.loc["safety"].tolist() == ["safety_set", len(safety)]

    summary = pd.read_parquet(causal_workdir / NEURONS)
    doses = summary[summary["statistic"] == "dose_change"]
    misaligned = doses[doses["metric"] == "misalignment_rate"]
    assert {(f, int(k)) for f, k in zip(misaligned["neuron_family"], misaligned["zeroed_neurons"])} == {
        ("safety_top", 8),
        ("safety_top", 32),
        ("random", 8),
        ("random", 32),
        ("safety_set", len(safety)),
        ("random", len(safety)),
    }
    assert (misaligned["ci_low"] <= misaligned["value"]).all() and (misaligned["value"] <= misaligned["ci_high"]).all()
    assert set(doses["prompt_set"]) == {"harmful", "gsm8k_heldout"}


def test_a_new_dose_reruns_only_the_zeroing(causal_workdir):
    path = causal_workdir / "config/config.yaml"
    written = path.read_text()
    config = yaml.safe_load(written)
    config["neurons"]["zeroing"]["sizes"] = [8, 16, 32]
    write_config(causal_workdir, config)
    try:
        assert planned_jobs(snakemake(causal_workdir, "-n", HEADS, NEURONS)) == {"zero_neurons": 1}
    finally:
        path.write_text(written)
    assert planned_jobs(snakemake(causal_workdir, "-n", HEADS, NEURONS)) == {}
