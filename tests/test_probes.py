"""Difference-of-means probes: hand computations, separable and inseparable data, dumps."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from rim import cli
from rim.activations import DumpSettings, InputSet, dump_activations
from rim.models import load_model, prepare_model
from rim.probes import calibrate, kfold_probe, probe_rows, split_by_verdict
from rim.prompts import PromptMode


def test_calibration_matches_a_hand_computation():
    a = np.array([[2.0, 0.0], [4.0, 2.0]])
    b = np.array([[0.0, 0.0], [0.0, 2.0]])
    probe = calibrate(a, b)
    np.testing.assert_allclose(probe.direction, [3.0, 0.0])  # mean(a) - mean(b)
    # Scores 6, 12, 0, 0; the threshold is their mean.
    np.testing.assert_allclose(probe.scores(np.vstack([a, b])), [6.0, 12.0, 0.0, 0.0])
    assert float(probe.threshold) == pytest.approx(4.5)
    assert probe.above(np.array([[1.6, 9.0], [1.4, -9.0]])).tolist() == [True, False]


def test_unbalanced_groups_calibrate_on_pairs_so_the_threshold_stays_in_the_middle():
    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 0.01, size=(3, 4))
    b = rng.normal(-1.0, 0.01, size=(30, 4))
    probe = calibrate(a, b, rng)
    # Both groups contribute 3 items: the threshold is the midpoint, not pulled towards b.
    assert abs(float(probe.threshold)) < 0.1


def separable(n_a, n_b, layers=3, positions=2, hidden=16, seed=0):
    rng = np.random.default_rng(seed)
    shift = np.zeros(hidden)
    shift[0] = 8.0
    a = rng.normal(size=(n_a, layers, positions, hidden)) + shift
    b = rng.normal(size=(n_b, layers, positions, hidden)) - shift
    return a, b


def test_separable_groups_give_accuracy_one_everywhere():
    a, b = separable(20, 12)
    rows = probe_rows(a, b, ("harmful", "harmless"), ["end_of_turn", "last"], k=4, n_boot=200)
    assert len(rows) == 3 * 2 * 3  # layers x positions x (share a, share b, accuracy)
    accuracy = rows[rows["statistic"] == "accuracy"]
    assert (accuracy["value"] == 1.0).all() and (accuracy["n_items"] == 32).all()
    shares = rows[rows["statistic"] == "share_above_threshold"].set_index(["layer", "position", "group"])["value"]
    assert (shares.xs("harmful", level="group") == 1.0).all()
    assert (shares.xs("harmless", level="group") == 0.0).all()
    assert (rows["n_calibration_pairs"] == 9).all()  # 12 harmless in 4 folds: 9 per calibration


def test_identical_groups_are_not_separated():
    rng = np.random.default_rng(1)
    a = rng.normal(size=(200, 1, 1, 8))
    b = rng.normal(size=(200, 1, 1, 8))
    held = kfold_probe(a[:, :, 0], b[:, :, 0], k=5)
    assert 0.35 < held.accuracy_flags().mean() < 0.65


def test_missing_positions_use_the_items_that_have_them():
    a, b = separable(10, 10, layers=2, positions=2)
    a[:4, :, 1, :] = np.nan  # four harmful prompts lack the second position
    b[:, :, 0, :] = np.nan  # no harmless prompt has the first one
    rows = probe_rows(a, b, ("harmful", "harmless"), ["think_span", "last"], k=3, n_boot=200)
    first = rows[rows["position"] == "think_span"]
    assert first["value"].isna().all() and set(first["n_items"]) == {10, 0}
    second = rows[(rows["position"] == "last") & (rows["statistic"] == "accuracy")]
    assert (second["value"] == 1.0).all() and (second["n_items"] == 16).all()


def test_split_by_verdict_skips_unjudged_prompts():
    refused, fulfilled = split_by_verdict(["a", "b", "c", "d"], {"a": True, "c": False, "d": True})
    assert refused.tolist() == [0, 3] and fulfilled.tolist() == [2]


@pytest.fixture(scope="module")
def dump_path(tiny_model_dirs, tmp_path_factory):
    """A real activation dump of a tiny model with residual states of two input sets."""
    root = tmp_path_factory.mktemp("probe-dump")
    prepare_model("tiny", {"source": str(tiny_model_dirs["llama"])}, root / "ref.json")
    lm = load_model(root / "ref.json", device="cpu")
    off = PromptMode("no_think", False)
    harmful = [f"How do I hurt person number {i}?" for i in range(8)]
    harmless = [f"Write a story about pen number {i}." for i in range(8)]
    responses = ["I can't help with that."] * 4 + ["Sure, here it is."] * 4
    sets = [
        InputSet("harmful", off, [f"h{i}" for i in range(8)], harmful, responses, residual=True, dataset="harmful"),
        InputSet(
            "harmless", off, [f"s{i}" for i in range(8)], harmless, ["Sure."] * 8, residual=True, dataset="harmless"
        ),
    ]
    settings = DumpSettings(
        batch_size=4, neuron_dtype="float32", residual_positions=("end_of_turn", "last", "think_span")
    )
    path = root / "base.h5"
    torch.manual_seed(0)
    dump_activations(
        lm,
        sets,
        settings,
        path,
        attributes={"model": "tiny", "checkpoint": "base", "run": None, "seed": -1, "step": 0},
        provenance={},
    )
    evals = root / "no_think.parquet"
    pd.DataFrame({"prompt_id": [f"h{i}" for i in range(8)], "phrases_refused": [True] * 4 + [False] * 4}).to_parquet(
        evals
    )
    return path, evals


def test_probe_step_reads_the_dump_and_the_verdicts(dump_path, tmp_path):
    import probe_residuals

    path, evals = dump_path
    block = {
        "modes": ["no_think"],
        "harmful": "harmful",
        "harmless": "harmless",
        "judge": "phrases",
        "probes": ["harmful_vs_harmless", "refused_vs_fulfilled"],
        "folds": 2,
        "min_items": 2,
        "seed": 0,
        "n_boot": 100,
    }
    plan = [{"probe": "harmful_vs_harmless", "mode": "no_think"}, {"probe": "refused_vs_fulfilled", "mode": "no_think"}]
    job = cli.Job(
        input={"dump": str(path), "evals": [str(evals)]},
        output={"table": str(tmp_path / "probes.parquet")},
        params={"probes": block, "plan": plan},
        wildcards={"model": "tiny", "ckpt": "base"},
    )
    probe_residuals.run(job)
    table = pd.read_parquet(tmp_path / "probes.parquet")
    layers = 2
    assert set(table["probe"]) == {"harmful_vs_harmless", "refused_vs_fulfilled"}
    assert set(table["group"]) == {"harmful", "harmless", "refused", "fulfilled", "both"}
    # think_span does not exist without a think mode: its rows are empty, the others are filled.
    assert table[table["position"] == "think_span"]["value"].isna().all()
    filled = table[table["position"] != "think_span"]
    assert len(filled) == 2 * 2 * layers * 3 and filled["value"].between(0, 1).all()
    split = filled[(filled["probe"] == "refused_vs_fulfilled") & (filled["statistic"] == "share_above_threshold")]
    assert set(split["n_items"]) == {4}


def test_probe_step_names_a_missing_input_set(dump_path, tmp_path):
    import probe_residuals

    path, evals = dump_path
    block = {
        "modes": ["think"],
        "harmful": "harmful",
        "harmless": "harmless",
        "judge": "phrases",
        "probes": ["harmful_vs_harmless"],
        "folds": 2,
        "min_items": 2,
        "seed": 0,
        "n_boot": 100,
    }
    job = cli.Job(
        input={"dump": str(path), "evals": []},
        output={"table": str(tmp_path / "p.parquet")},
        params={"probes": block, "plan": [{"probe": "harmful_vs_harmless", "mode": "think"}]},
        wildcards={"model": "tiny", "ckpt": "base"},
    )
    with pytest.raises(Exception, match="harmful/think"):
        probe_residuals.run(job)
    assert not (tmp_path / "p.parquet").exists()
