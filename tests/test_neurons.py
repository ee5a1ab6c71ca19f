"""Safety-neuron selection (top-m per pair, intersection, frequency) and random control sets."""

from __future__ import annotations

import numpy as np
import pytest

from rim.errors import ConfigError, DataError, RimError
from rim.neurons import (
    flat_index,
    layer_neuron,
    pair_shifts,
    random_neuron_sets,
    safety_neurons,
    selection_frequency,
    top_m,
)

# Three pairs, six neurons. Top 3 per pair: {0,1,2}, {1,2,3}, {0,2,4}.
SHIFTS = np.array(
    [
        [5.0, 4.0, 3.0, 2.0, 1.0, 0.0],
        [0.0, 5.0, 4.0, 3.0, 2.0, 1.0],
        [4.0, 0.0, 5.0, 1.0, 3.0, 2.0],
    ]
)


def test_top_m_per_pair():
    selected = top_m(SHIFTS, 3)
    assert [set(np.flatnonzero(row)) for row in selected] == [{0, 1, 2}, {1, 2, 3}, {0, 2, 4}]
    np.testing.assert_allclose(selection_frequency(SHIFTS, 3), [2 / 3, 2 / 3, 1, 1 / 3, 1 / 3, 0])


def test_top_m_breaks_ties_by_lower_index():
    assert list(np.flatnonzero(top_m(np.array([[1.0, 1.0, 1.0, 0.0]]), 2)[0])) == [0, 1]


def test_intersection_over_pairs():
    chosen, frequency = safety_neurons(SHIFTS, 3, "intersection")
    assert list(chosen) == [2]
    assert frequency[2] == 1.0


@pytest.mark.parametrize(
    "q, expected", [(0.6, [0, 1, 2]), (2 / 3, [0, 1, 2]), (0.34, [0, 1, 2]), (1 / 3, [0, 1, 2, 3, 4]), (1.0, [2])]
)
def test_frequency_selection(q, expected):
    chosen, _ = safety_neurons(SHIFTS, 3, "frequency", q)
    assert list(chosen) == expected


def test_empty_set_is_a_clear_error_suggesting_m_or_q():
    # With m = 1 each pair picks a different neuron: no neuron is in all three.
    with pytest.raises(RimError, match=r"empty.*top_m.*min_fraction' <= 0\.33"):
        safety_neurons(SHIFTS, 1, "intersection")


def test_bad_m_and_q_name_their_keys():
    with pytest.raises(ConfigError, match="neurons.top_m"):
        top_m(SHIFTS, 7)
    with pytest.raises(ConfigError, match="neurons.min_fraction"):
        safety_neurons(SHIFTS, 3, "frequency", 0.0)
    with pytest.raises(ConfigError, match="neurons.selection"):
        safety_neurons(SHIFTS, 3, "union")


def test_pair_shifts_match_prompts_by_id():
    plain = np.arange(3 * 2 * 2, dtype=np.float32).reshape(3, 2, 2)  # prompts a, b, c
    intent = np.ones((2, 2, 2), dtype=np.float16) * 10  # -MI versions of c and a (b missing)
    pairs = pair_shifts(["a", "b", "c"], plain, ["c", "a"], intent)
    assert pairs.prompt_ids == ["a", "c"]
    assert pairs.shifts.shape == (2, 4)
    np.testing.assert_allclose(pairs.shifts[0], 10 - plain[0].ravel())
    np.testing.assert_allclose(pairs.shifts[1], 10 - plain[2].ravel())
    assert (pairs.n_layers, pairs.n_neurons) == (2, 2)


def test_pair_shifts_without_common_prompts_is_an_error():
    with pytest.raises(DataError, match="no prompt id is shared"):
        pair_shifts(["a"], np.zeros((1, 1, 2)), ["a-mi"], np.zeros((1, 1, 2)))


def test_random_sets_are_disjoint_same_size_and_seeded():
    reference = flat_index([0, 0, 3], [1, 5, 2], 8)
    sets = random_neuron_sets(4, 8, reference, draws=5, seed=7)
    assert len(sets) == 5
    for chosen in sets:
        assert chosen.size == 3 and len(set(chosen)) == 3
        assert not set(chosen) & set(reference)
        assert chosen.min() >= 0 and chosen.max() < 32
    again = random_neuron_sets(4, 8, reference, draws=5, seed=7)
    assert all(np.array_equal(a, b) for a, b in zip(sets, again))
    other = random_neuron_sets(4, 8, reference, draws=5, seed=8)
    assert any(not np.array_equal(a, b) for a, b in zip(sets, other))
    # Draws differ from each other.
    assert len({tuple(s) for s in sets}) > 1


def test_layer_matched_random_sets_keep_the_layer_counts():
    reference = flat_index([0, 0, 3], [1, 5, 2], 8)
    for chosen in random_neuron_sets(4, 8, reference, draws=4, seed=0, matching="layer"):
        layers, _ = layer_neuron(chosen, 8)
        assert sorted(layers.tolist()) == [0, 0, 3]
        assert not set(chosen) & set(reference)


def test_random_sets_fail_clearly_when_too_few_neurons_remain():
    with pytest.raises(ConfigError, match="cannot draw"):
        random_neuron_sets(1, 4, np.array([0, 1, 2]), draws=1, seed=0)


def test_flat_index_round_trip():
    layers, neurons = layer_neuron(flat_index([2, 0], [3, 7], 8), 8)
    assert layers.tolist() == [2, 0] and neurons.tolist() == [3, 7]


def test_zeroing_conditions_group_each_set_by_layer():
    import pandas as pd

    from rim.neurons import zeroing_conditions

    sets = pd.DataFrame(
        {
            "neuron_set": ["safety", "safety", "random", "random", "random", "random"],
            "draw": pd.array([None, None, 0, 0, 1, 1], dtype="Int64"),
            "layer": [0, 2, 1, 1, 0, 3],
            "neuron": [5, 7, 1, 9, 4, 4],
        }
    )
    chosen = zeroing_conditions(sets, random_draws=1)
    assert {name: condition.zero for name, condition in chosen.items()} == {
        "none": None,
        "safety": {0: [5], 2: [7]},
        "random_0": {1: [1, 9]},
    }
    assert [(c.family, c.size) for c in chosen.values()] == [("none", 0), ("safety_set", 2), ("random", 2)]


def test_safety_ranking_puts_a_safe_first_then_orders_by_mean_shift():
    from rim.neurons import safety_ranking

    # Neurons 1 and 3 are in every pair's top m (A_safe at q = 1); 3 shifts more. Neurons 0 and 2
    # tie on frequency and on shift: the lower index goes first.
    frequency = np.array([0.5, 1.0, 0.5, 1.0, 0.0])
    mean_shift = np.array([0.2, 0.1, 0.2, 0.9, 5.0])
    ranks = safety_ranking(frequency, mean_shift)
    assert ranks.tolist() == [2, 1, 3, 0, 4]
    # On real shifts, the top |A_safe| of the ranking is A_safe.
    shifts = np.array([[0.0, 1.0, 0.0, 2.0, -1.0], [0.5, 1.0, 0.0, 2.0, -1.0], [0.0, 1.0, 0.7, 2.0, -1.0]])
    chosen, frequency = safety_neurons(shifts, m=2)
    ranks = safety_ranking(frequency, shifts.mean(axis=0))
    assert chosen.tolist() == [1, 3]
    assert sorted(np.argsort(ranks)[: chosen.size].tolist()) == [1, 3]


def test_dose_conditions_take_the_top_k_and_random_sets_from_outside_it():
    import pandas as pd

    from rim.neurons import dose_conditions

    # 2 layers x 5 neurons; rank 0 is layer 1 neuron 4, and so on down.
    flat = np.arange(10)
    scores = pd.DataFrame({"layer": flat // 5, "neuron": flat % 5, "rank": 9 - flat})
    chosen = dose_conditions(scores, sizes=[3, 1], draws=2, seed=0)
    assert list(chosen) == ["top_1", "random_1_0", "random_1_1", "top_3", "random_3_0", "random_3_1"]
    assert chosen["top_1"].zero == {1: [4]}
    assert chosen["top_3"].zero == {1: [4, 3, 2]} and chosen["top_3"].family == "safety_top"
    for name in ("random_3_0", "random_3_1"):
        zeroed = {(layer, n) for layer, ns in chosen[name].zero.items() for n in ns}
        assert len(zeroed) == 3 and not zeroed & {(1, 4), (1, 3), (1, 2)}
        assert chosen[name].family == "random" and chosen[name].size == 3
    # Seeded: the same draw again, a different seed another one (over many neurons).
    again = dose_conditions(scores, sizes=[3], draws=2, seed=0)
    assert again["random_3_1"].zero == chosen["random_3_1"].zero
    with pytest.raises(ConfigError, match="neurons.zeroing.sizes.*10 must be between 1 and"):
        dose_conditions(scores, sizes=[10], draws=1, seed=0)


def test_dose_response_pools_random_draws_per_prompt_before_the_bootstrap():
    import pandas as pd

    from rim.neurons import ZeroingCondition, dose_response

    refused = {
        "none": [True, True, True, True],
        "top_2": [False, False, True, True],  # two of four stop refusing: +0.5
        "random_2_0": [False, True, True, True],  # one: +0.25
        "random_2_1": [True, True, True, True],  # none: 0
    }
    rows = [
        {"prompt_set": "harmful", "kind": "harmful", "condition": c, "prompt_id": p, "phrases_refused": flag}
        for c, flags in refused.items()
        for p, flag in zip("abcd", flags)
    ]
    conditions = {
        "none": ZeroingCondition("none", 0, None, None),
        "top_2": ZeroingCondition("safety_top", 2, None, {0: [0, 1]}),
        "random_2_0": ZeroingCondition("random", 2, 0, {0: [2, 3]}),
        "random_2_1": ZeroingCondition("random", 2, 1, {0: [4, 5]}),
    }
    doses = dose_response(pd.DataFrame(rows), conditions, n_boot=200)
    doses = doses[doses["metric"] == "misalignment_rate"].set_index("neuron_family")
    assert doses.loc["safety_top", "value"] == pytest.approx(0.5)
    assert doses.loc["random", "value"] == pytest.approx(0.125)  # per prompt (0.5, 0, 0, 0), mean over prompts
    assert doses.loc["random", "draws"] == 2 and doses.loc["random", "zeroed_neurons"] == 2
    assert doses.loc["random", "n"] == 4  # the interval is over prompts, not over prompts x draws
    assert (doses["statistic"] == "dose_change").all()


def test_paired_changes_are_per_prompt_differences_from_no_intervention():
    import pandas as pd

    from rim.neurons import paired_changes

    # Three harmful prompts: refused plainly, two stop refusing with the safety neurons zeroed.
    rows = []
    for condition, refused in (
        ("none", [True, True, False]),
        ("safety", [False, False, False]),
        ("random_0", [True, True, False]),
    ):
        for pid, flag in zip(("a", "b", "c"), refused):
            rows.append(
                {
                    "prompt_set": "harmful",
                    "kind": "harmful",
                    "condition": condition,
                    "prompt_id": pid,
                    "phrases_refused": flag,
                }
            )
    changes = paired_changes(pd.DataFrame(rows), n_boot=200).set_index(["condition", "metric"])
    assert changes.loc[("safety", "misalignment_rate"), "value"] == pytest.approx(2 / 3)
    assert changes.loc[("safety", "refusal_rate"), "value"] == pytest.approx(-2 / 3)
    assert changes.loc[("random_0", "misalignment_rate"), "value"] == 0
    assert changes.loc[("random_0", "misalignment_rate"), "n"] == 3


def test_neurons_without_a_shift_are_never_selected():
    # NaN: a mixture-of-experts neuron no token of the pair reached. With m = 3 and only two
    # finite shifts in the first pair, that pair selects two neurons, not a NaN one.
    shifts = np.array([[np.nan, 0.5, np.nan, 0.1], [0.3, 0.2, np.nan, 0.9]])
    selected = top_m(shifts, 3)
    assert selected.tolist() == [[False, True, False, True], [True, True, False, True]]


def test_expert_channel_splits_a_flat_moe_neuron_index():
    from rim.neurons import expert_channel

    expert, channel = expert_channel(np.array([0, 31, 32, 127]), n_experts=4, n_neurons=128)
    assert expert.tolist() == [0, 0, 1, 3] and channel.tolist() == [0, 31, 0, 31]
