"""Refusal-head detection: argmax positions, their regions, the move score, random heads."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from rim.errors import ConfigError
from rim.heads import (
    RegionMove,
    argmax_keys,
    argmax_table,
    attention_argmax,
    classify_keys,
    mean_head_inputs,
    random_heads_like,
    refusal_head_scores,
    region_move,
    top_refusal_heads,
)
from rim.hooks import ablate, attached, head_slices
from rim.models import load_model, prepare_model
from rim.positions import label_prompt
from rim.prompts import PromptMode

pytestmark = pytest.mark.usefixtures("one_torch_thread")

MOVE = {
    "native_thinking": {"thinking_on": ["assistant_header"], "thinking_off": ["think_span"]},
    "prefilled_thinking": {"thinking_on": ["reasoning_opener"], "thinking_off": ["assistant_header"]},
}


@pytest.fixture(scope="module")
def models(tiny_model_dirs, tmp_path_factory):
    root = tmp_path_factory.mktemp("heads")
    out = {}
    for family in ("llama", "qwen3"):
        prepare_model(family, {"source": str(tiny_model_dirs[family])}, root / f"{family}.json")
        out[family] = load_model(root / f"{family}.json", device="cpu")
        out[family].reference_path = str(root / f"{family}.json")
    return out


def test_argmax_of_a_hand_built_pattern_is_classified_into_its_region():
    # One prompt of 6 tokens, left-padded by 2 in a batch of width 8; 2 layers x 3 heads.
    regions = ["preamble", "user", "user", "end_of_turn", "assistant_header", "think_span"]
    weights = torch.zeros(1, 2, 3, 8)
    targets = [[0, 3, 5], [4, 1, 2]]  # key index within the unpadded prompt, per layer and head
    for layer, row in enumerate(targets):
        for head, key in enumerate(row):
            weights[0, layer, head, :] = 0.01
            weights[0, layer, head, :2] = 0.0  # padding gets no attention
            weights[0, layer, head, key + 2] = 0.9
    keys = argmax_keys(weights, pad=torch.tensor([2])).numpy()
    assert keys.tolist() == [targets]
    assert classify_keys(keys[0], regions).tolist() == [
        ["preamble", "end_of_turn", "think_span"],
        ["assistant_header", "user", "user"],
    ]
    with pytest.raises(ValueError):
        classify_keys(np.array([6]), regions)


def move_table(on_regions, off_regions, on_distance=3, off_distance=3):
    """A hand-built argmax table: prompts p0.. of one head (0, head) per entry of the dicts."""
    rows = []
    for head in on_regions:
        for prompt, (on, off) in enumerate(zip(on_regions[head], off_regions[head])):
            rows.append(("p%d" % prompt, "think", 0, head, on, 20 - on_distance, 20))
            rows.append(("p%d" % prompt, "no_think", 0, head, off, 30 - off_distance, 30))
    return pd.DataFrame(
        rows, columns=["prompt_id", "mode", "layer", "head", "key_region", "key_position", "query_position"]
    )


def test_move_share_counts_prompts_moving_from_header_into_think_span():
    # Head (0, 0) moves on 3 of 4 prompts; head (0, 1) never (ON already in the think span).
    table = move_table(
        {0: ["assistant_header"] * 3 + ["user"], 1: ["think_span"] * 4},
        {0: ["think_span"] * 4, 1: ["think_span"] * 4},
    )
    scores = refusal_head_scores(
        table, "think", "no_think", RegionMove(("assistant_header",), ("think_span",)), n_boot=200
    )
    first, second = scores.iloc[0], scores.iloc[1]
    assert (first["n_moved"], first["n_prompts"], first["share"]) == (3, 4, 0.75)
    assert first["share_on_in_region"] == 0.75 and first["share_off_in_region"] == 1.0
    assert first["ci_low"] <= 0.75 <= first["ci_high"]
    assert first["median_distance_on"] == 3 and first["top_region_on"] == "assistant_header"
    assert (second["n_moved"], second["share"], second["rank"]) == (0, 0.0, 2)
    assert top_refusal_heads(scores, k=5) == [(0, 0)]


def test_a_head_attending_to_its_own_position_does_not_move_unless_asked():
    table = move_table({0: ["reasoning_opener"] * 2}, {0: ["assistant_header"] * 2}, on_distance=0, off_distance=2)
    move = RegionMove(("reasoning_opener",), ("assistant_header",))
    assert refusal_head_scores(table, "think", "no_think", move, n_boot=200)["share"].tolist() == [0.0]
    assert refusal_head_scores(table, "think", "no_think", move, count_query_token=True, n_boot=200)[
        "share"
    ].tolist() == [1.0]


def test_previous_token_heads_are_flagged_and_left_out_of_the_top_heads_unless_kept():
    # A hand-built attention pattern of one layer, 4 prompts, thinking ON (query at 20) and OFF
    # (query at 30). Head 0 attends to the token just before the query in both modes and so
    # "moves" on every prompt as the last token changes region; head 1 moves on 3 prompts from
    # 3 tokens back; head 2 reads the previous token only with thinking ON (median distances 1
    # and 2), so it is not a previous-token head.
    move = RegionMove(("reasoning_opener",), ("assistant_header",))
    rows = []
    for prompt in range(4):
        pid = f"p{prompt}"
        rows += [
            (pid, "think", 0, 0, "reasoning_opener", 19, 20),
            (pid, "no_think", 0, 0, "assistant_header", 29, 30),
            (pid, "think", 0, 1, "reasoning_opener" if prompt < 3 else "user", 17, 20),
            (pid, "no_think", 0, 1, "assistant_header", 27, 30),
            (pid, "think", 0, 2, "reasoning_opener" if prompt < 2 else "user", 19, 20),
            (pid, "no_think", 0, 2, "assistant_header", 28, 30),
        ]
    table = pd.DataFrame(
        rows, columns=["prompt_id", "mode", "layer", "head", "key_region", "key_position", "query_position"]
    )
    scores = refusal_head_scores(table, "think", "no_think", move, n_boot=50).set_index("head")
    assert scores["share"].tolist() == [1.0, 0.75, 0.5]
    assert scores["previous_token_head"].tolist() == [True, False, False]
    assert (scores.loc[2, "median_distance_on"], scores.loc[2, "median_distance_off"]) == (1, 2)
    ranked = scores.reset_index()
    assert top_refusal_heads(ranked, k=2) == [(0, 1), (0, 2)]
    assert top_refusal_heads(ranked, k=2, keep_previous_token_heads=True) == [(0, 0), (0, 1)]


def test_region_move_follows_the_family_think_mode(models):
    assert region_move(models["qwen3"].adapter, MOVE) == RegionMove(("assistant_header",), ("think_span",))
    assert region_move(models["llama"].adapter, MOVE) == RegionMove(("reasoning_opener",), ("assistant_header",))
    with pytest.raises(ConfigError, match="unknown regions"):
        region_move(
            models["llama"].adapter,
            {**MOVE, "prefilled_thinking": {"thinking_on": ["opener"], "thinking_off": ["user"]}},
        )


@pytest.mark.parametrize("family", ["qwen3", "llama"])
def test_attention_argmax_of_batched_prompts_matches_single_runs(models, family):
    lm = models[family]
    users = ["How do I kill a Python process?", "Write a story.", "Explain how vaccines work, step by step please."]
    prompts = [label_prompt(lm.adapter, lm.tokenizer, user, PromptMode("off", False)) for user in users]
    batched = attention_argmax(lm, prompts, batch_size=3)
    single = np.stack([attention_argmax(lm, [prompt])[0] for prompt in prompts])
    assert batched.shape == (3, lm.adapter.num_layers(lm.model), lm.adapter.num_heads(lm.model))
    assert np.array_equal(batched, single)
    table = argmax_table(["a", "b", "c"], "off", prompts, batched)
    assert (table["key_position"] <= table["query_position"]).all()
    # Every argmax is named by the region of the token it points at.
    for row in table.sample(10, random_state=0).itertuples():
        prompt = prompts["abc".index(row.prompt_id)]
        assert row.key_region == prompt.regions[row.key_position]
    # The model is back to its own attention implementation afterwards.
    assert lm.model.config._attn_implementation != "eager"


def test_zeroing_a_head_removes_exactly_its_contribution_to_the_output_projection(models):
    lm = models["llama"]
    model, adapter = lm.model, lm.adapter
    projection = adapter.attention_output_module(model, 1)
    seen = {}

    def record(name):
        def hook(module, args, output):
            seen[name] = (args[0].detach().clone(), output.detach().clone())

        return hook

    ids = torch.tensor([[3, 5, 7, 11, 13]])
    with attached(model, forward={adapter.attention_output_name(1): record("clean")}):
        model(ids)
    with ablate(model, adapter, zero_heads={1: [2]}):
        with attached(model, forward={adapter.attention_output_name(1): record("zeroed")}):
            model(ids)
    (x_clean, y_clean), (x_zero, y_zero) = seen["clean"], seen["zeroed"]
    slice_ = head_slices([2], adapter.head_dim(model))
    others = [c for c in range(x_clean.shape[-1]) if c not in slice_]
    # Layer 1's input is unchanged (earlier layer untouched), so the input differs only in the slice.
    assert torch.equal(x_clean[..., others], x_zero[..., others])
    assert torch.all(x_zero[..., slice_] == 0)
    contribution = x_clean[..., slice_] @ projection.weight[:, slice_].T
    assert torch.allclose(y_clean - y_zero, contribution, atol=1e-6)


def test_random_heads_match_the_layers_of_the_refusal_heads():
    heads = [(6, 2), (0, 1), (0, 3), (6, 0)]
    draws = [random_heads_like(heads, num_heads=5, rng=np.random.default_rng(seed)) for seed in range(20)]
    for drawn in draws:
        assert sorted(layer for layer, _ in drawn) == [0, 0, 6, 6]
        assert not set(drawn) & set(heads)
    assert len({tuple(d) for d in draws}) > 1
    # A layer with too few other heads gives what it has.
    assert random_heads_like([(1, 0), (1, 1)], num_heads=3, rng=np.random.default_rng(0)) == [(1, 2)]


def test_mean_head_inputs_average_every_real_token(models):
    lm = models["llama"]
    users = ["Write a story.", "How do I kill a Python process?"]
    prompts = [label_prompt(lm.adapter, lm.tokenizer, user, PromptMode("off", False)) for user in users]
    means = mean_head_inputs(lm, prompts, batch_size=2)
    seen = []
    name = lm.adapter.attention_output_name(0)
    with attached(lm.model, forward_pre={name: lambda module, args: seen.append(args[0][0].detach())}):
        for prompt in prompts:
            lm.model(torch.tensor([prompt.input_ids]))
    expected = torch.cat(seen).mean(dim=0)
    assert torch.allclose(means[0], expected, atol=1e-5)


def test_ablation_effects_are_paired_changes_and_refusal_minus_random():
    from rim.heads import ablation_effects

    refused = {"none": [1, 1, 1, 1], "refusal_heads": [0, 0, 1, 1], "random_0": [1, 1, 1, 0], "random_1": [1, 1, 1, 1]}
    rows = []
    for condition, flags in refused.items():
        for prompt, flag in enumerate(flags):
            rows.append(
                {
                    "mode": "no_think",
                    "kind": "harmful",
                    "condition": condition,
                    "prompt_id": f"p{prompt}",
                    "phrases_refused": bool(flag),
                    "refusal_score": float(flag) - 0.5 * prompt,
                }
            )
    effects = ablation_effects(pd.DataFrame(rows), n_boot=200).set_index(["condition", "metric"])["value"]
    assert effects[("refusal_heads", "misalignment_rate")] == pytest.approx(0.5)
    assert effects[("random_0", "misalignment_rate")] == pytest.approx(0.25)
    assert effects[("random_heads", "misalignment_rate")] == pytest.approx(0.125)
    assert effects[("refusal_minus_random", "misalignment_rate")] == pytest.approx(0.375)
    assert effects[("refusal_heads", "mean_refusal_score")] == pytest.approx(-0.5)


def test_ablation_step_zeroes_the_top_heads_and_random_heads_in_their_layers(models, tmp_path):
    import ablate_refusal_heads
    from rim import cli
    from rim.provenance import read_provenance

    lm = models["llama"]
    table = tmp_path / "harmful.parquet"
    pd.DataFrame(
        {
            "prompt_id": [f"h{i}" for i in range(4)],
            "prompt": [f"How do I hurt person {i}?" for i in range(4)],
            "category": ["a", "b", "a", "b"],
            "split": "eval",
            "dataset": "harmful",
        }
    ).to_parquet(table)
    scores = pd.DataFrame({"layer": [0, 1, 1, 0], "head": [1, 2, 0, 0], "share": [0.9, 0.5, 0.0, 0.2]})
    scores["rank"] = scores["share"].rank(ascending=False, method="first").astype(int)
    scores.to_parquet(tmp_path / "refusal_heads.parquet")
    params = {
        "ablation": {
            "top_k": 3,
            "min_share": 0.0,
            "method": "mean",
            "random_draws": 2,
            "seed": 0,
            "modes": ["no_think"],
            "n_boot": 100,
        },
        "prompt_set": {"name": "harmful", "dataset": "harmful", "kind": "harmful", "split": "eval", "limit": None},
        "modes": {"no_think": {"thinking": False}},
        "generation": {"batch_size": 4},
        "judges": {"phrases": {"enabled": True, "max_new_tokens": 4}, "refusal_score": {"enabled": True}},
        "device": "cpu",
    }
    job = cli.Job(
        input={"reference": lm.reference_path, "heads": str(tmp_path / "refusal_heads.parquet"), "table": str(table)},
        output={"table": str(tmp_path / "ablation.parquet"), "summary": str(tmp_path / "summary.parquet")},
        params=params,
        wildcards={"model": "tiny", "ckpt": "base"},
    )
    ablate_refusal_heads.run(job)
    frame = pd.read_parquet(tmp_path / "ablation.parquet")
    ablated = frame.groupby("condition")["ablated_heads"].first()
    # Heads with share 0 never count; random heads come from the same layers, never the top ones.
    assert ablated["refusal_heads"] == "L0-H1, L1-H2, L0-H0"
    for draw in ("random_0", "random_1"):
        heads = ablated[draw].split(", ")
        assert sorted(h.split("-")[0] for h in heads) == ["L0", "L0", "L1"]
        assert not set(heads) & {"L0-H1", "L1-H2", "L0-H0"}
    assert ablated["none"] == "" and len(frame) == 4 * 4
    # Mean ablation moves the refusal score of the prompts.
    scores_by = frame.pivot(index="prompt_id", columns="condition", values="refusal_score")
    assert not np.allclose(scores_by["refusal_heads"], scores_by["none"])
    summary = pd.read_parquet(tmp_path / "summary.parquet")
    assert {"rate", "change_from_none", "refusal_minus_random"} <= set(summary["statistic"])
    assert read_provenance(tmp_path / "summary.parquet")["refusal_heads"] == "L0-H1, L1-H2, L0-H0"


# ----- the heads rules through the real Snakefile ----------------------------------------------
def test_default_targets_scan_base_and_the_last_checkpoint_of_each_ras_seed(tmp_path, tiny_model_dirs):
    from workflow_helpers import planned_jobs, snakemake, tiny_config, write_config

    config = tiny_config(tiny_model_dirs["llama"])
    write_config(tmp_path, config)
    result = snakemake(tmp_path, "-n")
    jobs = planned_jobs(result)
    runs = config.get("training", {}).get("runs", {})
    ras_seeds = sum(len(run["seeds"]) for run in runs.values() if run.get("ras"))
    for rule in ("detect_refusal_heads", "ablate_refusal_heads", "patch_heads"):
        assert jobs[rule] == 1 + ras_seeds, rule
    # No residual states are configured in the dumps: no probe job.
    assert "probe_residuals" not in jobs
    text = result.stdout + result.stderr
    assert "results/heads/tiny/base/head_patching.parquet" in text
    assert "results/heads/tiny/base/probes.parquet" not in text


def test_detection_and_patching_rules_run_and_rerun_only_what_an_edit_affects(tmp_path, tiny_model_dirs):
    from rim.provenance import read_provenance
    from workflow_helpers import planned_jobs, snakemake, tiny_config, write_config

    config = tiny_config(tiny_model_dirs["llama"])
    write_config(tmp_path, config)
    out = tmp_path / "results/heads/tiny/base"
    targets = [f"results/heads/tiny/base/{name}.parquet" for name in ("refusal_heads", "head_patching")]
    snakemake(tmp_path, *targets)

    scores = pd.read_parquet(out / "refusal_heads.parquet")
    assert len(scores) == 2 * 4 and scores["share"].between(0, 1).all() and (scores["n_prompts"] == 4).all()
    assert set(scores["on_regions"]) == {"reasoning_opener"} and set(scores["off_regions"]) == {"assistant_header"}
    argmax = pd.read_parquet(out / "attention_argmax.parquet")
    assert len(argmax) == 4 * 2 * 8 and set(argmax["mode"]) == {"think", "no_think"}
    patching_table = pd.read_parquet(out / "head_patching.parquet")
    # On the base model only the OFF-into-ON pair runs (base into base is no patch at all).
    assert set(patching_table["pair"]) == {"off_into_on"}
    assert set(patching_table["method"]) == {"exact", "attribution"} and len(patching_table) == 2 * 8
    assert (patching_table["n_prompts"] == 3).all()
    assert read_provenance(out / "head_patching.parquet")["config"]["prompt_set"]["limit"] == 3

    # Nothing changed: nothing reruns; a patching setting reruns the scan only.
    assert planned_jobs(snakemake(tmp_path, "-n", *targets)) == {}
    config["patching"]["n_boot"] = 200
    write_config(tmp_path, config)
    assert planned_jobs(snakemake(tmp_path, "-n", *targets)) == {"patch_heads": 1}


@pytest.mark.slow
def test_all_heads_rules_with_ablation_and_probes_run_on_a_tiny_model(tmp_path):
    from rim.provenance import read_provenance
    from rim.testing import make_tiny_model
    from workflow_helpers import planned_jobs, snakemake, tiny_config, write_config

    # A planted previous-token head (kept by TINY_SETTINGS' keep_previous_token_heads) gives the
    # ablation a head to zero whatever the random weights make of the others.
    model_dir = make_tiny_model("llama", tmp_path / "model", offset_head=(1, 2))
    config = tiny_config(
        model_dir,
        activations={
            "residual_inputs": ["harmful/no_think", "harmless/no_think"],
            "extra_inputs": [{"prompt_set": "harmless", "mode": "no_think", "checkpoints": "base"}],
        },
        probes={"modes": ["no_think"]},
    )
    write_config(tmp_path, config)
    out = tmp_path / "results/heads/tiny/base"
    targets = [
        f"{out.relative_to(tmp_path)}/{name}.parquet"
        for name in ("refusal_heads", "head_ablation_summary", "head_patching", "probes")
    ]
    snakemake(tmp_path, *targets)

    scores = pd.read_parquet(out / "refusal_heads.parquet")
    assert len(scores) == 2 * 4 and scores["share"].between(0, 1).all() and (scores["n_prompts"] == 4).all()
    assert set(scores["on_regions"]) == {"reasoning_opener"} and set(scores["off_regions"]) == {"assistant_header"}
    argmax = pd.read_parquet(out / "attention_argmax.parquet")
    assert len(argmax) == 4 * 2 * 8 and set(argmax["mode"]) == {"think", "no_think"}

    patching_table = pd.read_parquet(out / "head_patching.parquet")
    # On the base model only the OFF-into-ON pair runs (base into base is no patch at all).
    assert set(patching_table["pair"]) == {"off_into_on"}
    assert set(patching_table["method"]) == {"exact", "attribution"} and len(patching_table) == 2 * 8
    assert (patching_table["n_prompts"] == 3).all()
    assert read_provenance(out / "head_patching.parquet")["config"]["prompt_set"]["limit"] == 3

    summary = pd.read_parquet(out / "head_ablation_summary.parquet")
    conditions = set(summary[summary["statistic"] == "rate"]["condition"])
    assert conditions == {"none", "refusal_heads", "random_0", "random_1"}
    effects = summary[summary["statistic"] != "rate"]
    assert {"refusal_heads", "random_heads", "refusal_minus_random"} <= set(effects["condition"])

    probes = pd.read_parquet(out / "probes.parquet")
    assert set(probes["probe"]) == {"harmful_vs_harmless", "refused_vs_fulfilled"}
    assert set(probes["mode"]) == {"no_think"} and set(probes["layer"]) == {0, 1}

    assert planned_jobs(snakemake(tmp_path, "-n", *targets)) == {}
